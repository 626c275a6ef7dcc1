package machine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/runtime"
)

// errRunscMissing is how a runtime whose binary is gone for a moment fails.
var errRunscMissing = errors.New(`exec: "runsc": executable file not found in $PATH`)

// TestRuntimeFailuresAreNotExits is issue 17's F8 (supervision): a Wait on
// a sandbox that fails while the sandbox runs on (runsc missing or failing)
// is retried, not taken for an exit; the sandbox's real exit later is
// reported as usual. Before the fix the failed wait recorded the machine
// stopped (with its restart policy applied) while its sandbox kept
// running, unsupervised.
func TestRuntimeFailuresAreNotExits(t *testing.T) {
	e := newEnv(t)
	mc := e.create()
	e.rt.Fail("wait", errRunscMissing) // the retry fails too
	e.rt.Fail("state", errRunscMissing)
	e.rt.BreakWait(sandboxID(mc.ID), errRunscMissing)
	time.Sleep(500 * time.Millisecond)
	e.wantState(mc.ID, model.StateStarted)
	if evs, _ := e.m.Events(context.Background(), "app", mc.ID); hasEvent(evs, model.EventExit) {
		t.Fatalf("a failed wait recorded an exit: %+v", evs)
	}
	e.rt.Exit(sandboxID(mc.ID), 7)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := e.m.Wait(ctx, "app", mc.ID, []model.State{model.StateStopped})
	e.must(err)
	if ev := e.lastEvent(mc.ID, model.EventExit); ev.Field("exit_code") != float64(7) {
		t.Fatalf("exit after the retried waits = %+v, want exit code 7", ev)
	}
}

// TestRunscMissingAtSuspendKeepsTheMachineStarted: a suspend whose runtime
// fails at once (runsc missing: the freeze, the state, the wait all fail)
// leaves the machine started and supervised, not stopped.
func TestRunscMissingAtSuspendKeepsTheMachineStarted(t *testing.T) {
	e := newEnv(t)
	mc := e.create()
	e.rt.Fail("signal-all", errRunscMissing)
	e.rt.Fail("state", errRunscMissing)
	if err := e.m.Suspend(context.Background(), "app", mc.ID); err == nil {
		t.Fatal("suspend succeeded without a runtime")
	}
	e.wantState(mc.ID, model.StateStarted)
	if _, ok := e.snapshotRecord(mc.ID); ok {
		t.Fatal("the failed suspend left a snapshot record")
	}
	e.rt.Tick(sandboxID(mc.ID), 3)
	e.must(e.m.Suspend(context.Background(), "app", mc.ID))
	e.wantResumed(mc.ID, 3)
}

func hasEvent(evs []model.Event, typ string) bool {
	for _, ev := range evs {
		if ev.Type == typ {
			return true
		}
	}
	return false
}

// TestTransientResumeFailureKeepsTheSnapshot is issue 17's F6 on the fake
// runtime: a resume whose runtime cannot run for now (runtime.Preparer
// fails before the claim) or whose data dir is full leaves the machine
// suspended with its snapshot and fails with 503 / 507; the next start
// resumes it. Before the fix the snapshot was claimed first, and the
// failure cost it: a cold start.
func TestTransientResumeFailureKeepsTheSnapshot(t *testing.T) {
	e := newEnv(t)
	mc := e.create()
	e.rt.Tick(sandboxID(mc.ID), 4)
	e.must(e.m.Suspend(context.Background(), "app", mc.ID))
	for _, c := range []struct {
		err  error
		kind model.Kind
	}{
		{fmt.Errorf("runsc: %w: %w", runtime.ErrUnavailable, errRunscMissing), model.KindUnavailable},
		{fmt.Errorf("write config.json: %w", syscall.ENOSPC), model.KindInsufficientStorage},
	} {
		e.rt.Fail("prepare-restore", c.err)
		_, err := e.m.Start(context.Background(), "app", mc.ID)
		if model.KindOf(err) != c.kind || !strings.Contains(err.Error(), "stays suspended with its snapshot") {
			t.Fatalf("start while %v = %v, want kind %v", c.err, err, c.kind)
		}
		e.wantState(mc.ID, model.StateSuspended)
		if s, ok := e.snapshotRecord(mc.ID); !ok || s.State != model.SnapshotSealed {
			t.Fatalf("snapshot after a postponed resume = %+v, %v; want sealed", s, ok)
		}
		if ev := e.lastEvent(mc.ID, model.EventResume); ev.Status != "failed" {
			t.Fatalf("resume event = %+v, want failed", ev)
		}
	}
	if resp := e.start(mc.ID); !resp.FromSnapshot || e.rt.Counter(sandboxID(mc.ID)) != 4 || e.rt.Boots != 1 {
		t.Fatalf("start once the runtime was back = %+v, counter %d, boots %d; want resumed with 4, one boot", resp, e.rt.Counter(sandboxID(mc.ID)), e.rt.Boots)
	}
}

// wantResumed starts machine id and checks that it was resumed from its
// snapshot, with its counter at counter.
func (e *env) wantResumed(id string, counter int) {
	e.t.Helper()
	if resp := e.start(id); !resp.FromSnapshot || e.rt.Counter(sandboxID(id)) != counter {
		e.t.Fatalf("start = %+v, counter %d; want resumed from the snapshot with %d", resp, e.rt.Counter(sandboxID(id)), counter)
	}
}
