//go:build faults

package machine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/runtime"
	"github.com/torpor-dev/torpor/internal/runtime/fake"
	"github.com/torpor-dev/torpor/internal/store"
)

// TestRandomCrashes runs random operation sequences on a few machines and
// crashes at a random fault point: either the daemon dies there (kill -9:
// the manager and all its goroutines stop acting, its store is closed) and
// a new manager recovers, or the machine's sandbox is killed there and the
// running manager copes. Every run then checks the invariants: no machine
// in a transitional state, a started machine has a running sandbox and
// no other one has any, only a suspended machine has a snapshot (exactly
// its sealed one on disk), no image was ever restored twice, and every
// machine takes a follow-up start/suspend/stop/destroy.
//
// TORPOR_CRASH_RUNS sets the number of runs (default 500), TORPOR_CRASH_SEED
// the first seed (default 1; run i uses seed+i). A failure names its seed:
// TORPOR_CRASH_SEED=<seed> TORPOR_CRASH_RUNS=1 replays it.
func TestRandomCrashes(t *testing.T) {
	runs := envInt(t, "TORPOR_CRASH_RUNS", 500)
	base := envInt(t, "TORPOR_CRASH_SEED", 1)
	stats := newCrashStats()
	restored := map[string]int{} // snapshot ID → restores, across all runs
	for i := 0; i < runs; i++ {
		seed := int64(base + i)
		ok := t.Run("seed="+strconv.FormatInt(seed, 10), func(t *testing.T) {
			w := newCrashWorld(t, seed)
			w.run()
			for id, n := range w.rt.RestoreCounts() {
				restored[id] += n
				if restored[id] > 1 {
					t.Fatalf("seed %d: snapshot %s restored %d times", seed, id, restored[id])
				}
			}
			stats.add(w)
		})
		if !ok {
			break
		}
	}
	stats.log(t, len(restored))
	if runs >= 300 && !t.Failed() {
		stats.checkCoverage(t)
	}
}

// fastTempDir is a temporary directory on tmpfs when the host has
// /dev/shm: every store commit is fsynced, which costs milliseconds on a
// disk and makes hundreds of runs slow.
func fastTempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("/dev/shm", "torpor-crash-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func envInt(t *testing.T, key string, def int) int {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", key, v, err)
	}
	return n
}

// Crash actions of a run.
const (
	actKillDaemon  = "kill-daemon"
	actKillSandbox = "kill-sandbox"
)

// crashWorld is what survives a daemon's death: the disk (store file, data
// directory) and the runtime with its sandboxes.
type crashWorld struct {
	t     *testing.T
	seed  int64
	rng   *rand.Rand
	dir   string
	rt    *fake.Runtime
	image string
	proc  *daemonProc
	ids   []string
	trace []string // what the run did, for failure messages

	// The armed fault: fires at the nth hit of point, once.
	point  string
	op     string // the armed point's operation, which ops favour
	action string
	nth    int
	mu     sync.Mutex
	hits   int
	fired  bool
	// disarmed is set once the random operations are over.
	disarmed bool
	// illegal counts the state transitions the lifecycle refused: a bug,
	// whatever the crash.
	illegal atomic.Int32
	// illegalSeen describes them.
	illegalSeen []string
}

// daemonProc is one daemon process: a manager, its store and its runtime
// connection. Once dead, nothing of it acts again.
type daemonProc struct {
	m    *Manager
	st   *store.Store
	dead atomic.Bool
}

// die is the kill -9: from now on every runtime call of this process ends
// its goroutine, and its store is closed (later transactions fail).
func (p *daemonProc) die() {
	p.dead.Store(true)
	p.st.Close()
}

// gatedRuntime is a daemon process's view of the runtime: once the process
// is dead, any of its goroutines that calls the runtime, or comes back from
// a call (a Wait that outlived the process), ends there.
type gatedRuntime struct {
	runtime.Runtime
	p *daemonProc
}

func (g gatedRuntime) gate() {
	if g.p.dead.Load() {
		goruntime.Goexit()
	}
}

func (g gatedRuntime) Boot(ctx context.Context, spec runtime.Spec) error {
	g.gate()
	defer g.gate()
	return g.Runtime.Boot(ctx, spec)
}

func (g gatedRuntime) Checkpoint(ctx context.Context, id, dir string) error {
	g.gate()
	defer g.gate()
	return g.Runtime.Checkpoint(ctx, id, dir)
}

func (g gatedRuntime) Restore(ctx context.Context, spec runtime.Spec, dir string) error {
	g.gate()
	defer g.gate()
	return g.Runtime.Restore(ctx, spec, dir)
}

func (g gatedRuntime) Signal(ctx context.Context, id, sig string) error {
	g.gate()
	defer g.gate()
	return g.Runtime.Signal(ctx, id, sig)
}

func (g gatedRuntime) SignalAll(ctx context.Context, id, sig string) error {
	g.gate()
	defer g.gate()
	return g.Runtime.SignalAll(ctx, id, sig)
}

func (g gatedRuntime) Kill(ctx context.Context, id string) error {
	g.gate()
	defer g.gate()
	return g.Runtime.Kill(ctx, id)
}

func (g gatedRuntime) Wait(ctx context.Context, id string) (runtime.ExitStatus, error) {
	g.gate()
	defer g.gate()
	return g.Runtime.Wait(ctx, id)
}

func (g gatedRuntime) State(ctx context.Context, id string) (runtime.Status, error) {
	g.gate()
	defer g.gate()
	return g.Runtime.State(ctx, id)
}

func (g gatedRuntime) Exec(ctx context.Context, id string, args []string, env ...string) ([]byte, error) {
	g.gate()
	defer g.gate()
	return g.Runtime.Exec(ctx, id, args, env...)
}

func newCrashWorld(t *testing.T, seed int64) *crashWorld {
	dir := fastTempDir(t)
	w := &crashWorld{t: t, seed: seed, rng: rand.New(rand.NewSource(seed)), dir: dir,
		rt: fake.New("v1"), image: filepath.Join(dir, "rootfs")}
	if err := os.Mkdir(w.image, 0o755); err != nil {
		t.Fatal(err)
	}
	p := FaultPoints[int(seed)%len(FaultPoints)] // every point in turn
	w.point, w.op, w.nth, w.action = p.Name, p.Op, 1+w.rng.Intn(2), actKillDaemon
	if w.rng.Intn(10) < 3 {
		w.action = actKillSandbox
	}
	w.tracef("armed %s at hit %d of %s", w.action, w.nth, w.point)
	return w
}

func (w *crashWorld) tracef(format string, args ...any) {
	w.trace = append(w.trace, fmt.Sprintf(format, args...))
}

func (w *crashWorld) fatalf(format string, args ...any) {
	w.t.Helper()
	w.t.Fatalf("seed %d: %s\nrun:\n  %s", w.seed, fmt.Sprintf(format, args...), strings.Join(w.trace, "\n  "))
}

// boot starts a daemon process on the world's disk and runtime and
// recovers; only the first process has the fault armed.
func (w *crashWorld) boot(armed bool) {
	st, err := store.Open(filepath.Join(w.dir, "torpor.db"))
	if err != nil {
		w.fatalf("open store: %v", err)
	}
	p := &daemonProc{st: st}
	cfg := Config{DataDir: filepath.Join(w.dir, "data"), RunDir: filepath.Join(w.dir, "run"),
		StopTimeout: 20 * time.Millisecond, Logger: slog.New(illegalTransitions{w})}
	if p.m, err = New(cfg, st, gatedRuntime{w.rt, p}); err != nil {
		w.fatalf("new manager: %v", err)
	}
	if fn := w.faultFunc(p, armed); fn != nil {
		p.m.SetFault(fn)
	}
	w.proc = p
	w.do("recover", func() error { return p.m.Recover(context.Background()) })
}

func (w *crashWorld) faultFunc(p *daemonProc, armed bool) func(point, id string) {
	return func(point, id string) {
		w.mu.Lock()
		fire := false
		if armed && !w.fired && !w.disarmed && point == w.point {
			w.hits++
			fire = w.hits == w.nth
			w.fired = fire
		}
		w.mu.Unlock()
		if !fire {
			return
		}
		if w.action == actKillSandbox {
			w.rt.Crash(sandboxID(id))
			return
		}
		p.die()
		goruntime.Goexit()
	}
}

// do runs one call of the daemon in its own goroutine, as a request would,
// and waits for it to return or its goroutine to end with the daemon.
func (w *crashWorld) do(what string, f func() error) {
	done := make(chan error, 1)
	go func() {
		err := errors.New("the daemon died")
		defer func() { done <- err }()
		err = f()
	}()
	err := <-done
	if err != nil {
		what += ": " + err.Error()
	}
	w.tracef("%s", what)
}

// run is one randomized run: machines, operations, the crash, recovery,
// checks and follow-up operations.
func (w *crashWorld) run() {
	w.boot(true)
	ctx := context.Background()
	if _, err := w.proc.m.CreateApp(ctx, model.App{Name: "app"}); err != nil {
		w.fatalf("create app: %v", err)
	}
	for n := 1 + w.rng.Intn(3); n > 0; n-- {
		w.createMachine(ctx)
	}
	for steps := 4 + w.rng.Intn(8); steps > 0 && !w.proc.dead.Load(); steps-- {
		w.randomOp(ctx)
	}
	w.mu.Lock()
	w.disarmed = true // the follow-up must not crash
	w.mu.Unlock()
	if w.proc.dead.Load() || w.rng.Intn(2) == 0 {
		// A dead daemon is replaced; a live one is restarted gracefully
		// half the time, to check recovery of whatever state it left.
		// A graceful stop is Close, then the process exits: whatever
		// Close left running (e.g. a restart policy's cold start) dies.
		w.proc.m.Close()
		if !w.proc.dead.Load() {
			w.proc.die()
		}
		w.tracef("restart (dead=%v)", w.proc.dead.Load())
		w.boot(false)
	}
	w.settle()
	w.check()
	w.followUp(ctx)
	w.proc.m.Close()
	w.proc.st.Close()
}

func (w *crashWorld) config() model.MachineConfig {
	cfg := model.MachineConfig{Image: w.image, Init: model.InitConfig{Exec: []string{"/app"}}}
	if w.rng.Intn(4) == 0 {
		cfg.Restart = &model.RestartPolicy{Policy: "always"}
	}
	return cfg
}

func (w *crashWorld) createMachine(ctx context.Context) {
	skip := w.rng.Intn(5) == 0
	w.do(fmt.Sprintf("create skip_launch=%v", skip), func() error {
		mc, err := w.proc.m.Create(ctx, "app", model.CreateMachineRequest{Config: w.config(), SkipLaunch: skip})
		if mc.ID != "" {
			w.ids = append(w.ids, mc.ID)
		}
		return err
	})
}

func (w *crashWorld) randomOp(ctx context.Context) {
	if len(w.ids) == 0 {
		w.createMachine(ctx)
		return
	}
	if w.rng.Intn(2) == 0 && w.targetedOp(ctx) {
		return
	}
	m := w.proc.m
	id := w.ids[w.rng.Intn(len(w.ids))]
	switch op := w.rng.Intn(100); {
	case op < 5:
		w.createMachine(ctx)
	case op < 30:
		w.do("start "+id, func() error { _, err := m.Start(ctx, "app", id); return err })
	case op < 55:
		w.do("suspend "+id, func() error { return m.Suspend(ctx, "app", id) })
	case op < 57:
		w.rt.Fail("checkpoint", errors.New("injected checkpoint failure"))
		w.do("suspend (checkpoint fails) "+id, func() error { return m.Suspend(ctx, "app", id) })
	case op < 72:
		w.do("stop "+id, func() error { return m.Stop(ctx, "app", id, model.StopRequest{}) })
	case op < 82:
		w.do("update "+id, func() error {
			_, err := m.Update(ctx, "app", id, model.UpdateMachineRequest{Config: w.config()})
			return err
		})
	case op < 90:
		w.do("destroy "+id, func() error { return m.Destroy(ctx, "app", id, true) })
	case op < 95:
		w.rt.Exit(sandboxID(id), 1)
		w.tracef("app of %s exits", id)
	default:
		w.rt.Tick(sandboxID(id), 1+w.rng.Intn(9))
		w.tracef("tick %s", id)
	}
}

// targetedOp runs the armed point's operation on a machine in a state
// where it reaches the point (or first brings one there), so that every
// point is crashed at often. It reports whether it found something to do.
func (w *crashWorld) targetedOp(ctx context.Context) bool {
	m := w.proc.m
	in := func(states ...model.State) string {
		for _, i := range w.rng.Perm(len(w.ids)) {
			mc, err := m.machine("app", w.ids[i])
			if err != nil {
				continue
			}
			for _, s := range states {
				if mc.State == s {
					return mc.ID
				}
			}
		}
		return ""
	}
	switch w.op {
	case "suspend":
		if id := in(model.StateStarted); id != "" {
			if w.point == "suspend/failed-before-commit" {
				w.rt.Fail("checkpoint", errors.New("injected checkpoint failure"))
			}
			w.do("suspend (targeted) "+id, func() error { return m.Suspend(ctx, "app", id) })
			return true
		}
	case "resume", "discard":
		if id := in(model.StateSuspended); id != "" {
			if w.op == "resume" {
				w.do("start (targeted) "+id, func() error { _, err := m.Start(ctx, "app", id); return err })
			} else {
				w.do("stop (targeted) "+id, func() error { return m.Stop(ctx, "app", id, model.StopRequest{}) })
			}
			return true
		}
		if id := in(model.StateStarted); id != "" {
			w.do("suspend (targeted) "+id, func() error { return m.Suspend(ctx, "app", id) })
			return true
		}
	case "start":
		if id := in(model.StateStopped, model.StateCreated); id != "" {
			w.do("start (targeted) "+id, func() error { _, err := m.Start(ctx, "app", id); return err })
			return true
		}
	case "stop":
		if id := in(model.StateStarted); id != "" {
			w.do("stop (targeted) "+id, func() error { return m.Stop(ctx, "app", id, model.StopRequest{}) })
			return true
		}
	case "update":
		if id := in(model.StateStarted, model.StateSuspended, model.StateStopped); id != "" {
			w.do("update (targeted) "+id, func() error {
				_, err := m.Update(ctx, "app", id, model.UpdateMachineRequest{Config: w.config()})
				return err
			})
			return true
		}
	case "destroy":
		if id := in(model.StateStarted, model.StateSuspended, model.StateStopped, model.StateCreated); id != "" {
			w.do("destroy (targeted) "+id, func() error { return m.Destroy(ctx, "app", id, true) })
			return true
		}
	}
	return false
}

// settle waits (boundedly) until every machine is in a resting state whose
// sandbox agrees with it: a sandbox killed under a started machine is
// noticed by its supervisor, which stops (and maybe restarts) the machine.
func (w *crashWorld) settle() {
	deadline := time.Now().Add(10 * time.Second)
	for {
		why := w.unsettled()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			w.fatalf("not settled: %s", why)
		}
		time.Sleep(time.Millisecond)
	}
}

func (w *crashWorld) unsettled() string {
	if id := w.proc.m.busy(); id != "" {
		return fmt.Sprintf("machine %s has an operation in progress", id)
	}
	for _, mc := range w.machines() {
		if !mc.State.Settled() {
			return fmt.Sprintf("machine %s is %s", mc.ID, mc.State)
		}
		st, _ := w.rt.State(context.Background(), sandboxID(mc.ID))
		if (mc.State == model.StateStarted) != (st == runtime.StatusRunning) ||
			(mc.State != model.StateStarted && st != runtime.StatusAbsent) {
			return fmt.Sprintf("machine %s is %s but its sandbox is %s", mc.ID, mc.State, st)
		}
	}
	return ""
}

// busy returns a machine whose operation lock is held, if any.
func (m *Manager) busy() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, l := range m.locks {
		if len(l) > 0 {
			return id
		}
	}
	return ""
}

func (w *crashWorld) machines() []model.Machine {
	var ms []model.Machine
	err := w.proc.st.View(func(tx *store.Tx) error {
		var err error
		ms, err = tx.Machines("")
		return err
	})
	if err != nil {
		w.fatalf("list machines: %v", err)
	}
	return ms
}

// check asserts the invariants on every machine.
func (w *crashWorld) check() {
	w.t.Helper()
	if n := w.illegal.Load(); n > 0 {
		w.fatalf("the lifecycle refused %d illegal state transitions: %v", n, w.illegalSeen)
	}
	for _, mc := range w.machines() {
		st, _ := w.rt.State(context.Background(), sandboxID(mc.ID))
		if mc.State != model.StateStarted && st != runtime.StatusAbsent {
			w.fatalf("machine %s is %s but its sandbox is %s (leaked)", mc.ID, mc.State, st)
		}
		snap, ok := w.snapshotRecord(mc.ID)
		dirs := w.snapshotDirs(mc.ID)
		switch {
		case mc.State == model.StateDestroyed:
			if _, err := os.Stat(w.proc.m.machineDir(mc.ID)); !errors.Is(err, os.ErrNotExist) {
				w.fatalf("destroyed machine %s keeps its directory (%v)", mc.ID, err)
			}
			if ok {
				w.fatalf("destroyed machine %s keeps a snapshot record", mc.ID)
			}
		case mc.State == model.StateSuspended:
			if !ok || snap.State != model.SnapshotSealed {
				w.fatalf("suspended machine %s has snapshot record %+v (ok=%v)", mc.ID, snap, ok)
			}
			if len(dirs) != 1 || dirs[0] != filepath.Base(snap.Dir) {
				w.fatalf("suspended machine %s: snapshot dirs %v, want only %s", mc.ID, dirs, filepath.Base(snap.Dir))
			}
		default:
			if ok || len(dirs) != 0 {
				w.fatalf("%s machine %s keeps snapshot record %v (%+v) and dirs %v", mc.State, mc.ID, ok, snap, dirs)
			}
		}
	}
}

func (w *crashWorld) snapshotRecord(id string) (model.Snapshot, bool) {
	var s model.Snapshot
	var ok bool
	w.proc.st.View(func(tx *store.Tx) error {
		s, ok, _ = tx.Snapshot(id)
		return nil
	})
	return s, ok
}

func (w *crashWorld) snapshotDirs(id string) []string {
	entries, _ := os.ReadDir(w.proc.m.snapshotsDir(id))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// followUp proves every machine is actionable: a suspended one resumes
// from its snapshot with its memory, a stopped one starts, a started one
// suspends and resumes; then every machine is destroyed without a trace.
func (w *crashWorld) followUp(ctx context.Context) {
	m := w.proc.m
	w.rt.Fail("checkpoint", nil) // an injected failure no suspend took
	for _, mc := range w.machines() {
		sb := sandboxID(mc.ID)
		switch mc.State {
		case model.StateSuspended:
			resp, err := m.Start(ctx, "app", mc.ID)
			if err != nil || !resp.FromSnapshot {
				w.fatalf("follow-up resume of suspended %s = %+v, %v", mc.ID, resp, err)
			}
		case model.StateCreated, model.StateStopped:
			if _, err := m.Start(ctx, "app", mc.ID); err != nil {
				w.fatalf("follow-up start of %s %s: %v", mc.State, mc.ID, err)
			}
		case model.StateStarted:
			w.rt.Tick(sb, 3)
			want := w.rt.Counter(sb)
			if err := m.Suspend(ctx, "app", mc.ID); err != nil {
				w.fatalf("follow-up suspend of %s: %v", mc.ID, err)
			}
			resp, err := m.Start(ctx, "app", mc.ID)
			if err != nil || !resp.FromSnapshot || w.rt.Counter(sb) != want {
				w.fatalf("follow-up resume of %s = %+v, %v; counter %d, want %d", mc.ID, resp, err, w.rt.Counter(sb), want)
			}
		}
	}
	for _, mc := range w.machines() {
		if err := m.Destroy(ctx, "app", mc.ID, true); err != nil {
			w.fatalf("follow-up destroy of %s: %v", mc.ID, err)
		}
		if st, _ := w.rt.State(ctx, sandboxID(mc.ID)); st != runtime.StatusAbsent {
			w.fatalf("destroyed machine %s left its sandbox %s", mc.ID, st)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(m.cfg.DataDir, "machines")); len(entries) != 0 {
		w.fatalf("machine directories left after destroying all: %v", entries)
	}
}

// crashStats counts, per fault point and action, runs armed there and
// runs where the fault fired.
type crashStats struct {
	armed, fired map[string]int
	runs         int
}

func newCrashStats() *crashStats {
	return &crashStats{armed: map[string]int{}, fired: map[string]int{}}
}

func (s *crashStats) add(w *crashWorld) {
	s.runs++
	key := w.point + " " + w.action
	s.armed[key]++
	if w.fired {
		s.fired[key]++
	}
}

// log prints one line per point and action: "crash-matrix: POINT ACTION
// runs N fired M ok" (every counted run passed its checks).
func (s *crashStats) log(t *testing.T, restoredImages int) {
	keys := make([]string, 0, len(s.armed))
	for k := range s.armed {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	total := 0
	for _, k := range keys {
		total += s.fired[k]
		t.Logf("crash-matrix: %s runs %d fired %d ok", k, s.armed[k], s.fired[k])
	}
	t.Logf("crash-matrix: total runs %d, faults fired %d, snapshot images restored %d (each at most once)", s.runs, total, restoredImages)
}

// checkCoverage fails if some fault point never fired with the daemon
// killed: a point nothing reaches is a point nothing tests.
func (s *crashStats) checkCoverage(t *testing.T) {
	for _, p := range FaultPoints {
		if s.fired[p.Name+" "+actKillDaemon] == 0 {
			t.Errorf("fault point %s never fired with the daemon killed", p.Name)
		}
	}
}

// illegalTransitions is a log handler that counts the manager's reports of
// refused state transitions and drops every record.
type illegalTransitions struct{ w *crashWorld }

func (h illegalTransitions) Enabled(_ context.Context, l slog.Level) bool {
	return l >= slog.LevelError
}
func (h illegalTransitions) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "refused an illegal state transition" {
		var attrs []string
		r.Attrs(func(a slog.Attr) bool { attrs = append(attrs, a.String()); return true })
		h.w.mu.Lock()
		h.w.illegalSeen = append(h.w.illegalSeen, strings.Join(attrs, " "))
		h.w.mu.Unlock()
		h.w.illegal.Add(1)
	}
	return nil
}
func (h illegalTransitions) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h illegalTransitions) WithGroup(string) slog.Handler      { return h }
