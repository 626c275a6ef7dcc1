package machine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/snapshot"
	"github.com/torpor-dev/torpor/internal/store"
)

// Suspend snapshots a started machine to disk and stops its sandbox. It is
// atomic from the user's view (invariant 4): the machine ends suspended with
// a sealed snapshot, or it stays started and an event says why.
func (m *Manager) Suspend(ctx context.Context, app, id string) error {
	unlock, err := m.lock(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	ctx, cancel := detach(ctx)
	defer cancel()
	mc, err := m.machine(app, id)
	if err != nil {
		return err
	}
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
	if err := os.MkdirAll(snap.Dir, 0o700); err != nil {
		return m.failSuspend(ctx, mc, snap, "create snapshot directory", err, true)
	}
	r := m.currentRun(mc.ID)
	m.endRun(mc.ID) // the sandbox's exit is ours from here on
	if err := m.rt.Checkpoint(ctx, sandboxID(mc.ID), snap.Dir); err != nil {
		return m.failSuspend(ctx, mc, snap, "checkpoint", err, m.stillRunning(r))
	}
	checkpointed := time.Since(begin)
	m.fault("after-checkpoint")
	seal, err := snapshot.Write(snap.Dir, m.expectedSeal(mc, snap))
	if err != nil {
		return m.failSuspend(ctx, mc, snap, "seal", err, false)
	}
	m.fault("after-seal")
	snap.State, snap.SizeBytes, snap.Checksum = model.SnapshotSealed, seal.SizeBytes, seal.Checksum()
	_, err = m.commit(mc.ID, func(tx *store.Tx, rec *model.Machine) error {
		rec.State = model.StateSuspended
		return tx.PutSnapshot(snap)
	}, event("suspend", "suspended", model.SourceOf(ctx), map[string]any{
		"snapshot_id": snap.ID, "size_bytes": snap.SizeBytes, "boot_generation": mc.BootGeneration,
		"checkpoint_ms": checkpointed.Milliseconds(), "duration_ms": time.Since(begin).Milliseconds(),
	}))
	return err
}

// stillRunning reports whether the sandbox of run r has not exited.
func (m *Manager) stillRunning(r *run) bool {
	if r == nil {
		return false
	}
	select {
	case <-r.done:
		return false
	case <-time.After(100 * time.Millisecond):
		return true
	}
}

// failSuspend undoes a suspend that could not complete, so the machine stays
// started. If the sandbox is no longer running (the checkpoint stopped it
// before the failure), the machine is brought back: from the image just
// written when it is whole, else by a cold start.
func (m *Manager) failSuspend(ctx context.Context, mc model.Machine, snap model.Snapshot, step string, cause error, running bool) error {
	msg := fmt.Sprintf("suspend failed (%s): %v", step, cause)
	m.log.Warn("suspend failed", "machine", mc.ID, "step", step, "err", cause)
	if running {
		m.supervise(mc.ID)
		snapshot.Remove(snap.Dir)
		_, err := m.commit(mc.ID, func(tx *store.Tx, rec *model.Machine) error {
			rec.State = model.StateStarted
			return tx.DeleteSnapshot(mc.ID)
		}, event("suspend", "failed", model.SourceFlyd, map[string]any{"error": msg, "machine_state": "started"}))
		return joinFail(msg, err)
	}
	restored := step == "seal" && m.restoreUnsealed(ctx, mc, snap.Dir) == nil
	snapshot.Remove(snap.Dir)
	if restored {
		_, err := m.commit(mc.ID, func(tx *store.Tx, rec *model.Machine) error {
			rec.State = model.StateStarted
			return tx.DeleteSnapshot(mc.ID)
		}, event("suspend", "failed", model.SourceFlyd, map[string]any{"error": msg, "machine_state": "started", "recovered": "restored from the unsealed image"}))
		return joinFail(msg, err)
	}
	m.commit(mc.ID, nil, event("suspend", "failed", model.SourceFlyd, map[string]any{"error": msg, "recovered": "cold start"}))
	_, err := m.coldStart(ctx, mc, "")
	return joinFail(msg, err)
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

func joinFail(msg string, err error) error {
	if err != nil {
		return model.Errorf(model.KindInternal, "%s; then: %v", msg, err)
	}
	return model.Errorf(model.KindInternal, "%s; the machine is still started", msg)
}
