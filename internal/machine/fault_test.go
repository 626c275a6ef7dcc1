//go:build faults

package machine

// Tests that crash the manager at fault points: test builds only
// (go test -tags faults).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/runtime"
)

// crash is the panic value a fault point raises to simulate a daemon crash.
type crash string

func (e *env) crashAt(point string, op func() error) {
	e.t.Helper()
	e.m.SetFault(func(p, _ string) {
		if p == point {
			panic(crash(p))
		}
	})
	func() {
		defer func() {
			if r := recover(); r != crash(point) {
				e.t.Fatalf("expected crash at %s, got %v", point, r)
			}
		}()
		op()
	}()
	e.m.SetFault(nil)
	e.restart()
}

func TestCrashBetweenClaimAndRestoreNeverRestores(t *testing.T) {
	for _, point := range []string{"resume/after-commit-claim", "resume/after-claim"} {
		t.Run(point, func(t *testing.T) {
			e := newEnv(t)
			mc := e.create()
			e.rt.Tick(sandboxID(mc.ID), 7)
			e.must(e.m.Suspend(context.Background(), "app", mc.ID))
			e.crashAt(point, func() error { _, err := e.m.Start(context.Background(), "app", mc.ID); return err })
			e.wantState(mc.ID, model.StateStopped)
			if _, ok := e.snapshotRecord(mc.ID); ok {
				t.Fatal("claimed snapshot record survives recovery")
			}
			if entries, _ := os.ReadDir(e.m.snapshotsDir(mc.ID)); len(entries) != 0 {
				t.Fatalf("snapshot images survive recovery: %v", entries)
			}
			resp := e.start(mc.ID)
			if resp.FromSnapshot || len(e.rt.Restores) != 0 {
				t.Fatalf("claimed snapshot restored after crash: %+v %v", resp, e.rt.Restores)
			}
			if e.get(mc.ID).BootGeneration != 2 {
				t.Fatal("cold start did not start a new generation")
			}
		})
	}
}

func TestCrashDuringSuspend(t *testing.T) {
	t.Run("after checkpoint, before seal: machine stopped", func(t *testing.T) {
		e := newEnv(t)
		mc := e.create()
		e.crashAt("suspend/after-checkpoint", func() error { return e.m.Suspend(context.Background(), "app", mc.ID) })
		e.wantState(mc.ID, model.StateStopped)
		if _, ok := e.snapshotRecord(mc.ID); ok {
			t.Fatal("unsealed snapshot kept")
		}
	})
	t.Run("after seal, before commit: machine suspended", func(t *testing.T) {
		e := newEnv(t)
		mc := e.create()
		e.rt.Tick(sandboxID(mc.ID), 5)
		e.crashAt("suspend/after-seal", func() error { return e.m.Suspend(context.Background(), "app", mc.ID) })
		e.wantState(mc.ID, model.StateSuspended)
		if resp := e.start(mc.ID); !resp.FromSnapshot || e.rt.Counter(sandboxID(mc.ID)) != 5 {
			t.Fatalf("resume after recovered suspend = %+v", resp)
		}
	})
}

func TestCrashWhileFrozenForCheckpointThawsOnRecovery(t *testing.T) {
	e := newEnv(t)
	mc := e.create()
	e.crashAt("suspend/after-freeze", func() error { return e.m.Suspend(context.Background(), "app", mc.ID) })
	e.wantState(mc.ID, model.StateStarted)
	calls := e.rt.Calls()
	if len(calls) == 0 || calls[len(calls)-1] != "signal-all SIGCONT" {
		t.Fatalf("recovery did not continue the frozen processes: %q", calls)
	}
}

// A sandbox that vanishes while recovery adopts it (a checkpoint the dead
// daemon started completes) must not leave the machine suspending.
func TestRecoveryFailureNeverLeavesMachineMidOperation(t *testing.T) {
	e := newEnv(t)
	mc := e.create()
	e.m.SetFault(func(p, _ string) {
		if p == "suspend/after-freeze" {
			panic(crash(p))
		}
	})
	func() {
		defer func() { recover() }()
		e.m.Suspend(context.Background(), "app", mc.ID)
	}()
	e.m.SetFault(nil)
	e.wantState(mc.ID, model.StateSuspending)
	e.rt.Fail("signal-all", runtime.ErrNotFound) // the SIGCONT of the adoption
	e.restart()
	e.wantState(mc.ID, model.StateStopped)
	if ev := e.lastEvent(mc.ID, "recover"); !strings.Contains(fmt.Sprint(ev.Field("reason")), "recovery failed") {
		t.Fatalf("recover event = %+v", ev)
	}
	e.start(mc.ID)
}

// A daemon that dies after restoring a sandbox but before the image files'
// check finished must not let the restarted daemon thaw that sandbox
// unchecked: recovery finishes the check, and a corrupt image stops the
// machine instead of adopting it.
func TestRecoveryChecksImageRestoredUnverified(t *testing.T) {
	e := newEnv(t)
	mc := e.create()
	e.must(e.m.Suspend(context.Background(), "app", mc.ID))
	snap, _ := e.snapshotRecord(mc.ID)
	// Corrupt the image so that the fake runtime still restores it (its
	// image is the app's counter), as runsc would restore flipped page bits.
	if err := os.WriteFile(filepath.Join(snap.Dir, "checkpoint.img"), []byte("999"), 0o600); err != nil {
		t.Fatal(err)
	}

	crash := errors.New("crash")
	e.faultFn = func(point, id string) {
		if point == "resume/after-restore" {
			panic(crash)
		}
	}
	e.restart()
	func() {
		defer func() {
			if r := recover(); r != crash {
				t.Fatalf("start did not reach resume/after-restore (recovered %v); events: %+v", r, e.lastEvent(mc.ID, "resume"))
			}
		}()
		e.m.Start(context.Background(), "app", mc.ID)
	}()
	e.faultFn = nil
	e.restart() // the old manager's Close only lets go of logs and locks; sandboxes stay

	e.wantState(mc.ID, model.StateStopped)
	ev := e.lastEvent(mc.ID, "recover")
	if !strings.Contains(fmt.Sprint(ev.Field("reason")), "failed its check") {
		t.Fatalf("recover event = %+v, want the failed check as reason", ev)
	}
}

// TestSuspendTheStoreRefusedIsRepaired: a suspend whose last store write
// fails (disk full) is answered with insufficient storage and leaves the
// machine repaired without a restart: suspended from its sealed image,
// which the next start resumes.
func TestSuspendTheStoreRefusedIsRepaired(t *testing.T) {
	e := newEnv(t)
	mc := e.create()
	e.rt.Tick(sandboxID(mc.ID), 5)
	e.refuseOnce("store/commit-suspended")
	err := e.m.Suspend(context.Background(), "app", mc.ID)
	if model.KindOf(err) != model.KindInsufficientStorage || !strings.Contains(err.Error(), "repaired: the machine is suspended") {
		t.Fatalf("suspend = %v, want insufficient storage, repaired", err)
	}
	e.wantState(mc.ID, model.StateSuspended)
	e.wantResumed(mc.ID, 5)
}

// TestClaimTheStoreRefusedKeepsTheSnapshot is issue 17's F6 for the store:
// a resume whose claim the store refuses (disk full) leaves the machine
// suspended with its snapshot, answered with insufficient storage; before
// the fix it fell back to a cold start, which discarded the snapshot.
func TestClaimTheStoreRefusedKeepsTheSnapshot(t *testing.T) {
	e := newEnv(t)
	mc := e.create()
	e.rt.Tick(sandboxID(mc.ID), 6)
	e.must(e.m.Suspend(context.Background(), "app", mc.ID))
	e.refuseOnce("store/claim")
	_, err := e.m.Start(context.Background(), "app", mc.ID)
	if model.KindOf(err) != model.KindInsufficientStorage {
		t.Fatalf("start whose claim the store refused = %v, want insufficient storage", err)
	}
	e.wantState(mc.ID, model.StateSuspended)
	e.wantResumed(mc.ID, 6)
}

// TestCrashAfterResumePrepareKeepsTheSnapshot: the resume readies the
// sandbox before it claims the snapshot, so a crash there leaves the
// machine suspended with its snapshot.
func TestCrashAfterResumePrepareKeepsTheSnapshot(t *testing.T) {
	e := newEnv(t)
	mc := e.create()
	e.rt.Tick(sandboxID(mc.ID), 8)
	e.must(e.m.Suspend(context.Background(), "app", mc.ID))
	e.crashAt("resume/after-prepare", func() error { _, err := e.m.Start(context.Background(), "app", mc.ID); return err })
	e.wantState(mc.ID, model.StateSuspended)
	e.wantResumed(mc.ID, 8)
}

// refuseOnce makes the next store write at fail point point fail, as on a
// full disk.
func (e *env) refuseOnce(point string) {
	e.m.SetFailure(func(p, _ string) error {
		if p == point {
			e.m.SetFailure(nil)
			return fmt.Errorf("bbolt commit: %w", syscall.ENOSPC)
		}
		return nil
	})
}
