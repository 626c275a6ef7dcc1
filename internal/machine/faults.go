package machine

// Fault points: named steps of every operation where crash tests kill the
// daemon (or the machine's sandbox) to prove that recovery leaves every
// machine in a state a user can act on and never restores a snapshot twice.
// Config.Fault is called at each of them with the point's name and the
// machine's ID; it is nil in production, so a point costs one nil check.
//
// Names are "operation/step". Points shared by several operations (a cold
// start runs in create, start, update, restart and resume fallbacks; discard
// runs in stop and update of a suspended machine) are named after the shared
// step.

// FaultPoint is one named step where a crash can be injected.
type FaultPoint struct {
	Name string
	// Op is the user operation that reaches it first: "suspend", "resume",
	// "start" (cold start), "stop", "discard" (stop/update of a suspended
	// machine), "update" or "destroy".
	Op string
	// What the daemon has done when the point is reached.
	Doc string
}

// FaultPoints lists every fault point, in the order an operation reaches them.
var FaultPoints = []FaultPoint{
	{"suspend/after-commit-suspending", "suspend", "state suspending and a writing snapshot record committed"},
	{"suspend/after-pre-suspend", "suspend", "pre_suspend hook (if any) ran"},
	{"suspend/after-mkdir", "suspend", "empty image directory created"},
	{"suspend/after-freeze", "suspend", "every process of the sandbox got SIGSTOP"},
	{"suspend/before-checkpoint", "suspend", "supervision of the sandbox ended, checkpoint about to run"},
	{"suspend/after-checkpoint", "suspend", "image written, sandbox stopped and deleted, no seal yet"},
	{"suspend/after-seal", "suspend", "seal written and synced, record still says writing"},
	{"suspend/after-commit-suspended", "suspend", "state suspended and sealed record committed"},
	{"suspend/failed-before-commit", "suspend", "a failed suspend undid its work, state not yet started"},

	{"resume/after-commit-claim", "resume", "snapshot record claimed, state starting; image not yet renamed"},
	{"resume/after-claim", "resume", "image directory renamed to .claimed; seal not yet verified"},
	{"resume/after-prepare", "resume", "seal verified; network, console, bundle ready; no sandbox"},
	{"resume/after-restore", "resume", "runtime restore returned: sandbox running, app frozen; image files maybe not yet verified"},
	{"resume/after-verify", "resume", "image files' checksums verified; sandbox running, app frozen; image being deleted"},
	{"resume/after-clock", "resume", "generation file written, clock checked; app still frozen"},
	{"resume/after-thaw", "resume", "app got SIGCONT"},
	{"resume/after-commit-started", "resume", "state started committed"},

	{"start/after-commit-starting", "start", "state starting, new boot generation committed"},
	{"start/after-discard", "start", "older snapshot images deleted"},
	{"start/after-prepare", "start", "network, console, bundle ready; no sandbox"},
	{"start/after-boot", "start", "sandbox booted"},
	{"start/after-commit-started", "start", "state started committed"},

	{"stop/after-commit-stopping", "stop", "state stopping committed"},
	{"stop/after-signal", "stop", "stop signal sent, exit waited for"},
	{"stop/after-kill", "stop", "sandbox killed and deleted"},
	{"stop/after-commit-stopped", "stop", "state stopped committed"},

	{"discard/after-commit", "discard", "snapshot record deleted, state moved on; image still on disk"},
	{"discard/after-remove", "discard", "snapshot images deleted"},

	{"update/after-stop", "update", "machine stopped (or snapshot discarded), old config"},
	{"update/after-commit-config", "update", "new config committed, cold start about to run"},

	{"destroy/after-commit-destroying", "destroy", "state destroying committed, snapshot record deleted"},
	{"destroy/after-kill", "destroy", "sandbox killed and deleted"},
	{"destroy/after-remove", "destroy", "machine directory deleted"},
	{"destroy/after-commit-destroyed", "destroy", "state destroyed committed"},
}

// IsFaultPoint reports whether name is one of FaultPoints.
func IsFaultPoint(name string) bool {
	for _, p := range FaultPoints {
		if p.Name == name {
			return true
		}
	}
	return false
}

// fault marks a point where crash tests may kill the daemon or the sandbox
// of machine id.
func (m *Manager) fault(point, id string) {
	if m.cfg.Fault != nil {
		m.cfg.Fault(point, id)
	}
}

// SandboxID is the runtime's name for the sandbox of machine id (crash
// tests kill it).
func SandboxID(machineID string) string { return sandboxID(machineID) }
