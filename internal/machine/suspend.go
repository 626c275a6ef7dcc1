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
		// The root filesystem the sandbox runs on, which a restore needs
		// again; its digest stays out of garbage collection with the record.
		Image:       m.bootedImage(mc),
		ImageDigest: mc.ImageRef.Digest,
		HostRunDir:  m.hasGuestRunDir(mc),
	}
	snap.Dir = filepath.Join(m.snapshotsDir(mc.ID), snap.ID)
	_, err := m.enter(mc.ID, model.StateSuspending, putSnapshot(snap))
	if err != nil {
		return err
	}
	run, done := m.trackSuspend(mc.ID) // a start may cancel it (interrupt.go)
	defer done()
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
	if run.cancelled() {
		return m.cancelSuspend(ctx, f, phaseBeforeCheckpoint, true)
	}
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
	if run.cancelled() {
		return m.cancelSuspend(ctx, f, phaseBeforeCheckpoint, false)
	}
	// From here a start waits for the suspend and resumes from its snapshot
	// (interrupt.go says why the save cannot be abandoned).
	if err := m.rt.Checkpoint(ctx, sandboxID(mc.ID), snap.Dir); err != nil {
		return m.failSuspend(ctx, f, "checkpoint", err, m.stillRunning(ctx, mc.ID, r))
	}
	checkpointed := time.Since(checkpointBegin)
	m.fault("suspend/after-checkpoint", mc.ID)
	// While the image is sealed, the volumes are written to disk: the
	// snapshot must not outlive the writes it remembers, and nothing writes
	// any more (the checkpoint stopped the sandbox).
	type synced struct {
		took time.Duration
		err  error
	}
	volSync := make(chan synced, 1)
	go func() {
		took, err := m.syncVolumes(ctx, mc)
		volSync <- synced{took: took, err: err}
	}()
	sealBegin := time.Now()
	seal, err := snapshot.Write(snap.Dir, m.expectedSeal(mc, snap, snap.Image))
	if err == nil && m.cfg.SyncSnapshots {
		err = snapshot.Flush(context.WithoutCancel(ctx), snap.Dir)
	}
	vs := <-volSync
	if err != nil {
		return m.failSuspend(ctx, f, "seal", err, false)
	}
	if vs.err != nil {
		return m.failSuspend(ctx, f, stepSyncVolumes, vs.err, false)
	}
	sealed := time.Since(sealBegin)
	m.fault("suspend/after-seal", mc.ID)
	snap.State, snap.SizeBytes, snap.Checksum = model.SnapshotSealed, seal.SizeBytes, seal.Checksum()
	details := &model.SuspendDetails{
		SnapshotID: snap.ID, SizeBytes: snap.SizeBytes, BootGeneration: mc.BootGeneration,
		CheckpointMS: checkpointed.Milliseconds(), SealMS: sealed.Milliseconds(), VolumesSyncMS: vs.took.Milliseconds(),
		DurationMS: time.Since(begin).Milliseconds(), PreSuspend: pre.result(),
	}
	_, err = m.enter(mc.ID, model.StateSuspended, func(tx *store.Tx, rec *model.Machine) error {
		if err := m.failure("store/commit-suspended", mc.ID); err != nil {
			return err
		}
		return tx.PutSnapshot(snap)
	}, event(model.EventSuspend, "suspended", model.SourceOf(ctx), details))
	if err != nil {
		// The sandbox is gone and the image sealed, but the machine is
		// still recorded suspending: settle it now, as recovery would.
		return m.repair(ctx, mc.ID, "record the suspend", err)
	}
	m.fault("suspend/after-commit-suspended", mc.ID)
	if !m.cfg.SyncSnapshots {
		m.flushLater(mc.ID, snap.Dir)
	}
	return nil
}

// stepSyncVolumes names the suspend step that writes the volumes to disk.
const stepSyncVolumes = "sync volumes"

// flushLater flushes machine id's sealed snapshot in dir to disk in the
// background, after the suspend has been reported (see
// Config.SyncSnapshots). stopFlush ends it early: a snapshot claimed or
// discarded needs no flush, and a resume right after a suspend should not
// share the disk with one.
func (m *Manager) flushLater(id, dir string) {
	ctx, cancel := context.WithCancel(context.Background())
	f := &flush{cancel: cancel}
	m.mu.Lock()
	if old := m.flushes[id]; old != nil {
		old.cancel()
	}
	m.flushes[id] = f
	m.mu.Unlock()
	go func() {
		defer cancel()
		err := snapshot.Flush(ctx, dir)
		if err != nil && !errors.Is(err, os.ErrNotExist) && ctx.Err() == nil {
			m.log.Warn("flushing snapshot to disk", "dir", dir, "err", err)
		}
		m.mu.Lock()
		if m.flushes[id] == f {
			delete(m.flushes, id)
		}
		m.mu.Unlock()
	}()
}

// flush is a background flush of a snapshot (flushLater).
type flush struct{ cancel context.CancelFunc }

// stopFlush ends the background flush of machine id's snapshot, if one
// runs (within a chunk: snapshot.Flush), and reports whether one did.
func (m *Manager) stopFlush(id string) bool {
	m.mu.Lock()
	f := m.flushes[id]
	delete(m.flushes, id)
	m.mu.Unlock()
	if f != nil {
		f.cancel()
	}
	return f != nil
}

// pauseFlush stops the background flush of machine id's snapshot while a
// resume reads it (its store commits would otherwise wait behind the
// flush's writes: claim_ms 61-72 ms instead of 1-4 ms for a 64 MiB
// machine woken right after its suspend). The returned func, deferred,
// flushes the snapshot again if the resume left it sealed (it did not
// claim it).
func (m *Manager) pauseFlush(id string) (resumeFlush func()) {
	if !m.stopFlush(id) {
		return func() {}
	}
	return func() {
		var snap model.Snapshot
		var ok bool
		err := m.store.View(func(tx *store.Tx) (err error) {
			snap, ok, err = tx.Snapshot(id)
			return err
		})
		if err == nil && ok && snap.State == model.SnapshotSealed {
			m.flushLater(id, snap.Dir)
		}
	}
}

// stillRunning reports whether the sandbox of run r has not exited: its
// supervisor has not seen it exit within a moment, and the runtime says it
// runs (the supervisor may take longer than that moment to notice a
// sandbox killed from outside). When the runtime cannot tell (runsc missing
// or failing), it is taken for running: a machine recorded stopped while
// its sandbox runs on would be unsupervised (issue 17's F8), while one
// recorded started whose sandbox is gone is stopped by its supervisor once
// the runtime answers again.
func (m *Manager) stillRunning(ctx context.Context, id string, r *run) bool {
	if r == nil {
		return false
	}
	select {
	case <-r.done:
		return false
	case <-time.After(100 * time.Millisecond):
	}
	alive, known := m.sandboxAlive(ctx, id)
	return alive || !known
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
	details := &model.SuspendDetails{Error: msg, MachineState: model.StateStarted, PreSuspend: f.pre.result()}
	if running {
		if m.currentRun(mc.ID) == nil { // else the freeze failed: its supervisor still watches it
			m.supervise(mc.ID)
		}
		snapshot.Remove(snap.Dir)
		details.AppNotice = &model.AppNotice{}
		m.thaw(ctx, mc, details.AppNotice)
		evs := m.afterFailedSuspend(ctx, f, details.AppNotice)
		return joinFail(msg, m.backToStarted(mc, details, evs))
	}
	// The image is whole when only sealing it or syncing the volumes failed.
	restored := (step == "seal" || step == stepSyncVolumes) && m.restoreUnsealed(ctx, mc, snap.Dir) == nil
	snapshot.Remove(snap.Dir)
	if restored {
		details.Recovered, details.BootGeneration = "restored from the unsealed image", mc.BootGeneration
		var evs []model.Event
		details.AppNotice, evs = m.afterRestore(ctx, mc, snap)
		return joinFail(msg, m.backToStarted(mc, details, evs))
	}
	m.commit(mc.ID, nil, event(model.EventSuspend, "failed", model.SourceFlyd,
		&model.SuspendDetails{Error: msg, Recovered: "cold start", PreSuspend: f.pre.result()}))
	_, err := m.coldStart(ctx, mc, nil)
	return joinFail(msg, err)
}

// backToStarted records a failed suspend whose machine runs again.
func (m *Manager) backToStarted(mc model.Machine, details *model.SuspendDetails, evs []model.Event) error {
	m.fault("suspend/failed-before-commit", mc.ID)
	_, err := m.enter(mc.ID, model.StateStarted, deleteSnapshot,
		append([]model.Event{event(model.EventSuspend, "failed", model.SourceFlyd, details)}, evs...)...)
	return err
}

// putSnapshot is a change that records the machine's snapshot s.
func putSnapshot(s model.Snapshot) change {
	return func(tx *store.Tx, _ *model.Machine) error { return tx.PutSnapshot(s) }
}

// afterFailedSuspend runs the post_resume hook of an app whose pre_suspend
// hook ran but whose sandbox kept running: it was never checkpointed, so the
// generation file and the resume signal stay as they are.
func (m *Manager) afterFailedSuspend(ctx context.Context, f suspendFailure, notice *model.AppNotice) []model.Event {
	if f.pre == nil {
		return nil
	}
	return m.postResume(ctx, f.mc, notice)
}

// restoreUnsealed brings a just-checkpointed sandbox straight back from the
// image it wrote, used when only sealing failed. The image never left the
// daemon's hands and is deleted right after.
func (m *Manager) restoreUnsealed(ctx context.Context, mc model.Machine, dir string) error {
	spec, err := m.prepare(ctx, mc, nil)
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
