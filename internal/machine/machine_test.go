package machine

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/runtime"
	"github.com/torpor-dev/torpor/internal/runtime/fake"
	"github.com/torpor-dev/torpor/internal/store"
)

// env is a manager on a fake runtime, with what a test needs to restart it.
type env struct {
	t     *testing.T
	m     *Manager
	rt    *fake.Runtime
	st    *store.Store
	cfg   Config
	image string
	// faultFn is armed on every manager restart makes (test builds with
	// -tags faults only; see fault_test.go).
	faultFn func(point, machineID string)
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "torpor.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	image := filepath.Join(dir, "rootfs")
	os.Mkdir(image, 0o755)
	e := &env{t: t, rt: fake.New("v1"), st: st, image: image,
		cfg: Config{DataDir: filepath.Join(dir, "data"), StopTimeout: 50 * time.Millisecond}}
	e.restart()
	if _, err := e.m.CreateApp(context.Background(), model.App{Name: "app"}); err != nil {
		t.Fatal(err)
	}
	return e
}

// restart replaces the manager by a new one on the same store and runtime,
// as a daemon restart does.
func (e *env) restart() {
	e.t.Helper()
	if e.m != nil {
		e.m.Close()
	}
	m, err := New(e.cfg, e.st, e.rt)
	if err != nil {
		e.t.Fatal(err)
	}
	if e.faultFn != nil {
		m.SetFault(e.faultFn)
	}
	if err := m.Recover(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.m = m
	e.t.Cleanup(m.Close)
}

func (e *env) config() model.MachineConfig {
	return model.MachineConfig{Image: e.image, Init: model.InitConfig{Exec: []string{"/app"}}}
}

func (e *env) create() model.Machine {
	e.t.Helper()
	mc, err := e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: e.config()})
	if err != nil {
		e.t.Fatal(err)
	}
	return mc
}

func (e *env) get(id string) model.Machine {
	e.t.Helper()
	mc, err := e.m.Get(context.Background(), "app", id)
	if err != nil {
		e.t.Fatal(err)
	}
	return mc
}

func (e *env) must(err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) start(id string) model.StartResponse {
	e.t.Helper()
	resp, err := e.m.Start(context.Background(), "app", id)
	e.must(err)
	return resp
}

func (e *env) snapshotRecord(id string) (model.Snapshot, bool) {
	var s model.Snapshot
	var ok bool
	e.st.View(func(tx *store.Tx) error {
		s, ok, _ = tx.Snapshot(id)
		return nil
	})
	return s, ok
}

// lastEvent returns the newest event of type typ.
func (e *env) lastEvent(id, typ string) model.Event {
	e.t.Helper()
	evs, err := e.m.Events(context.Background(), "app", id)
	e.must(err)
	for _, ev := range evs {
		if ev.Type == typ {
			return ev
		}
	}
	e.t.Fatalf("no %s event in %+v", typ, evs)
	return model.Event{}
}

func (e *env) wantState(id string, want model.State) {
	e.t.Helper()
	if got := e.get(id).State; got != want {
		e.t.Fatalf("state = %s, want %s", got, want)
	}
}

func TestCreateStartsMachine(t *testing.T) {
	e := newEnv(t)
	mc := e.create()
	if mc.State != model.StateStarted || mc.BootGeneration != 1 {
		t.Fatalf("created machine = %s gen %d", mc.State, mc.BootGeneration)
	}
	if e.rt.Counter(sandboxID(mc.ID)) != 0 {
		t.Fatal("sandbox not running")
	}
}

func TestSuspendResumeKeepsMemory(t *testing.T) {
	e := newEnv(t)
	mc := e.create()
	e.rt.Tick(sandboxID(mc.ID), 41)
	e.must(e.m.Suspend(context.Background(), "app", mc.ID))
	e.wantState(mc.ID, model.StateSuspended)
	snap, ok := e.snapshotRecord(mc.ID)
	if !ok || snap.State != model.SnapshotSealed || snap.BootGeneration != 1 || snap.Checksum == "" {
		t.Fatalf("snapshot record = %+v", snap)
	}
	resp := e.start(mc.ID)
	if !resp.FromSnapshot || resp.PreviousState != model.StateSuspended {
		t.Fatalf("start = %+v", resp)
	}
	if got := e.rt.Counter(sandboxID(mc.ID)); got != 41 {
		t.Fatalf("counter after resume = %d, want 41", got)
	}
	if _, ok := e.snapshotRecord(mc.ID); ok {
		t.Fatal("snapshot record kept after resume")
	}
	if _, err := os.Stat(snap.Dir); !os.IsNotExist(err) {
		t.Fatal("snapshot image kept after resume")
	}
	if ev := e.lastEvent(mc.ID, "resume"); ev.Field("from_snapshot") != true {
		t.Fatalf("resume event = %+v", ev)
	}
	if e.get(mc.ID).BootGeneration != 1 {
		t.Fatal("resume changed the boot generation")
	}
}

func TestSecondResumeOfSameSnapshotImpossible(t *testing.T) {
	e := newEnv(t)
	mc := e.create()
	e.must(e.m.Suspend(context.Background(), "app", mc.ID))
	snap, _ := e.snapshotRecord(mc.ID)
	e.start(mc.ID)
	// Put the old record back, as a bug or a restored database backup might.
	e.st.Update(func(tx *store.Tx) error {
		rec, _ := tx.Machine(mc.ID)
		rec.State = model.StateSuspended
		tx.PutMachine(rec)
		return tx.PutSnapshot(snap)
	})
	e.m.endRun(mc.ID)
	e.rt.Kill(context.Background(), sandboxID(mc.ID))
	resp := e.start(mc.ID)
	if resp.FromSnapshot {
		t.Fatal("a snapshot was restored twice")
	}
	if len(e.rt.Restores) != 1 {
		t.Fatalf("restores = %v", e.rt.Restores)
	}
	if reason := e.lastEvent(mc.ID, "resume").Field("reason"); !strings.Contains(fmt.Sprint(reason), "missing") {
		t.Fatalf("fallback reason = %v", reason)
	}
}

func TestStaleGenerationSnapshotRefused(t *testing.T) {
	e := newEnv(t)
	mc := e.create()
	e.must(e.m.Suspend(context.Background(), "app", mc.ID))
	old, _ := e.snapshotRecord(mc.ID)
	saved := filepath.Join(t.TempDir(), "old")
	e.must(os.Rename(old.Dir, saved))
	e.must(os.MkdirAll(old.Dir, 0o700))
	copyDir(t, saved, old.Dir)
	e.start(mc.ID) // resume: generation 1
	e.must(e.m.Stop(context.Background(), "app", mc.ID, model.StopRequest{}))
	e.start(mc.ID) // cold start: generation 2
	e.must(e.m.Suspend(context.Background(), "app", mc.ID))
	// Swap the generation-1 snapshot back in behind the daemon's back.
	cur, _ := e.snapshotRecord(mc.ID)
	os.RemoveAll(cur.Dir)
	os.MkdirAll(old.Dir, 0o700)
	copyDir(t, saved, old.Dir)
	e.st.Update(func(tx *store.Tx) error { return tx.PutSnapshot(old) })

	if resp := e.start(mc.ID); resp.FromSnapshot {
		t.Fatal("restored a snapshot from an older boot generation")
	}
	reason := fmt.Sprint(e.lastEvent(mc.ID, "resume").Field("reason"))
	if !strings.Contains(reason, "older boot generation") {
		t.Fatalf("reason = %q", reason)
	}
	if e.get(mc.ID).BootGeneration != 3 {
		t.Fatal("fallback cold start did not start a new generation")
	}
}

func copyDir(t *testing.T, from, to string) {
	entries, _ := os.ReadDir(from)
	for _, en := range entries {
		data, err := os.ReadFile(filepath.Join(from, en.Name()))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(to, en.Name()), data, 0o600)
	}
}

func TestColdStartDiscardsSnapshots(t *testing.T) {
	e := newEnv(t)
	mc := e.create()
	e.must(e.m.Suspend(context.Background(), "app", mc.ID))
	snap, _ := e.snapshotRecord(mc.ID)
	// A leftover image from an earlier life must go too.
	stray := filepath.Join(e.m.snapshotsDir(mc.ID), "stray")
	os.MkdirAll(stray, 0o700)
	e.must(e.m.Stop(context.Background(), "app", mc.ID, model.StopRequest{}))
	if _, ok := e.snapshotRecord(mc.ID); ok {
		t.Fatal("stop kept the snapshot record")
	}
	if _, err := os.Stat(snap.Dir); !os.IsNotExist(err) {
		t.Fatal("stop kept the snapshot image")
	}
	if ev := e.lastEvent(mc.ID, "stop"); ev.Field("snapshot_discarded") != true {
		t.Fatalf("stop event = %+v", ev)
	}
	if resp := e.start(mc.ID); resp.FromSnapshot {
		t.Fatal("start after stop resumed")
	}
	if _, err := os.Stat(stray); !os.IsNotExist(err) {
		t.Fatal("cold start kept an older image")
	}
}

func TestUpdateSuspendedColdStartsNewConfig(t *testing.T) {
	e := newEnv(t)
	mc := e.create()
	e.must(e.m.Suspend(context.Background(), "app", mc.ID))
	snap, _ := e.snapshotRecord(mc.ID)
	cfg := e.config()
	cfg.Env = map[string]string{"VERSION": "2"}
	upd, err := e.m.Update(context.Background(), "app", mc.ID, model.UpdateMachineRequest{Config: cfg})
	e.must(err)
	if upd.State != model.StateStarted || upd.BootGeneration != 2 || upd.Config.Env["VERSION"] != "2" {
		t.Fatalf("updated = %s gen %d env %v", upd.State, upd.BootGeneration, upd.Config.Env)
	}
	if len(e.rt.Restores) != 0 {
		t.Fatal("update resumed the old snapshot")
	}
	if _, err := os.Stat(snap.Dir); !os.IsNotExist(err) {
		t.Fatal("update kept the snapshot image")
	}
}

func TestUnusableSnapshotFallsBackWithReason(t *testing.T) {
	cases := []struct {
		name   string
		break_ func(e *env, snap model.Snapshot)
		reason string
		code   model.FallbackReason
	}{
		{"corrupt", func(e *env, s model.Snapshot) {
			os.WriteFile(filepath.Join(s.Dir, "checkpoint.img"), []byte("999"), 0o600)
		}, "corrupt", model.FallbackCorrupt},
		{"missing", func(e *env, s model.Snapshot) { os.RemoveAll(s.Dir) }, "missing", model.FallbackMissing},
		{"record missing", func(e *env, s model.Snapshot) {
			e.must(e.st.Update(func(tx *store.Tx) error { return tx.DeleteSnapshot(s.MachineID) }))
		}, "snapshot missing: no snapshot record", model.FallbackMissing},
		{"runtime upgraded", func(e *env, s model.Snapshot) { e.rt.SetVersion("v2") }, "another runtime version", model.FallbackRuntime},
		{"restore fails", func(e *env, s model.Snapshot) { e.rt.Fail("restore", errors.New("boom")) }, "restore failed: boom", model.FallbackRestoreFailed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			mc := e.create()
			e.rt.Tick(sandboxID(mc.ID), 3)
			e.must(e.m.Suspend(context.Background(), "app", mc.ID))
			snap, _ := e.snapshotRecord(mc.ID)
			c.break_(e, snap)
			resp := e.start(mc.ID)
			if resp.FromSnapshot {
				t.Fatal("resumed from an unusable snapshot")
			}
			e.wantState(mc.ID, model.StateStarted)
			ev := e.lastEvent(mc.ID, "resume")
			if ev.Field("from_snapshot") != false || !strings.Contains(fmt.Sprint(ev.Field("reason")), c.reason) {
				t.Fatalf("resume event = %+v, want reason containing %q", ev, c.reason)
			}
			if d := ev.Start(); d == nil || d.Fallback != c.code {
				t.Fatalf("resume event fallback = %v, want %s", ev.Field("fallback"), c.code)
			}
			if e.rt.Counter(sandboxID(mc.ID)) != 0 {
				t.Fatal("fallback did not cold start")
			}
		})
	}
}

func TestSuspendEligibility(t *testing.T) {
	cases := map[string]func(*model.MachineConfig){
		"memory_mb": func(c *model.MachineConfig) { c.Guest.MemoryMB = 4096 },
		"swap":      func(c *model.MachineConfig) { c.SwapSizeMB = 512 },
		"schedule":  func(c *model.MachineConfig) { c.Schedule = "daily" },
		"gpus":      func(c *model.MachineConfig) { c.Guest.GPUs = 1 },
	}
	for field, change := range cases {
		t.Run(field, func(t *testing.T) {
			e := newEnv(t)
			cfg := e.config()
			change(&cfg)
			mc, err := e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: cfg})
			e.must(err)
			err = e.m.Suspend(context.Background(), "app", mc.ID)
			if model.KindOf(err) != model.KindPrecondition || !strings.Contains(err.Error(), field) {
				t.Fatalf("suspend = %v, want precondition error naming %s", err, field)
			}
			e.wantState(mc.ID, model.StateStarted)

			auto := model.AutostopSuspend
			cfg.Services = []model.Service{{InternalPort: 8080, Autostop: &auto}}
			_, err = e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: cfg})
			if model.KindOf(err) != model.KindInvalid || !strings.Contains(err.Error(), "autostop") {
				t.Fatalf("create with autostop=suspend = %v, want invalid", err)
			}
		})
	}
}

func TestSuspendLimitConfigurable(t *testing.T) {
	e := newEnv(t)
	e.cfg.SuspendMemoryLimitMB = 8192
	e.restart()
	cfg := e.config()
	cfg.Guest.MemoryMB = 4096
	mc, err := e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: cfg})
	e.must(err)
	e.must(e.m.Suspend(context.Background(), "app", mc.ID))
}

func TestCheckpointFailureLeavesStarted(t *testing.T) {
	e := newEnv(t)
	mc := e.create()
	e.rt.Fail("checkpoint", errors.New("no space left on device"))
	err := e.m.Suspend(context.Background(), "app", mc.ID)
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("suspend = %v", err)
	}
	e.wantState(mc.ID, model.StateStarted)
	if ev := e.lastEvent(mc.ID, "suspend"); ev.Status != "failed" {
		t.Fatalf("suspend event = %+v", ev)
	}
	if _, ok := e.snapshotRecord(mc.ID); ok {
		t.Fatal("failed suspend left a snapshot record")
	}
	// The machine is still supervised: its own exit stops it.
	e.rt.Exit(sandboxID(mc.ID), 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := e.m.Wait(ctx, "app", mc.ID, []model.State{model.StateStopped}); err != nil {
		t.Fatal(err)
	}
}

func TestWaitForSuspendedAndTimeout(t *testing.T) {
	e := newEnv(t)
	mc := e.create()
	got := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := e.m.Wait(ctx, "app", mc.ID, []model.State{model.StateSuspended, model.StateDestroyed})
		got <- err
	}()
	time.Sleep(20 * time.Millisecond)
	e.must(e.m.Suspend(context.Background(), "app", mc.ID))
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := e.m.Wait(ctx, "app", mc.ID, []model.State{model.StateStarted})
	if model.KindOf(err) != model.KindTimeout {
		t.Fatalf("wait = %v, want timeout", err)
	}
}

func TestProcessExitStopsAndRestartPolicy(t *testing.T) {
	e := newEnv(t)
	mc := e.create()
	e.rt.Exit(sandboxID(mc.ID), 3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := e.m.Wait(ctx, "app", mc.ID, []model.State{model.StateStopped})
	e.must(err)
	if ev := e.lastEvent(mc.ID, "exit"); ev.Field("exit_code") != float64(3) {
		t.Fatalf("exit event = %+v", ev)
	}

	cfg := e.config()
	cfg.Restart = &model.RestartPolicy{Policy: "on-failure"}
	mc2, err := e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: cfg})
	e.must(err)
	e.rt.Exit(sandboxID(mc2.ID), 1)
	deadline := time.Now().Add(5 * time.Second)
	for e.get(mc2.ID).BootGeneration != 2 || e.get(mc2.ID).State != model.StateStarted {
		if time.Now().After(deadline) {
			t.Fatalf("on-failure machine not restarted: %+v", e.get(mc2.ID))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if ev := e.lastEvent(mc2.ID, "restart"); ev.Field("policy") != "on-failure" {
		t.Fatalf("restart event = %+v", ev)
	}
	if ev := e.lastEvent(mc2.ID, "start"); ev.Source != model.SourceFlyd {
		t.Fatalf("restart's start event = %+v, want source flyd", ev)
	}
}

func TestRestartRecovers(t *testing.T) {
	e := newEnv(t)
	running := e.create()
	suspended := e.create()
	gone := e.create()
	e.rt.Tick(sandboxID(suspended.ID), 9)
	e.must(e.m.Suspend(context.Background(), "app", suspended.ID))
	e.m.Close()
	e.rt.Kill(context.Background(), sandboxID(gone.ID)) // died while the daemon was down
	e.restart()

	e.wantState(running.ID, model.StateStarted)
	e.wantState(suspended.ID, model.StateSuspended)
	e.wantState(gone.ID, model.StateStopped)
	if resp := e.start(suspended.ID); !resp.FromSnapshot || e.rt.Counter(sandboxID(suspended.ID)) != 9 {
		t.Fatalf("resume after restart = %+v", resp)
	}
	// The adopted machine is supervised again.
	e.rt.Exit(sandboxID(running.ID), 0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := e.m.Wait(ctx, "app", running.ID, []model.State{model.StateStopped})
	e.must(err)
}

func TestConcurrentOperationsStayConsistent(t *testing.T) {
	e := newEnv(t)
	mc := e.create()
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			switch i % 3 {
			case 0:
				e.m.Suspend(context.Background(), "app", mc.ID)
			case 1:
				e.m.Start(context.Background(), "app", mc.ID)
			case 2:
				e.m.Get(context.Background(), "app", mc.ID)
			}
		}(i)
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, dir := range e.rt.Restores {
		if seen[dir] {
			t.Fatalf("image %s restored twice", dir)
		}
		seen[dir] = true
	}
	st := e.get(mc.ID).State
	if st != model.StateStarted && st != model.StateSuspended {
		t.Fatalf("state after concurrent operations = %s", st)
	}
}

func TestDestroyRemovesEverything(t *testing.T) {
	e := newEnv(t)
	mc := e.create()
	err := e.m.Destroy(context.Background(), "app", mc.ID, false)
	if model.KindOf(err) != model.KindConflict {
		t.Fatalf("destroy of started machine without force = %v", err)
	}
	e.must(e.m.Suspend(context.Background(), "app", mc.ID))
	e.must(e.m.Destroy(context.Background(), "app", mc.ID, false))
	e.wantState(mc.ID, model.StateDestroyed)
	if _, err := os.Stat(e.m.machineDir(mc.ID)); !os.IsNotExist(err) {
		t.Fatal("machine directory kept")
	}
	if ms, _ := e.m.List(context.Background(), "app"); len(ms) != 0 {
		t.Fatalf("destroyed machine listed: %v", ms)
	}
}

func TestInvalidConfigsNameTheField(t *testing.T) {
	e := newEnv(t)
	cases := map[string]func(*model.MachineConfig){
		"config.image":                     func(c *model.MachineConfig) { c.Image = "" },
		"config.guest.memory_mb":           func(c *model.MachineConfig) { c.Guest.MemoryMB = 10 },
		"config.guest.cpus":                func(c *model.MachineConfig) { c.Guest.CPUs = -1 },
		"config.init":                      func(c *model.MachineConfig) { c.Init = model.InitConfig{} },
		"config.env":                       func(c *model.MachineConfig) { c.Env = map[string]string{"1X": "y"} },
		"config.restart.policy":            func(c *model.MachineConfig) { c.Restart = &model.RestartPolicy{Policy: "sometimes"} },
		"config.services[0].internal_port": func(c *model.MachineConfig) { c.Services = []model.Service{{InternalPort: 0}} },
	}
	for field, change := range cases {
		cfg := e.config()
		change(&cfg)
		_, err := e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: cfg})
		if model.KindOf(err) != model.KindInvalid || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: got %v", field, err)
		}
	}
	if ms, _ := e.m.List(context.Background(), "app"); len(ms) != 0 {
		t.Fatalf("invalid creates left machines: %v", ms)
	}
}

func TestSuspendDiskFullLeavesStarted(t *testing.T) {
	e := newEnv(t)
	mc := e.create()
	e.rt.Tick(sandboxID(mc.ID), 4)
	e.rt.Fail("checkpoint", fmt.Errorf("write pages: %w", syscall.ENOSPC))
	err := e.m.Suspend(context.Background(), "app", mc.ID)
	if model.KindOf(err) != model.KindInsufficientStorage || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("suspend = %v (kind %v), want a 507 saying disk full", err, model.KindOf(err))
	}
	e.wantState(mc.ID, model.StateStarted)
	if e.rt.Counter(sandboxID(mc.ID)) != 4 {
		t.Fatal("the machine lost its memory")
	}
	if ev := e.lastEvent(mc.ID, "suspend"); !strings.Contains(fmt.Sprint(ev.Field("error")), "ENOSPC") {
		t.Fatalf("suspend event = %+v", ev)
	}
	if entries, _ := os.ReadDir(e.m.snapshotsDir(mc.ID)); len(entries) != 0 {
		t.Fatalf("partial snapshot left: %v", entries)
	}
	e.must(e.m.Suspend(context.Background(), "app", mc.ID))
}

// The lifecycle has one checked path: an illegal transition is refused as
// an internal error and commits nothing, and a record change cannot slip a
// state change past the table.
func TestIllegalTransitionRefused(t *testing.T) {
	e := newEnv(t)
	mc, err := e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: e.config(), SkipLaunch: true})
	e.must(err)
	if _, err := e.m.enter(mc.ID, model.StateSuspended, nil); model.KindOf(err) != model.KindInternal {
		t.Fatalf("created → suspended: %v", err)
	}
	if _, err := e.m.commit(mc.ID, func(_ *store.Tx, rec *model.Machine) error {
		rec.State = model.StateStarted
		return nil
	}); model.KindOf(err) != model.KindInternal {
		t.Fatalf("a record change moved the state: %v", err)
	}
	e.wantState(mc.ID, model.StateCreated)
}

// Subscribers see every committed change in order, with typed details.
func TestSubscribersSeeTransitions(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	var got []string
	cancel := e.m.Subscribe(func(c model.Change) {
		mu.Lock()
		defer mu.Unlock()
		if c.Transition() {
			got = append(got, string(c.From)+"→"+string(c.Machine.State))
		}
		for _, ev := range c.Events {
			if d := ev.Start(); d != nil && d.FromSnapshot && d.ResumePhases == nil {
				t.Errorf("resume event without phases: %+v", d)
			}
		}
	})
	mc := e.create()
	e.must(e.m.Suspend(context.Background(), "app", mc.ID))
	e.start(mc.ID)
	cancel()
	e.must(e.m.Stop(context.Background(), "app", mc.ID, model.StopRequest{}))
	mu.Lock()
	defer mu.Unlock()
	want := []string{"→created", "created→starting", "starting→started", "started→suspending", "suspending→suspended",
		"suspended→starting", "starting→started"}
	if !slices.Equal(got, want) {
		t.Fatalf("transitions = %v, want %v", got, want)
	}
}

// Every change carries who asked for the operation that made it, changes
// without events (suspending, starting) included.
func TestChangesCarryTheOperationsSource(t *testing.T) {
	e := newEnv(t)
	mc := e.create()
	var mu sync.Mutex
	var got []string
	cancel := e.m.Subscribe(func(c model.Change) {
		mu.Lock()
		defer mu.Unlock()
		if c.Transition() {
			got = append(got, string(c.Machine.State)+":"+c.Source)
		}
	})
	defer cancel()
	e.must(e.m.Suspend(model.WithSource(context.Background(), model.SourceProxy), "app", mc.ID))
	if _, err := e.m.Start(model.WithSource(context.Background(), model.SourceMachine), "app", mc.ID); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"suspending:proxy", "suspended:proxy", "starting:machine", "started:machine"}
	if !slices.Equal(got, want) {
		t.Fatalf("changes = %v, want %v", got, want)
	}
}

// brokenAdoption is a network whose machines can be attached but not
// adopted after a restart (their veth pair broke while the daemon was down).
type brokenAdoption struct{}

func (brokenAdoption) Attach(context.Context, string, string) (string, netip.Addr, error) {
	return "", netip.MustParseAddr("10.213.9.2"), nil
}
func (brokenAdoption) Adopt(context.Context, string, string) error {
	return errors.New("veth pair tpv-x ⇄ eth0 is broken")
}
func (brokenAdoption) Detach(context.Context, string) error    { return nil }
func (brokenAdoption) DeleteApp(context.Context, string) error { return nil }

// A running machine whose network cannot be adopted after a restart is not
// left started, unreachable and unsupervised: it is stopped, with the reason.
func TestFailedAdoptionStopsTheMachine(t *testing.T) {
	e := newEnv(t)
	e.cfg.Network = brokenAdoption{}
	e.restart()
	mc := e.create()
	e.restart()
	e.wantState(mc.ID, model.StateStopped)
	if ev := e.lastEvent(mc.ID, "recover"); !strings.Contains(fmt.Sprint(ev.Field("reason")), "veth pair") {
		t.Fatalf("recover event = %+v", ev.Fields())
	}
	if st, _ := e.rt.State(context.Background(), sandboxID(mc.ID)); st != runtime.StatusAbsent {
		t.Fatalf("the sandbox was left %s", st)
	}
	e.start(mc.ID)
}
