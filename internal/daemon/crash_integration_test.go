package daemon_test

import (
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/machine"
	"github.com/torpor-dev/torpor/internal/model"
)

// Crash tests on the real runtime: the daemon is killed with SIGKILL (it
// sends it to itself at a fault point, TORPOR_FAULT=POINT:kill) or the
// machine's runsc sandbox is, then a new daemon must leave every machine at
// rest, with no leaked snapshot directory or runsc container, and the
// machine's counter app proves that no snapshot was restored twice (its
// counter never goes back, except to 1 on a cold start).

// crashPoints are the fault points the real-runtime matrix kills the daemon
// at: all but the one that needs a failing suspend.
func crashPoints() []machine.FaultPoint {
	var out []machine.FaultPoint
	for _, p := range machine.FaultPoints {
		if p.Name != "suspend/failed-before-commit" {
			out = append(out, p)
		}
	}
	return out
}

// crashRig drives one machine through crash trials on one daemon. The
// machine's app is published by the proxy on port, so that the checks can
// ask it through the proxy as well as directly.
type crashRig struct {
	t    *testing.T
	d    *daemon
	id   string // current machine; "" when it was destroyed
	port int
}

func newCrashRig(t *testing.T) *crashRig {
	return &crashRig{t: t, d: newDaemon(t), port: freePort(t)}
}

// config is the rig's machine config, with env on top of the counter app's.
func (r *crashRig) config(env map[string]string) model.MachineConfig {
	cfg := serviceConfig(r.port, []string{"http"}, model.AutostopOff, 0)
	for k, v := range env {
		cfg.Env[k] = v
	}
	return cfg
}

// prepare brings the rig's machine into the state the point's operation
// starts from.
func (r *crashRig) prepare(op string) {
	r.t.Helper()
	d := r.d
	if r.id == "" || d.get(r.id).State == model.StateDestroyed {
		r.id = d.create(r.config(nil)).ID
		d.waitCount(r.id, 2)
	}
	want := model.StateStarted
	switch op {
	case "resume", "discard":
		want = model.StateSuspended
	case "start":
		want = model.StateStopped
	}
	for i := 0; i < 3; i++ {
		st := d.get(r.id).State
		switch {
		case st == want:
			return
		case st == model.StateStarted && want == model.StateStopped:
			if err := d.c.Stop(ctx(r.t), d.app, r.id, model.StopRequest{}); err != nil {
				r.t.Fatal(err)
			}
		case st == model.StateStarted:
			d.waitCount(r.id, d.lastCount(r.id)+1)
			d.suspend(r.id)
		case st == model.StateSuspended && want == model.StateStopped:
			if err := d.c.Stop(ctx(r.t), d.app, r.id, model.StopRequest{}); err != nil {
				r.t.Fatal(err)
			}
		default:
			d.start(r.id)
			d.waitCount(r.id, 1)
		}
	}
	r.t.Fatalf("could not bring machine %s to %s; it is %s", r.id, want, d.get(r.id).State)
}

// operate runs the point's operation; its error is returned, not judged.
func (r *crashRig) operate(op string) error {
	d, c := r.d, ctx(r.t)
	switch op {
	case "suspend":
		return d.c.Suspend(c, d.app, r.id)
	case "resume", "start":
		_, err := d.c.Start(c, d.app, r.id)
		return err
	case "stop", "discard":
		return d.c.Stop(c, d.app, r.id, model.StopRequest{})
	case "update":
		_, err := d.c.UpdateMachine(c, d.app, r.id, model.UpdateMachineRequest{
			Config: r.config(map[string]string{"VERSION": strconv.Itoa(rand.Intn(1000))})})
		return err
	case "destroy":
		return d.c.Destroy(c, d.app, r.id, true)
	}
	r.t.Fatalf("unknown operation %s", op)
	return nil
}

// killDaemonAt restarts the daemon armed to SIGKILL itself at point, runs
// the point's operation, checks that the daemon died there, and starts a
// daemon again.
func (r *crashRig) killDaemonAt(p machine.FaultPoint) {
	r.t.Helper()
	d := r.d
	r.prepare(p.Op)
	d.stop()
	d.run("TORPOR_FAULT=" + p.Name + ":kill")
	err := r.operate(p.Op)
	select {
	case <-d.exited:
	case <-time.After(60 * time.Second):
		r.t.Fatalf("%s: the daemon did not die at the fault point (operation: %v)\n%s", p.Name, err, d.log())
	}
	if ws, ok := d.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		r.t.Fatalf("%s: daemon ended with %v, want SIGKILL", p.Name, d.cmd.ProcessState)
	}
	d.run()
}

// killSandboxAt restarts the daemon armed to SIGKILL the machine's sandbox
// at point (after delay, if any), runs the operation and waits for rest.
func (r *crashRig) killSandboxAt(p machine.FaultPoint, delay time.Duration) error {
	r.t.Helper()
	d := r.d
	r.prepare(p.Op)
	d.stop()
	rule := p.Name + ":kill-sandbox"
	if delay > 0 {
		rule += "+" + delay.String()
	}
	d.run("TORPOR_FAULT=" + rule)
	err := r.operate(p.Op)
	d.waitKilledSandboxGone()
	r.waitRest()
	return err
}

// killedPID finds the pid in a "fault: killed the sandbox" log line.
var killedPID = regexp.MustCompile(`msg="fault: killed the sandbox".* pid=(\d+)`)

// waitKilledSandboxGone waits, if the running daemon's fault fired, until
// it has killed the sandbox (a delayed kill comes after the operation
// returned) and the process has exited: SIGKILL takes a moment to bring
// down a multi-threaded process, and until then the machine looks at rest
// with a running sandbox although its supervisor is about to see it die.
func (d *daemon) waitKilledSandboxGone() {
	d.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var pid int
	for pid == 0 {
		log := d.log()
		log = log[max(0, strings.LastIndex(log, "torpor daemon ready")):]
		if !strings.Contains(log, "action=kill-sandbox") {
			return // the point was not reached
		}
		if m := killedPID.FindAllStringSubmatch(log, -1); len(m) > 0 {
			pid, _ = strconv.Atoi(m[len(m)-1][1])
			break
		}
		if time.Now().After(deadline) {
			d.t.Fatal("the fault reached its point but never killed the sandbox")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for processAlive(pid) {
		if time.Now().After(deadline) {
			d.t.Fatalf("killed sandbox process %d still alive after 30s", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// processAlive reports whether pid runs (not gone, not a zombie).
func processAlive(pid int) bool {
	f := procStat(pid)
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// waitRest waits until the machine is at rest and its sandbox agrees: a
// killed sandbox under a started machine is noticed by its supervisor.
func (r *crashRig) waitRest() {
	r.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		why := r.unrested()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("machine never came to rest: %s\n%s", why, r.d.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *crashRig) unrested() string {
	m := r.d.get(r.id)
	if !m.State.Settled() {
		return "machine is " + string(m.State)
	}
	running := r.d.sandboxRunning(r.id)
	if (m.State == model.StateStarted) != running {
		return fmt.Sprintf("machine is %s, sandbox running=%v", m.State, running)
	}
	// The supervisor deletes an exited sandbox right after recording the
	// exit. A suspended machine may have a warm sandbox: created ahead of
	// its resume, never running (the daemon's default
	// --warm-sandboxes-memory).
	if m.State != model.StateStarted && slices.Contains(r.d.containers(), "torpor-"+r.id) && !r.warmAllowed(m) {
		return fmt.Sprintf("machine is %s, its runsc container is still there (%s)", m.State, r.d.sandboxState(r.id))
	}
	return ""
}

// warmAllowed reports whether the machine's runsc container, if it has
// one, is allowed as a warm sandbox: the machine is suspended and the
// container was created ahead, not restored (runsc's "created").
func (r *crashRig) warmAllowed(m model.Machine) bool {
	return m.State == model.StateSuspended && r.d.sandboxState(r.id) == "created"
}

// sandboxRunning reports whether runsc runs the machine's sandbox and its
// process is alive (runsc says running for a killed, not yet reaped one).
func (d *daemon) sandboxRunning(id string) bool {
	out, _ := exec.Command(runscPath, "--root", filepath.Join(d.dataDir, "runsc"), "state", "torpor-"+id).Output()
	pid := statePID(out)
	if !strings.Contains(string(out), `"status": "running"`) || pid <= 0 {
		return false
	}
	return processAlive(pid)
}

// statePID reads the sandbox pid from the output of runsc state.
func statePID(out []byte) int {
	pid := 0
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), `"pid": `); ok {
			pid, _ = strconv.Atoi(strings.TrimSuffix(v, ","))
		}
	}
	return pid
}

// containers lists the runsc containers of the daemon, whatever their status.
func (d *daemon) containers() []string {
	out, _ := exec.Command(runscPath, "--root", filepath.Join(d.dataDir, "runsc"), "list", "-quiet").Output()
	return strings.Fields(string(out))
}

// check asserts the invariants after a crash: at rest, snapshot dirs only
// for a suspended machine (exactly one), a runsc container only for a
// started one (or a warm one, created and never run, for a suspended one), which answers its app directly and through the proxy, and
// the counter never went back.
func (r *crashRig) check(label string) {
	r.t.Helper()
	r.waitRest()
	d := r.d
	m := d.get(r.id)
	dirs := d.snapshotDirs(r.id)
	switch {
	case m.State == model.StateSuspended && len(dirs) != 1:
		r.t.Fatalf("%s: suspended machine has snapshot dirs %v, want exactly one", label, dirs)
	case m.State != model.StateSuspended && len(dirs) != 0:
		r.t.Fatalf("%s: %s machine has snapshot dirs %v", label, m.State, dirs)
	}
	cs := d.containers()
	has := slices.Contains(cs, "torpor-"+r.id)
	if (has != (m.State == model.StateStarted) && !(has && r.warmAllowed(m))) || len(cs) > 1 {
		r.t.Fatalf("%s: %s machine, runsc containers %v (%s)", label, m.State, cs, d.sandboxState(r.id))
	}
	if m.State == model.StateStarted {
		d.answers(r.id, r.port, label)
	}
	if m.State == model.StateDestroyed {
		if _, err := os.Stat(filepath.Join(d.dataDir, "machines", r.id)); !errors.Is(err, os.ErrNotExist) {
			r.t.Fatalf("%s: destroyed machine's directory remains (%v)", label, err)
		}
		return
	}
	neverBack(r.t, label, d.counts(r.id), m.BootGeneration)
}

// neverBack checks a machine's counter over its life: each line is the
// previous one plus one, or a jump forward (lines the app printed while no
// daemon drained its console may be lost when a daemon dies), or 1 after a
// cold start, at most once per boot generation after the first. Going back
// to anything but 1 would be a snapshot restored twice or an older one.
func neverBack(t *testing.T, label string, counts []int, gen uint64) {
	t.Helper()
	resets := 0
	for i := 1; i < len(counts); i++ {
		switch c, prev := counts[i], counts[i-1]; {
		case c > prev:
		case c == 1:
			resets++
		default:
			t.Fatalf("%s: counter went back from %d to %d (line %d): %v", label, prev, c, i, counts)
		}
	}
	if uint64(resets) > gen-1 {
		t.Fatalf("%s: counter restarted %d times in boot generation %d: %v", label, resets, gen, counts)
	}
}

// followUp proves the machine is actionable: a suspended machine resumes
// from its snapshot and counts on, a stopped one starts, and then (check)
// answers its app; a started one answered in the check before.
func (r *crashRig) followUp(label string) {
	r.t.Helper()
	d := r.d
	switch st := d.get(r.id).State; st {
	case model.StateSuspended:
		last := d.lastCount(r.id)
		if resp := d.start(r.id); !resp.FromSnapshot {
			r.t.Fatalf("%s: a suspended machine did not resume from its snapshot", label)
		}
		d.waitCount(r.id, last+2) // it counts on from where it was
	case model.StateStopped, model.StateCreated:
		d.start(r.id)
		d.waitCount(r.id, 1)
	case model.StateDestroyed:
		r.id = ""
		return
	}
	r.check(label + " then follow-up")
}

func TestCrashMatrixKillDaemon(t *testing.T) {
	r := newCrashRig(t)
	for _, p := range crashPoints() {
		r.killDaemonAt(p)
		r.check(p.Name)
		st := r.d.get(r.id).State
		r.followUp(p.Name)
		t.Logf("crash-matrix: %s kill-daemon runs 1 ok (then %s)", p.Name, st)
	}
}

// TestDaemonKilledMidCheckpoint kills the daemon while runsc checkpoint
// runs: the runsc process outlives the daemon and may finish the image while
// the new daemon recovers. Whatever wins, the machine must come to rest
// with no half image and no double restore.
func TestDaemonKilledMidCheckpoint(t *testing.T) {
	r := newCrashRig(t)
	for _, delay := range []time.Duration{10 * time.Millisecond, 40 * time.Millisecond, 120 * time.Millisecond} {
		label := "kill -9 daemon " + delay.String() + " into the checkpoint"
		r.prepare("suspend")
		d := r.d
		d.stop()
		d.run("TORPOR_FAULT=suspend/before-checkpoint:kill+" + delay.String())
		err := r.operate("suspend")
		select {
		case <-d.exited:
		case <-time.After(60 * time.Second):
			t.Fatalf("%s: the daemon did not die (suspend: %v)", label, err)
		}
		d.run()
		r.check(label)
		st := d.get(r.id).State
		r.followUp(label)
		t.Logf("crash-matrix: suspend/before-checkpoint kill-daemon+%s runs 1 ok (then %s)", delay, st)
	}
}

func TestSandboxKilled(t *testing.T) {
	r := newCrashRig(t)
	byName := map[string]machine.FaultPoint{}
	for _, p := range machine.FaultPoints {
		byName[p.Name] = p
	}

	// Killed just before the checkpoint: the checkpoint fails, the machine is
	// cold-started and the suspend's event says why.
	gen := func() uint64 { return r.d.get(r.id).BootGeneration }
	r.prepare("suspend")
	before := gen()
	err := r.killSandboxAt(byName["suspend/before-checkpoint"], 0)
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 500 {
		t.Fatalf("suspend of a killed sandbox = %v, want a 500", err)
	}
	r.wantEvent("suspend", "failed", "checkpoint")
	if st := r.d.get(r.id).State; st != model.StateStarted || gen() != before+1 {
		t.Fatalf("after a failed checkpoint the machine is %s in generation %d, want started by a cold start", st, gen())
	}
	r.check("kill-sandbox before checkpoint")
	t.Logf("crash-matrix: suspend/before-checkpoint kill-sandbox runs 1 ok (cold start, event)")

	// Killed right after the restore: the resume went through, then the
	// supervisor sees the exit and stops the machine with an exit event.
	r.prepare("resume")
	if err := r.killSandboxAt(byName["resume/after-restore"], 0); err != nil {
		t.Logf("start with the sandbox killed after restore: %v", err)
	}
	if st := r.d.get(r.id).State; st != model.StateStopped {
		t.Fatalf("machine whose sandbox died after restore is %s, want stopped", st)
	}
	r.wantEvent("exit", "stopped", "")
	r.check("kill-sandbox after restore")
	r.followUp("kill-sandbox after restore")
	t.Logf("crash-matrix: resume/after-restore kill-sandbox runs 1 ok (stopped, exit event)")

	// Killed while started, from outside.
	r.prepare("stop")
	r.d.killSandbox(r.id)
	st, err := r.d.c.Wait(ctx(t), r.d.app, r.id, []model.State{model.StateStopped}, 60*time.Second)
	if err != nil || st != model.StateStopped {
		t.Fatalf("machine whose sandbox was killed is %s, want stopped", st)
	}
	r.wantEvent("exit", "stopped", "")
	r.check("kill-sandbox while started")
	t.Logf("crash-matrix: (while started) kill-sandbox runs 1 ok (stopped, exit event)")
}

// lastCount is the last counter value the machine printed (0 if none).
func (d *daemon) lastCount(id string) int {
	c := d.counts(id)
	if len(c) == 0 {
		return 0
	}
	return c[len(c)-1]
}

// killSandbox SIGKILLs the machine's runsc sandbox process.
func (d *daemon) killSandbox(id string) {
	d.t.Helper()
	out, err := exec.Command(runscPath, "--root", filepath.Join(d.dataDir, "runsc"), "state", "torpor-"+id).Output()
	if err != nil {
		d.t.Fatal(err)
	}
	pid := statePID(out)
	if pid <= 0 {
		d.t.Fatalf("no sandbox pid in %s", out)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		d.t.Fatal(err)
	}
}

// wantEvent checks that the newest event of type typ has status and,
// whatever its details, mentions text.
func (r *crashRig) wantEvent(typ, status, text string) {
	r.t.Helper()
	ev := r.d.event(r.id, typ)
	if ev.Status != status || !strings.Contains(fmt.Sprint(ev.Request), text) {
		r.t.Fatalf("%s event = %+v, want status %s mentioning %q", typ, ev, status, text)
	}
}

// TestRandomCrashesRealRuntime kills the daemon or the sandbox at random
// fault points for a while (TORPOR_CRASH_DURATION, default 2m) or a number
// of runs (TORPOR_CRASH_RUNS), checking the invariants after each.
func TestRandomCrashesRealRuntime(t *testing.T) {
	budget := 2 * time.Minute
	if v := os.Getenv("TORPOR_CRASH_DURATION"); v != "" {
		var err error
		if budget, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	runs := -1
	if v := os.Getenv("TORPOR_CRASH_RUNS"); v != "" {
		runs, _ = strconv.Atoi(v)
	}
	seed := time.Now().UnixNano()
	if v := os.Getenv("TORPOR_CRASH_SEED"); v != "" {
		seed, _ = strconv.ParseInt(v, 10, 64)
	}
	t.Logf("seed %d (TORPOR_CRASH_SEED replays it)", seed)
	rng := rand.New(rand.NewSource(seed))
	r := newCrashRig(t)
	points := crashPoints()
	done := map[string]int{}
	end := time.Now().Add(budget)
	for i := 0; runs < 0 && time.Now().Before(end) || i < runs; i++ {
		p := points[rng.Intn(len(points))]
		action := "kill-daemon"
		if rng.Intn(4) == 0 {
			action = "kill-sandbox"
		}
		label := fmt.Sprintf("run %d: %s %s", i, action, p.Name)
		if action == "kill-daemon" {
			r.killDaemonAt(p)
		} else {
			err := r.killSandboxAt(p, time.Duration(rng.Intn(3))*25*time.Millisecond)
			t.Logf("%s: operation returned %v", label, err)
		}
		r.check(label)
		r.followUp(label)
		done[p.Name+" "+action]++
	}
	keys := make([]string, 0, len(done))
	for k := range done {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		t.Logf("crash-random: %s runs %d ok", k, done[k])
	}
}
