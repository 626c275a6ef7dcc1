package machine

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/runtime"
)

// newWarmEnv is an env whose manager keeps budgetMB of warm sandboxes at
// the default cost (64 MiB each).
func newWarmEnv(t *testing.T, budgetMB int) *env {
	t.Helper()
	e := newEnv(t)
	e.cfg.WarmSandboxesMemoryMB = budgetMB
	e.restart()
	return e
}

// waitWarm waits until the precreated sandboxes are those of machines ids.
func (e *env) waitWarm(ids ...string) {
	e.t.Helper()
	want := make([]string, len(ids))
	for i, id := range ids {
		want[i] = sandboxID(id)
	}
	slices.Sort(want)
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := e.rt.PrecreatedIDs()
		if slices.Equal(got, want) && e.m.WarmStats().Sandboxes == len(want) {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("precreated sandboxes = %v (manager: %d), want %v", got, e.m.WarmStats().Sandboxes, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *env) suspend(id string) {
	e.t.Helper()
	e.must(e.m.Suspend(context.Background(), "app", id))
}

// suspendedMachine creates, starts, ticks and suspends a machine.
func (e *env) suspendedMachine(ticks int) model.Machine {
	e.t.Helper()
	mc := e.create() // started
	e.rt.Tick(sandboxID(mc.ID), ticks)
	e.suspend(mc.ID)
	return mc
}

func TestWarmResumeRestoresIntoPrecreatedSandbox(t *testing.T) {
	e := newWarmEnv(t, 64)
	mc := e.suspendedMachine(7)
	e.waitWarm(mc.ID)
	if got := e.m.WarmStats(); got.MemoryBytes != 64<<20 || got.BudgetBytes != 64<<20 {
		t.Fatalf("stats = %+v", got)
	}
	e.rt.ResetCalls()
	resp := e.start(mc.ID)
	if !resp.FromSnapshot {
		t.Fatal("not resumed from the snapshot")
	}
	if got := e.rt.Counter(sandboxID(mc.ID)); got != 7 {
		t.Fatalf("counter = %d after the resume, want 7", got)
	}
	if !slices.Contains(e.rt.Calls(), "restore-precreated") {
		t.Fatalf("calls = %v, want a restore into the precreated sandbox", e.rt.Calls())
	}
	if d := e.lastEvent(mc.ID, model.EventResume).Start(); d == nil || !d.WarmSandbox {
		t.Fatalf("resume event details = %+v, want warm_sandbox", d)
	}
	e.waitWarm() // used up; the machine is started
	// The next suspend and resume get a new one.
	e.rt.Tick(sandboxID(mc.ID), 1)
	e.suspend(mc.ID)
	e.waitWarm(mc.ID)
	e.start(mc.ID)
	if got := e.rt.Counter(sandboxID(mc.ID)); got != 8 {
		t.Fatalf("counter = %d after the second resume, want 8", got)
	}
}

func TestWarmResumeWithoutOneSaysSo(t *testing.T) {
	e := newWarmEnv(t, 0)
	mc := e.suspendedMachine(3)
	e.start(mc.ID)
	if d := e.lastEvent(mc.ID, model.EventResume).Start(); d == nil || d.WarmSandbox || !d.FromSnapshot {
		t.Fatalf("resume event details = %+v, want from the snapshot, no warm sandbox", d)
	}
	if got := e.rt.PrecreatedIDs(); len(got) != 0 {
		t.Fatalf("precreated = %v with no budget", got)
	}
}

// The policy: within the budget, machines the proxy autostarts first,
// then the most recently suspended; a slot freed goes to the next one.
func TestWarmPolicyBudgetAndOrder(t *testing.T) {
	e := newWarmEnv(t, 2*DefaultWarmSandboxCostMB+10) // two slots
	a := e.suspendedMachine(1)
	e.waitWarm(a.ID)
	b := e.suspendedMachine(1)
	e.waitWarm(a.ID, b.ID)
	c := e.suspendedMachine(1)
	e.waitWarm(b.ID, c.ID) // a, suspended first, made room
	e.start(c.ID)
	e.waitWarm(a.ID, b.ID) // c's slot went back to a

	// A machine behind the proxy (a service with autostart) comes first.
	cfg := e.config()
	cfg.Services = []model.Service{{Protocol: "tcp", InternalPort: 8080}}
	d, err := e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: cfg})
	e.must(err)
	e.suspend(d.ID)
	e.suspend(c.ID)
	e.waitWarm(c.ID, d.ID)

	e.m.SetWarmBudget(DefaultWarmSandboxCostMB) // shrinks: one slot
	e.waitWarm(d.ID)
	e.m.SetWarmBudget(0)
	e.waitWarm()
}

// Warm sandboxes never take the memory --host-memory-mb gives machines:
// starts are admitted without counting them, and they yield.
func TestWarmSandboxesYieldHostMemory(t *testing.T) {
	e := newEnv(t)
	e.cfg.WarmSandboxesMemoryMB = 4 * DefaultWarmSandboxCostMB
	e.cfg.HostMemoryMB = 4 * 256
	e.restart()
	sized := func() model.MachineConfig {
		cfg := e.config()
		cfg.Guest = model.Guest{MemoryMB: 256, CPUs: 1}
		return cfg
	}
	newMachine := func() model.Machine {
		mc, err := e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: sized()})
		e.must(err)
		return mc
	}
	a, b := newMachine(), newMachine()
	e.suspend(a.ID)
	e.suspend(b.ID)
	e.waitWarm(a.ID, b.ID)
	// 3 × 256 MB started: 256 MB left, room for both warm sandboxes.
	c := newMachine()
	newMachine()
	newMachine()
	e.waitWarm(a.ID, b.ID)
	// One more start is admitted (warm sandboxes are not counted)...
	e.start(a.ID)
	// ...and the other warm sandbox yields: no memory is left.
	e.waitWarm()
	// A stop frees 256 MB: the suspended machine gets its sandbox back.
	e.must(e.m.Stop(context.Background(), "app", c.ID, model.StopRequest{}))
	e.waitWarm(b.ID)
}

// Every way out of suspended but a resume deletes the precreated sandbox.
func TestWarmSandboxDiscarded(t *testing.T) {
	ops := map[string]func(e *env, id string){
		"stop": func(e *env, id string) { e.must(e.m.Stop(context.Background(), "app", id, model.StopRequest{})) },
		"update": func(e *env, id string) {
			_, err := e.m.Update(context.Background(), "app", id, model.UpdateMachineRequest{Config: e.config(), SkipLaunch: true})
			e.must(err)
		},
		"destroy": func(e *env, id string) { e.must(e.m.Destroy(context.Background(), "app", id, false)) },
		"forget":  func(e *env, id string) { e.must(e.m.Forget(context.Background(), id)) },
		"restart": func(e *env, id string) {
			e.must(e.m.Restart(context.Background(), "app", id, model.RestartRequest{}))
		},
		"stale snapshot": func(e *env, id string) {
			// The runtime was upgraded: the resume cold-starts.
			e.rt.SetVersion("v2")
			resp := e.start(id)
			if resp.FromSnapshot {
				e.t.Fatal("resumed a snapshot of another runtime version")
			}
		},
	}
	for name, op := range ops {
		t.Run(name, func(t *testing.T) {
			e := newWarmEnv(t, 256)
			mc := e.suspendedMachine(2)
			e.waitWarm(mc.ID)
			op(e, mc.ID)
			e.waitWarm()
		})
	}
}

// A daemon that dies with precreated sandboxes leaves them to the next
// one, whose recovery deletes them (and, with a budget, precreates again).
func TestWarmSandboxAfterCrash(t *testing.T) {
	e := newWarmEnv(t, 256)
	mc := e.suspendedMachine(5)
	e.waitWarm(mc.ID)
	// The daemon dies: it forgets its warm sandboxes without deleting
	// them (Close would delete them). The next one has no budget.
	e.m.warm.mu.Lock()
	e.m.warm.entries = nil
	e.m.warm.mu.Unlock()
	e.cfg.WarmSandboxesMemoryMB = 0
	e.restart()
	e.waitWarm()
	// With a budget again, it is precreated and used.
	e.cfg.WarmSandboxesMemoryMB = 256
	e.restart()
	e.waitWarm(mc.ID)
	e.rt.ResetCalls()
	e.start(mc.ID)
	if !slices.Contains(e.rt.Calls(), "restore-precreated") || e.rt.Counter(sandboxID(mc.ID)) != 5 {
		t.Fatalf("calls %v, counter %d", e.rt.Calls(), e.rt.Counter(sandboxID(mc.ID)))
	}
}

// A start postponed before the claim (the runtime cannot run for now)
// keeps the warm sandbox for the next start.
func TestWarmSandboxKeptWhenResumePostponed(t *testing.T) {
	e := newWarmEnv(t, 64)
	mc := e.suspendedMachine(4)
	e.waitWarm(mc.ID)
	e.rt.Fail("prepare-restore", fmt.Errorf("runsc: %w", runtime.ErrUnavailable))
	if _, err := e.m.Start(context.Background(), "app", mc.ID); err == nil {
		t.Fatal("start succeeded with the runtime unavailable")
	}
	e.wantState(mc.ID, model.StateSuspended)
	e.waitWarm(mc.ID)
	e.rt.ResetCalls()
	e.start(mc.ID)
	if !slices.Contains(e.rt.Calls(), "restore-precreated") {
		t.Fatalf("calls = %v", e.rt.Calls())
	}
}

// Close (a daemon stopping) deletes the warm sandboxes.
func TestWarmSandboxDeletedOnClose(t *testing.T) {
	e := newWarmEnv(t, 64)
	mc := e.suspendedMachine(1)
	e.waitWarm(mc.ID)
	e.m.Close()
	if got := e.rt.PrecreatedIDs(); len(got) != 0 {
		t.Fatalf("precreated = %v after Close", got)
	}
}

// A warm sandbox made for a spec the resume would not restore (here: its
// recorded spec altered) is deleted, and the resume restores as without one.
func TestWarmSandboxNotMatchingIsDeleted(t *testing.T) {
	e := newWarmEnv(t, 64)
	mc := e.suspendedMachine(6)
	e.waitWarm(mc.ID)
	e.m.warm.mu.Lock()
	we := e.m.warm.entries[mc.ID]
	we.spec.Env = append([]string{"STALE=1"}, we.spec.Env...)
	e.m.warm.entries[mc.ID] = we
	e.m.warm.mu.Unlock()
	e.rt.ResetCalls()
	if resp := e.start(mc.ID); !resp.FromSnapshot {
		t.Fatal("not resumed from the snapshot")
	}
	calls := e.rt.Calls()
	if slices.Contains(calls, "restore-precreated") || !slices.Contains(calls, "discard-precreated") {
		t.Fatalf("calls = %v, want the warm sandbox discarded and a plain restore", calls)
	}
	if d := e.lastEvent(mc.ID, model.EventResume).Start(); d == nil || d.WarmSandbox {
		t.Fatalf("resume event details = %+v, want no warm sandbox", d)
	}
	if got := e.rt.Counter(sandboxID(mc.ID)); got != 6 {
		t.Fatalf("counter = %d, want 6", got)
	}
	e.waitWarm()
}

// injectFlush stands in for a background flush of machine id's snapshot
// that has not finished; the returned func reports whether it was stopped.
func (e *env) injectFlush(id string) (stopped func() bool) {
	ctx, cancel := context.WithCancel(context.Background())
	e.m.mu.Lock()
	e.m.flushes[id] = &flush{cancel: cancel}
	e.m.mu.Unlock()
	return func() bool { return ctx.Err() != nil }
}

func TestResumeAndStopEndTheSnapshotFlush(t *testing.T) {
	e := newEnv(t)
	mc := e.suspendedMachine(3)
	stopped := e.injectFlush(mc.ID)
	if resp := e.start(mc.ID); !resp.FromSnapshot {
		t.Fatal("not resumed from the snapshot")
	}
	e.m.mu.Lock()
	left := e.m.flushes[mc.ID]
	e.m.mu.Unlock()
	if !stopped() || left != nil {
		t.Fatalf("after the resume: flush stopped %v, a flush still registered %v; want it stopped and none started again (the snapshot was claimed)", stopped(), left != nil)
	}

	e.suspend(mc.ID)
	stopped = e.injectFlush(mc.ID)
	e.must(e.m.Stop(context.Background(), "app", mc.ID, model.StopRequest{}))
	if !stopped() {
		t.Fatal("stop discarded the snapshot but left its flush running")
	}
}

// TestWarmPrecreateGivesWayToAStart: a start that finds the worker
// precreating its machine's sandbox cancels that precreate instead of
// waiting for it (a runsc create stretched by a loaded host held a
// proxied wake for a minute in TestSoak), and resumes the plain way.
func TestWarmPrecreateGivesWayToAStart(t *testing.T) {
	e := newWarmEnv(t, 64)
	held := make(chan string, 1)
	e.rt.OnPrecreate = func(ctx context.Context, id string) error {
		held <- id
		<-ctx.Done() // a create that would not end by itself
		return ctx.Err()
	}
	mc := e.suspendedMachine(4)
	e.startDuringPrecreate(t, held, mc.ID)
	if d := e.lastEvent(mc.ID, model.EventResume).Start(); d == nil || d.WarmSandbox {
		t.Fatalf("resume event details = %+v, want a resume without the cancelled sandbox", d)
	}
	if got := e.rt.PrecreatedIDs(); len(got) != 0 {
		t.Fatalf("precreated = %v after the cancelled precreate", got)
	}
}

// TestWarmPrecreateThatFinishesIsTheStartsSandbox: a precreate whose
// create had begun when a start preempted it runs to its end (the gVisor
// driver does not cut runsc create short), and the start, which waited for
// it anyway, restores into the sandbox it made instead of deleting it and
// creating another.
func TestWarmPrecreateThatFinishesIsTheStartsSandbox(t *testing.T) {
	e := newWarmEnv(t, 64)
	held := make(chan string, 1)
	e.rt.OnPrecreate = func(ctx context.Context, id string) error {
		held <- id
		<-ctx.Done() // preempted mid-create; the create still completes
		return nil
	}
	mc := e.suspendedMachine(4)
	e.startDuringPrecreate(t, held, mc.ID)
	if d := e.lastEvent(mc.ID, model.EventResume).Start(); d == nil || !d.WarmSandbox {
		t.Fatalf("resume event details = %+v, want the resume into the sandbox the preempted precreate finished", d)
	}
	if got := e.rt.PrecreatedIDs(); len(got) != 0 {
		t.Fatalf("precreated = %v after the resume into it", got)
	}
}

// startDuringPrecreate waits until the worker precreates machine id's
// sandbox (held names it), then starts the machine, which must resume
// from its snapshot with the app's counter at 4.
func (e *env) startDuringPrecreate(t *testing.T, held <-chan string, id string) {
	t.Helper()
	select {
	case sid := <-held:
		if sid != sandboxID(id) {
			t.Fatalf("precreating %s, want %s", sid, sandboxID(id))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the worker did not precreate the suspended machine's sandbox")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := e.m.Start(ctx, "app", id)
	if err != nil {
		t.Fatalf("start while a precreate was in progress: %v", err)
	}
	if !resp.FromSnapshot {
		t.Fatal("not resumed from the snapshot")
	}
	if got := e.rt.Counter(sandboxID(id)); got != 4 {
		t.Fatalf("counter = %d after the resume, want 4", got)
	}
}
