package machine

// Fault points: named steps of every operation where crash tests kill the
// daemon (or the machine's sandbox) to prove that recovery leaves every
// machine in a state a user can act on and never restores a snapshot twice.
// Only a test build (go build -tags faults) can arm them: there, SetFault
// installs a function called at each point with the point's name and the
// machine's ID. In a release build a point compiles to nothing
// (faults_off.go) and SetFault panics.
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
	{"suspend/after-checkpoint", "suspend", "image written, sandbox being killed (the seal overlaps the kill), no seal yet"},
	{"suspend/after-seal", "suspend", "seal written and synced, record still says writing"},
	{"suspend/after-commit-suspended", "suspend", "state suspended and sealed record committed"},
	{"suspend/failed-before-commit", "suspend", "a failed suspend undid its work, state not yet started"},

	{"resume/after-prepare", "resume", "network, console, bundle ready, runtime checked (runtime.Preparer); snapshot not yet claimed; no sandbox"},
	{"resume/after-commit-claim", "resume", "snapshot record claimed, state starting; image not yet renamed"},
	{"resume/after-claim", "resume", "image directory renamed to .claimed; seal not yet verified"},
	{"resume/after-restore", "resume", "runtime restore returned: sandbox running, app frozen; image files maybe not yet verified"},
	{"resume/after-verify", "resume", "image files' checksums verified; sandbox running, app frozen; image being deleted"},
	{"resume/after-clock", "resume", "generation file written (and the clock checked, with Config.ClockGate); app still frozen"},
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

// FailPoints are store writes a test build can make fail (as a full disk
// makes bbolt's commit fail), to prove that an operation whose last write
// is refused leaves the machine in a state a user can act on without a
// daemon restart. They are not crash points: the daemon goes on.
var FailPoints = []FaultPoint{
	{"store/commit-suspended", "suspend", "the write that records a suspend complete (state suspended, sealed snapshot record)"},
	{"store/claim", "resume", "the write that claims a snapshot for a resume (state starting, record claimed)"},
}

// IsFailPoint reports whether name is one of FailPoints.
func IsFailPoint(name string) bool {
	for _, p := range FailPoints {
		if p.Name == name {
			return true
		}
	}
	return false
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

// SandboxID is the runtime's name for the sandbox of machine id (crash
// tests kill it).
func SandboxID(machineID string) string { return sandboxID(machineID) }
