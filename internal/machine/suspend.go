package machine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/runtime"
	"github.com/torpor-dev/torpor/internal/snapshot"
	"github.com/torpor-dev/torpor/internal/store"
)

// Suspend snapshots a started machine to disk and stops its sandbox. It is
// atomic from the user's view (invariant 4): the machine ends suspended with
// a sealed snapshot, or it stays started and an event says why.
func (m *Manager) Suspend(ctx context.Context, app, id string) error {
	ctx, mc, end, err := m.begin(ctx, app, id)
	if err != nil {
		return err
	}
	defer end()
	if why := m.suspendIneligible(&mc.Config); why != "" {
		return model.Errorf(model.KindPrecondition, "machine %s cannot be suspended: %s", id, why)
	}
	if mc.State != model.StateStarted {
		return model.Errorf(model.KindConflict, "machine %s is %s; only a started machine can be suspended", id, mc.State)
	}
	return m.suspend(ctx, mc)
}

func (m *Manager) suspend(ctx context.Context, mc model.Machine) error {
	begin := time.Now()
	snap := model.Snapshot{
		ID:             newID(8),
		MachineID:      mc.ID,
		State:          model.SnapshotWriting,
		BootGeneration: mc.BootGeneration,
		Runtime:        m.rt.Name(),
		RuntimeVersion: m.rt.Version(),
		CreatedAt:      time.Now().UTC(),
	}
	snap.Dir = filepath.Join(m.snapshotsDir(mc.ID), snap.ID)
	_, err := m.commit(mc.ID, func(tx *store.Tx, rec *model.Machine) error {
		rec.State = model.StateSuspending
		return tx.PutSnapshot(snap)
	})
	if err != nil {
		return err
	}
	m.fault("suspend/after-commit-suspending", mc.ID)
	pre, err := m.preSuspend(ctx, mc)
	if err != nil {
		return err
	}
	m.fault("suspend/after-pre-suspend", mc.ID)
	// A fresh budget for the checkpoint, however long the hook took.
	ctx, cancel := detach(ctx)
	defer cancel()
	f := suspendFailure{mc: mc, snap: snap, pre: pre}
	if err := os.MkdirAll(snap.Dir, 0o700); err != nil {
		return m.failSuspend(ctx, f, "create snapshot directory", err, true)
	}
	m.fault("suspend/after-mkdir", mc.ID)
	// Freeze every process for the checkpoint: the app then comes back
	// stopped and only runs again once its clock is checked (afterRestore).
	if err := m.rt.SignalAll(ctx, sandboxID(mc.ID), "SIGSTOP"); err != nil {
		return m.failSuspend(ctx, f, "freeze processes", err, true)
	}
	m.fault("suspend/after-freeze", mc.ID)
	r := m.currentRun(mc.ID)
	m.endRun(mc.ID) // the sandbox's exit is ours from here on
	m.fault("suspend/before-checkpoint", mc.ID)
	checkpointBegin := time.Now()
	if err := m.rt.Checkpoint(ctx, sandboxID(mc.ID), snap.Dir); err != nil {
		return m.failSuspend(ctx, f, "checkpoint", err, m.stillRunning(ctx, mc.ID, r))
	}
	checkpointed := time.Since(checkpointBegin)
	m.fault("suspend/after-checkpoint", mc.ID)
	sealBegin := time.Now()
	seal, err := snapshot.Write(snap.Dir, m.expectedSeal(mc, snap))
	if err == nil && m.cfg.SyncSnapshots {
		err = snapshot.Flush(snap.Dir)
	}
	if err != nil {
		return m.failSuspend(ctx, f, "seal", err, false)
	}
	sealed := time.Since(sealBegin)
	m.fault("suspend/after-seal", mc.ID)
	snap.State, snap.SizeBytes, snap.Checksum = model.SnapshotSealed, seal.SizeBytes, seal.Checksum()
	details := map[string]any{
		"snapshot_id": snap.ID, "size_bytes": snap.SizeBytes, "boot_generation": mc.BootGeneration,
		"checkpoint_ms": checkpointed.Milliseconds(), "seal_ms": sealed.Milliseconds(),
		"duration_ms": time.Since(begin).Milliseconds(),
	}
	if pre != nil {
		details[hookPreSuspend] = pre.details()
	}
	_, err = m.commit(mc.ID, func(tx *store.Tx, rec *model.Machine) error {
		rec.State = model.StateSuspended
		return tx.PutSnapshot(snap)
	}, event("suspend", "suspended", model.SourceOf(ctx), details))
	if err == nil {
		m.fault("suspend/after-commit-suspended", mc.ID)
	}
	if err == nil && !m.cfg.SyncSnapshots {
		go m.flushSnapshot(snap.Dir)
	}
	return err
}

// flushSnapshot flushes a sealed snapshot to disk after the suspend has been
// reported (see Config.SyncSnapshots). A snapshot claimed or discarded in
// the meantime needs no flush.
func (m *Manager) flushSnapshot(dir string) {
	if err := snapshot.Flush(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		m.log.Warn("flushing snapshot to disk", "dir", dir, "err", err)
	}
}

// stillRunning reports whether the sandbox of run r has not exited: its
// supervisor has not seen it exit within a moment, and the runtime says it
// runs (the supervisor may take longer than that moment to notice a
// sandbox killed from outside).
func (m *Manager) stillRunning(ctx context.Context, id string, r *run) bool {
	if r == nil {
		return false
	}
	select {
	case <-r.done:
		return false
	case <-time.After(100 * time.Millisecond):
	}
	st, err := m.rt.State(ctx, sandboxID(id))
	return err == nil && st == runtime.StatusRunning
}

// suspendFailure is a suspend that failed after its pre_suspend hook (if
// any) succeeded.
type suspendFailure struct {
	mc   model.Machine
	snap model.Snapshot
	pre  *hookRun // nil without a pre_suspend hook
}

// failSuspend undoes a suspend that could not complete, so the machine stays
// started. If the sandbox is no longer running (the checkpoint stopped it
// before the failure), the machine is brought back: from the image just
// written when it is whole, else by a cold start. The app, which its
// pre_suspend hook prepared for a suspend, gets its post_resume hook unless
// it was cold-started: each successful pre_suspend is matched by one
// post_resume while the process lives.
func (m *Manager) failSuspend(ctx context.Context, f suspendFailure, step string, cause error, running bool) error {
	mc, snap := f.mc, f.snap
	msg := fmt.Sprintf("suspend failed (%s): %v", step, cause)
	kind := model.KindInternal
	if diskFull(cause) {
		// Short: runsc's own words are long, repeated and in the log.
		msg = fmt.Sprintf("suspend failed (%s): disk full (ENOSPC) in %s", step, filepath.Dir(snap.Dir))
		kind = model.KindInsufficientStorage
	}
	joinFail := func(msg string, err error) error { return joinFailKind(kind, msg, err) }
	m.log.Warn("suspend failed", "machine", mc.ID, "step", step, "err", cause)
	if running {
		m.supervise(mc.ID)
		snapshot.Remove(snap.Dir)
		details := map[string]any{"error": msg, "machine_state": "started"}
		m.thaw(ctx, mc, details)
		evs := m.afterFailedSuspend(ctx, f, details)
		return joinFail(msg, m.backToStarted(mc, details, evs))
	}
	restored := step == "seal" && m.restoreUnsealed(ctx, mc, snap.Dir) == nil
	snapshot.Remove(snap.Dir)
	if restored {
		details := map[string]any{"error": msg, "machine_state": "started",
			"recovered": "restored from the unsealed image", "boot_generation": mc.BootGeneration}
		if f.pre != nil {
			details[hookPreSuspend] = f.pre.details()
		}
		evs := m.afterRestore(ctx, mc, snap, details)
		return joinFail(msg, m.backToStarted(mc, details, evs))
	}
	m.commit(mc.ID, nil, event("suspend", "failed", model.SourceFlyd, map[string]any{"error": msg, "recovered": "cold start"}))
	_, err := m.coldStart(ctx, mc, "")
	return joinFail(msg, err)
}

// backToStarted records a failed suspend whose machine runs again.
func (m *Manager) backToStarted(mc model.Machine, details map[string]any, evs []model.Event) error {
	m.fault("suspend/failed-before-commit", mc.ID)
	_, err := m.commit(mc.ID, func(tx *store.Tx, rec *model.Machine) error {
		rec.State = model.StateStarted
		return tx.DeleteSnapshot(mc.ID)
	}, append([]model.Event{event("suspend", "failed", model.SourceFlyd, details)}, evs...)...)
	return err
}

// afterFailedSuspend runs the post_resume hook of an app whose pre_suspend
// hook ran but whose sandbox kept running: it was never checkpointed, so the
// generation file and the resume signal stay as they are.
func (m *Manager) afterFailedSuspend(ctx context.Context, f suspendFailure, details map[string]any) []model.Event {
	if f.pre == nil {
		return nil
	}
	details[hookPreSuspend] = f.pre.details()
	return m.postResume(ctx, f.mc, details)
}

// restoreUnsealed brings a just-checkpointed sandbox straight back from the
// image it wrote, used when only sealing failed. The image never left the
// daemon's hands and is deleted right after.
func (m *Manager) restoreUnsealed(ctx context.Context, mc model.Machine, dir string) error {
	spec, err := m.prepare(ctx, mc)
	if err == nil {
		err = m.rt.Restore(ctx, spec, dir)
	}
	if err != nil {
		return err
	}
	m.supervise(mc.ID)
	return nil
}

// joinFailKind is the error of a failed suspend: of kind, unless bringing
// the machine back failed too (err), which is internal.
func joinFailKind(kind model.Kind, msg string, err error) error {
	if err != nil {
		return model.Errorf(model.KindInternal, "%s; then: %v", msg, err)
	}
	return model.Errorf(kind, "%s; the machine is still started", msg)
}

// diskFull reports whether err says the disk is full: ENOSPC from this
// process, or in the output of the runtime (runsc writes the image itself).
func diskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || strings.Contains(err.Error(), "no space left on device")
}
