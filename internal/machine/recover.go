package machine

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/runtime"
	"github.com/torpor-dev/torpor/internal/snapshot"
	"github.com/torpor-dev/torpor/internal/store"
)

// Recover reconciles every machine with what the runtime reports, after the
// daemon (re)started: running sandboxes are adopted, machines whose sandbox
// is gone are stopped, interrupted operations are resolved, and suspended
// machines stay suspended. A snapshot claimed before the crash is never
// restored (invariant 2).
func (m *Manager) Recover(ctx context.Context) error {
	var ms []model.Machine
	err := m.store.View(func(tx *store.Tx) error {
		var err error
		ms, err = tx.Machines("")
		return err
	})
	if err != nil {
		return err
	}
	// Images of resumed machines the dead daemon had not finished deleting.
	if err := os.RemoveAll(m.trashDir()); err != nil {
		m.log.Error("empty the trash", "dir", m.trashDir(), "err", err)
	}
	for _, mc := range ms {
		if mc.State == model.StateDestroyed {
			continue
		}
		if err := m.recoverMachine(ctx, mc); err != nil {
			m.log.Error("recover machine", "machine", mc.ID, "state", mc.State, "err", err)
		}
	}
	err = m.recoverPorts()
	m.kickWarm() // precreate for the suspended machines (warm.go)
	return err
}

func (m *Manager) recoverMachine(ctx context.Context, mc model.Machine) error {
	unlock, err := m.lock(model.WithSource(ctx, model.SourceFlyd), mc.ID)
	if err != nil {
		return err
	}
	defer unlock()
	return m.reconcileOrStop(ctx, mc)
}

// reconcileOrStop reconciles mc with its sandbox; a machine left in the
// middle of an operation that cannot be reconciled is stopped.
func (m *Manager) reconcileOrStop(ctx context.Context, mc model.Machine) error {
	err := m.reconcile(ctx, mc)
	// A destroying machine is not settled, but a destroy can always be retried.
	if err != nil && !mc.State.Settled() && mc.State != model.StateDestroying {
		// Never leave a machine in the middle of an operation nobody is
		// running any more (a sandbox can vanish while it is adopted, e.g.
		// when a checkpoint the dead daemon started completes): stop it.
		if serr := m.recoverStopped(ctx, mc, "recovery failed: "+err.Error()); serr != nil {
			return errors.Join(err, serr)
		}
	}
	return err
}

// reconcile brings one machine in line with its sandbox.
func (m *Manager) reconcile(ctx context.Context, mc model.Machine) error {
	status, err := m.rt.State(ctx, sandboxID(mc.ID))
	if err != nil {
		return err
	}
	running := status == runtime.StatusRunning
	switch mc.State {
	case model.StateStarted, model.StateStarting:
		if running {
			return m.adopt(ctx, mc)
		}
		return m.recoverStopped(ctx, mc, fmt.Sprintf("sandbox was %s when the daemon restarted", status))
	case model.StateStopping:
		return m.recoverStopped(ctx, mc, "stop interrupted by a daemon restart")
	case model.StateSuspending:
		if running {
			return m.adopt(ctx, mc)
		}
		return m.finishSuspend(ctx, mc)
	case model.StateSuspended:
		if status != runtime.StatusAbsent {
			m.rt.Kill(ctx, sandboxID(mc.ID))
		}
		return m.removeOrphanImages(mc.ID)
	case model.StateDestroying:
		return m.destroy(ctx, mc)
	default: // created, stopped
		if status != runtime.StatusAbsent {
			if err := m.rt.Kill(ctx, sandboxID(mc.ID)); err != nil {
				return err
			}
		}
		// A machine that is not suspended owns no snapshot image: one left
		// here is from a stop or update whose daemon died between
		// discarding the record and deleting the image.
		return m.discardSnapshotDirs(mc.ID)
	}
}

// adopt takes a running sandbox back under supervision. Any snapshot of the
// machine is discarded: it either was restored already or belongs to an
// interrupted suspend.
func (m *Manager) adopt(ctx context.Context, mc model.Machine) error {
	if err := m.ensureConsole(mc.ID); err != nil {
		return err
	}
	// A sandbox whose network or in-machine API cannot be taken back would
	// run on unreachable and unsupervised: stop it, saying why, rather
	// than report it started.
	if m.cfg.Network != nil {
		if err := m.cfg.Network.Adopt(ctx, mc.App, mc.ID); err != nil {
			return m.recoverStopped(ctx, mc, "its network could not be adopted: "+err.Error())
		}
	}
	if _, err := m.listenGuestAPI(mc); err != nil {
		return m.recoverStopped(ctx, mc, "its in-machine API could not be served again: "+err.Error())
	}
	if err := m.checkRestoredImage(mc); err != nil {
		return m.recoverStopped(ctx, mc, "restored from a snapshot that failed its check: "+err.Error())
	}
	if mc.State == model.StateStarting || mc.State == model.StateSuspending {
		// The daemon may have died with the app frozen for a checkpoint
		// or a clock check; continuing running processes is harmless.
		if err := m.rt.SignalAll(ctx, sandboxID(mc.ID), "SIGCONT"); err != nil {
			return err
		}
	}
	m.supervise(mc.ID)
	_, err := m.enter(mc.ID, model.StateStarted, deleteSnapshot,
		event(model.EventRecover, "started", model.SourceFlyd, &model.RecoverDetails{Adopted: true, PreviousState: mc.State}))
	if err != nil {
		return err
	}
	return m.discardSnapshotDirs(mc.ID)
}

// checkRestoredImage finishes the check of the image a starting machine's
// sandbox was restored from, if the daemon died before it had (resume checks
// the files while the restore runs and deletes the image once they pass).
func (m *Manager) checkRestoredImage(mc model.Machine) error {
	if mc.State != model.StateStarting {
		return nil
	}
	var snap model.Snapshot
	var ok bool
	err := m.store.View(func(tx *store.Tx) (err error) {
		snap, ok, err = tx.Snapshot(mc.ID)
		return err
	})
	if err != nil || !ok || snap.State != model.SnapshotClaimed {
		return err
	}
	dir := snapshot.ClaimedDir(snap.Dir)
	if _, err := os.Stat(dir); err != nil {
		return nil // checked and deleted, or never claimed on disk
	}
	return snapshot.Verify(dir, m.expectedSeal(mc, snap, snap.Image), snap.Checksum)
}

// recoverStopped cleans up a machine whose sandbox is gone and leaves it stopped.
func (m *Manager) recoverStopped(ctx context.Context, mc model.Machine, why string) error {
	if err := m.rt.Kill(ctx, sandboxID(mc.ID)); err != nil {
		return err
	}
	_, err := m.enter(mc.ID, model.StateStopped, deleteSnapshot,
		event(model.EventRecover, "stopped", model.SourceFlyd, &model.RecoverDetails{Reason: why, PreviousState: mc.State}))
	if err != nil {
		return err
	}
	return m.discardSnapshotDirs(mc.ID)
}

// finishSuspend resolves a suspend interrupted after the sandbox stopped: a
// complete, sealed image makes the machine suspended; anything less is
// discarded and the machine is stopped.
func (m *Manager) finishSuspend(ctx context.Context, mc model.Machine) error {
	var snap model.Snapshot
	var ok bool
	err := m.store.View(func(tx *store.Tx) error {
		var err error
		snap, ok, err = tx.Snapshot(mc.ID)
		return err
	})
	if err != nil {
		return err
	}
	if !ok || snap.State != model.SnapshotWriting {
		return m.recoverStopped(ctx, mc, "suspend interrupted by a daemon restart; no snapshot")
	}
	seal, err := snapshot.ReadSeal(snap.Dir)
	if err == nil {
		err = snapshot.Verify(snap.Dir, m.expectedSeal(mc, snap, snap.Image), seal.Checksum())
	}
	if err != nil {
		return m.recoverStopped(ctx, mc, "suspend interrupted by a daemon restart: "+err.Error())
	}
	snap.State, snap.SizeBytes, snap.Checksum = model.SnapshotSealed, seal.SizeBytes, seal.Checksum()
	repaired := repairing(ctx)
	_, err = m.enter(mc.ID, model.StateSuspended, putSnapshot(snap), event(model.EventSuspend, "suspended", model.SourceFlyd,
		&model.SuspendDetails{SnapshotID: snap.ID, SizeBytes: snap.SizeBytes, BootGeneration: snap.BootGeneration,
			CompletedAfterRestart: !repaired, Repaired: repaired}))
	return err
}

// removeOrphanImages deletes image directories of a suspended machine other
// than its current snapshot's (claimed or half-written leftovers).
func (m *Manager) removeOrphanImages(id string) error {
	var snap model.Snapshot
	var ok bool
	err := m.store.View(func(tx *store.Tx) error {
		var err error
		snap, ok, err = tx.Snapshot(id)
		return err
	})
	if err != nil {
		return err
	}
	return snapshot.RemoveExcept(m.snapshotsDir(id), snap.Dir, ok)
}
