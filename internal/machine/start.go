package machine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/runtime"
	"github.com/torpor-dev/torpor/internal/snapshot"
	"github.com/torpor-dev/torpor/internal/store"
)

// Start starts a machine: a suspended one is resumed from its snapshot (or
// cold-started, with the reason in its events, when that is impossible); a
// created or stopped one is cold-started; a suspending one has its suspend
// cancelled and goes on running from memory (interrupt.go).
func (m *Manager) Start(ctx context.Context, app, id string) (model.StartResponse, error) {
	interrupted := m.interruptSuspend(ctx, app, id)
	ctx, mc, end, err := m.begin(ctx, app, id)
	if err != nil {
		return model.StartResponse{}, err
	}
	defer end()
	m.endRestarts(id) // the user's word overrides the restart policy's
	resp := model.StartResponse{PreviousState: mc.State}
	if mc.State == model.StateSuspended || mc.State == model.StateCreated || mc.State == model.StateStopped {
		if err := m.checkVolumes(ctx, mc); err != nil {
			return resp, err
		}
	}
	switch mc.State {
	case model.StateSuspended:
		resp.FromSnapshot, err = m.resume(ctx, mc)
	case model.StateCreated, model.StateStopped:
		_, err = m.coldStart(ctx, mc, nil)
	case model.StateStarted:
		if interrupted { // the suspend this start cancelled left it running
			return model.StartResponse{PreviousState: model.StateSuspending}, nil
		}
		return resp, model.Errorf(model.KindConflict, "machine %s is already started", id)
	default:
		return resp, model.Errorf(model.KindConflict, "machine %s is %s and cannot be started", id, mc.State)
	}
	return resp, err
}

// coldStart boots the machine from its config in a new boot generation,
// which invalidates every snapshot taken before (invariant 1). fallback, if
// set, says why a resume fell back to it.
func (m *Manager) coldStart(ctx context.Context, mc model.Machine, fallback error) (model.Machine, error) {
	begin := time.Now()
	mc, err := m.enter(mc.ID, model.StateStarting, func(tx *store.Tx, mc *model.Machine) error {
		if err := m.admit(tx, mc); err != nil {
			return err
		}
		mc.BootGeneration++
		return tx.DeleteSnapshot(mc.ID)
	})
	if err != nil {
		return mc, err
	}
	m.fault("start/after-commit-starting", mc.ID)
	if err := m.discardSnapshotDirs(mc.ID); err != nil {
		return m.failStart(mc, "discard old snapshots", err)
	}
	m.fault("start/after-discard", mc.ID)
	if err := m.makeGuestRunDir(mc); err != nil {
		return m.failStart(mc, "write the generation file", err)
	}
	spec, err := m.prepare(ctx, mc, nil)
	if err != nil {
		return m.failStart(mc, "prepare sandbox", err)
	}
	m.fault("start/after-prepare", mc.ID)
	if err := m.rt.Boot(ctx, spec); err != nil {
		return m.failStart(mc, "boot", err)
	}
	m.supervise(mc.ID)
	m.fault("start/after-boot", mc.ID)
	details := &model.StartDetails{BootGeneration: mc.BootGeneration}
	details.DurationMS = time.Since(begin).Milliseconds()
	typ := model.EventStart
	if fallback != nil {
		typ, details.Reason, details.Fallback = model.EventResume, fallback.Error(), fallbackReason(fallback)
	}
	mc, err = m.enter(mc.ID, model.StateStarted, nil, event(typ, "started", model.SourceOf(ctx), details))
	if err == nil {
		m.fault("start/after-commit-started", mc.ID)
	}
	return mc, err
}

// failStart leaves a machine whose start failed stopped, and says why.
func (m *Manager) failStart(mc model.Machine, step string, cause error) (model.Machine, error) {
	m.endRun(mc.ID)
	m.rt.Kill(context.Background(), sandboxID(mc.ID))
	msg := fmt.Sprintf("start failed (%s): %v", step, cause)
	mc, err := m.enter(mc.ID, model.StateStopped, nil,
		event(model.EventStart, "failed", model.SourceFlyd, &model.StartDetails{BootGeneration: mc.BootGeneration, Error: msg}))
	if err != nil {
		return mc, err
	}
	return mc, model.Errorf(model.KindInternal, "%s", msg)
}

// prepare readies everything a boot or restore needs: no stale sandbox,
// network, console, bundle directory.
//
// With warm (the machine's precreated sandbox, warm.go), the sandbox is
// kept and the network is not attached again but adopted: the precreated
// sandbox has taken its namespace over.
func (m *Manager) prepare(ctx context.Context, mc model.Machine, warm *warmEntry) (runtime.Spec, error) {
	if warm == nil {
		if err := m.rt.Kill(ctx, sandboxID(mc.ID)); err != nil {
			return runtime.Spec{}, fmt.Errorf("remove stale sandbox: %w", err)
		}
	}
	img, err := m.imageOf(ctx, mc)
	if err != nil {
		return runtime.Spec{}, err
	}
	if err := os.MkdirAll(m.machineDir(mc.ID), 0o700); err != nil {
		return runtime.Spec{}, err
	}
	if err := m.recordBootedImage(mc.ID, img.identity); err != nil {
		return runtime.Spec{}, fmt.Errorf("record the image: %w", err)
	}
	if err := os.MkdirAll(m.bundleDir(mc.ID), 0o700); err != nil {
		return runtime.Spec{}, err
	}
	if err := m.ensureConsole(mc.ID); err != nil {
		return runtime.Spec{}, fmt.Errorf("console: %w", err)
	}
	spec := runtime.Spec{
		ID:       sandboxID(mc.ID),
		Bundle:   m.bundleDir(mc.ID),
		RootFS:   img.rootfs,
		Args:     processArgs(&mc.Config, img.config),
		Cwd:      workdir(&mc.Config, img.config),
		User:     img.user,
		Hostname: mc.ID,
		CPUs:     mc.Config.Guest.CPUs,
		MemoryMB: mc.Config.Guest.MemoryMB,
		Console:  m.consolePath(mc.ID),
	}
	if m.cfg.Network != nil && warm != nil {
		if err := m.cfg.Network.Adopt(ctx, mc.App, mc.ID); err != nil {
			return spec, fmt.Errorf("network: %w", err)
		}
		spec.NetNS = warm.spec.NetNS
	} else if m.cfg.Network != nil {
		ns, ip, err := m.cfg.Network.Attach(ctx, mc.App, mc.ID)
		if err != nil {
			return spec, fmt.Errorf("network: %w", err)
		}
		spec.NetNS = ns
		if mc.PrivateIP != ip.String() {
			if mc, err = m.commit(mc.ID, func(_ *store.Tx, rec *model.Machine) error {
				rec.PrivateIP = ip.String()
				return nil
			}); err != nil {
				return spec, err
			}
		}
	}
	spec.Env = m.environ(mc, img.config)
	if spec.Mounts, err = m.etcFiles(mc); err != nil {
		return spec, err
	}
	spec.Mounts = append(spec.Mounts, m.guestRunMount(mc)...)
	vols, err := m.volumeMounts(ctx, mc)
	if err != nil {
		return spec, err
	}
	spec.Mounts = append(spec.Mounts, vols...)
	api, err := m.listenGuestAPI(mc)
	spec.Mounts = append(spec.Mounts, api...)
	return spec, err
}

// environ is the process environment: the image's, what Fly provides,
// then config.env.
func (m *Manager) environ(mc model.Machine, img *model.ImageConfig) []string {
	return imageEnv(img, []string{
		"FLY_MACHINE_ID=" + mc.ID,
		"FLY_APP_NAME=" + mc.App,
		"FLY_REGION=" + m.cfg.Region,
		"FLY_PRIVATE_IP=" + mc.PrivateIP,
		"FLY_IMAGE_REF=" + imageRefEnv(mc),
		"TORPOR_BOOT_GENERATION=" + strconv.FormatUint(mc.BootGeneration, 10),
	}, mc.Config.Env)
}

// workdir is the process's working directory: init.workdir, else the
// image's, else "/" (the runtime's default).
func workdir(cfg *model.MachineConfig, img *model.ImageConfig) string {
	if cfg.Init.Workdir != "" || img == nil {
		return cfg.Init.Workdir
	}
	return img.WorkingDir
}

// resume restores a suspended machine from its snapshot, enforcing the
// snapshot invariants; when the snapshot cannot be used it cold-starts and
// records why. It reports whether the machine was resumed from the snapshot.
//
// Everything a restore needs that can fail for a while without anything
// being wrong with the snapshot (network, console, bundle, the runtime's
// binary, free space: prepare and runtime.Preparer) is readied before the
// snapshot is claimed, since a claimed snapshot is never restored again
// (invariant 2). Such a failure, or a claim the store refuses, leaves the
// machine suspended with its snapshot, and the start fails (503 runtime
// unavailable, 507 disk full) instead of cold-starting (issue 17's F6).
func (m *Manager) resume(ctx context.Context, mc model.Machine) (bool, error) {
	begin := time.Now()
	defer m.pauseFlush(mc.ID)()
	// A start the host cannot hold is refused before anything is readied
	// (the claim checks again, atomically).
	if err := m.store.View(func(tx *store.Tx) error { return m.admit(tx, &mc) }); err != nil {
		return false, err
	}
	spec, warm, err := m.prepareResume(ctx, mc)
	defer warm.release(ctx)
	if p, ok := m.rt.(runtime.Preparer); ok && err == nil {
		err = p.PrepareRestore(ctx, spec)
	}
	if err != nil {
		return false, m.resumePostponed(ctx, mc, "prepare", err)
	}
	prepared := time.Now()
	m.fault("resume/after-prepare", mc.ID)
	if fallback, err := m.claimInCluster(ctx, mc); err != nil || fallback != nil {
		if err != nil {
			return false, err
		}
		_, err = m.coldStart(ctx, mc, fallback)
		return false, err
	}
	snap, dir, seal, err := m.claim(mc)
	switch {
	case errors.Is(err, errAdmission):
		return false, err // the snapshot stays, for a start the host can hold
	case errors.Is(err, errClaimNotRecorded):
		return false, m.resumePostponed(ctx, mc, "claim the snapshot", err)
	case err != nil:
		m.log.Warn("resume falls back to a cold start", "machine", mc.ID, "reason", err)
		_, cerr := m.coldStart(ctx, mc, err)
		return false, cerr
	}
	claimed := time.Now()
	// The image files are checked while the sandbox is restored from them:
	// the app stays frozen until afterRestore, so nothing runs on what the
	// check has not passed yet, and a mismatch throws the sandbox away.
	verified := make(chan error, 1)
	var verifyTook time.Duration
	go func() {
		t := time.Now()
		err := snapshot.VerifyFiles(dir, seal)
		verifyTook = time.Since(t)
		verified <- err
	}()
	warm.used = true // the restore uses the precreated sandbox or deletes it
	err = m.rt.Restore(ctx, spec, dir)
	restored := time.Now()
	if err == nil {
		m.fault("resume/after-restore", mc.ID)
	}
	verr := <-verified
	waited := time.Since(restored)
	switch {
	case verr != nil:
		return false, m.abandonRestore(ctx, mc, snap, verr)
	case err != nil:
		return false, m.abandonRestore(ctx, mc, snap, fmt.Errorf("%w: %v", errRestoreFailed, err))
	}
	m.supervise(mc.ID)
	m.fault("resume/after-verify", mc.ID)
	deleteImage := m.discardRestoredImage(mc.ID, snap.Dir)
	defer deleteImage()
	details := &model.StartDetails{FromSnapshot: true, SnapshotID: snap.ID, BootGeneration: mc.BootGeneration,
		WarmSandbox: warm.hit, ResumePhases: &model.ResumePhases{
			RestoreMS: time.Since(begin).Milliseconds(), PrepareMS: prepared.Sub(begin).Milliseconds(),
			ClaimMS: claimed.Sub(prepared).Milliseconds(), RuntimeRestoreMS: restored.Sub(claimed).Milliseconds(),
			VerifyMS: verifyTook.Milliseconds(), VerifyWaitMS: waited.Milliseconds(),
		}}
	// The machine stays starting until the app has been told it was
	// resumed (post_resume may have to make it ready, e.g. reload a model).
	var evs []model.Event
	details.AppNotice, evs = m.afterRestore(ctx, mc, snap)
	details.DurationMS = time.Since(begin).Milliseconds()
	_, err = m.enter(mc.ID, model.StateStarted, deleteSnapshot,
		append([]model.Event{event(model.EventResume, "started", model.SourceOf(ctx), details)}, evs...)...)
	if err == nil {
		m.fault("resume/after-commit-started", mc.ID)
	}
	return true, err
}

// resumeWarm is what a resume found of its machine's precreated sandbox.
type resumeWarm struct {
	m    *Manager
	id   string
	hit  bool // the runtime will restore into a sandbox precreated for the spec
	used bool // the runtime's Restore ran (and used or deleted the sandbox)
	e    warmEntry
}

// prepareResume prepares the restore of mc (see prepare): into its
// precreated sandbox if it has one that the restore can use, else as
// without one, the precreated sandbox deleted first.
func (m *Manager) prepareResume(ctx context.Context, mc model.Machine) (runtime.Spec, *resumeWarm, error) {
	w := &resumeWarm{m: m, id: mc.ID}
	e, ok := m.takeWarm(mc.ID)
	if !ok {
		spec, err := m.prepare(ctx, mc, nil)
		return spec, w, err
	}
	pc := m.precreator()
	spec, err := m.prepare(ctx, mc, &e)
	if err == nil && reflect.DeepEqual(spec, e.spec) && pc.Precreated(spec) {
		w.hit, w.e = true, e
		return spec, w, nil
	}
	m.log.Info("the warm sandbox does not fit the resume; resuming without it", "machine", mc.ID, "err", err)
	if err := pc.DiscardPrecreated(ctx, sandboxID(mc.ID)); err != nil {
		m.log.Warn("delete a warm sandbox", "machine", mc.ID, "err", err)
	}
	spec, err = m.prepare(ctx, mc, nil)
	return spec, w, err
}

// release gives back the precreated sandbox of a resume that did not get
// to the restore: kept for the next start if the machine is still
// suspended (e.g. the start was postponed), deleted otherwise.
func (w *resumeWarm) release(ctx context.Context) {
	if !w.hit || w.used {
		return
	}
	var mc model.Machine
	err := w.m.store.View(func(tx *store.Tx) (err error) {
		mc, err = tx.Machine(w.id)
		return err
	})
	if err == nil && mc.State == model.StateSuspended {
		w.m.putWarm(w.id, w.e)
		return
	}
	if err := w.m.precreator().DiscardPrecreated(context.WithoutCancel(ctx), sandboxID(w.id)); err != nil {
		w.m.log.Warn("delete a warm sandbox", "machine", w.id, "err", err)
	}
}

// resumePostponed answers a resume that failed at step before its snapshot
// was claimed, for a reason that is not the snapshot's (cause): the machine
// stays suspended with its snapshot, an event says why, and the error says
// what to do: 503 when the runtime cannot run for now, 507 when the disk is
// full.
func (m *Manager) resumePostponed(ctx context.Context, mc model.Machine, step string, cause error) error {
	kind, why := model.KindInternal, cause.Error()
	switch {
	case diskFull(cause):
		kind, why = model.KindInsufficientStorage, "disk full (ENOSPC) in "+m.cfg.DataDir
	case errors.Is(cause, runtime.ErrUnavailable):
		kind = model.KindUnavailable
	}
	m.log.Warn("resume postponed; the snapshot is kept", "machine", mc.ID, "step", step, "err", cause)
	msg := fmt.Sprintf("resume failed (%s): %s; the machine stays suspended with its snapshot: start it again once that is fixed", step, why)
	m.commit(mc.ID, nil, event(model.EventResume, "failed", model.SourceOf(ctx),
		&model.StartDetails{BootGeneration: mc.BootGeneration, Error: msg}))
	return model.Errorf(kind, "%s", msg)
}

// discardRestoredImage deletes the image a machine was just restored from
// without making the resume wait: deleting 75 MB took 15 ms here. The image
// is moved to the trash at once (so the machine's snapshot directory only
// ever holds images that may still be restored) and deleted from there in
// the background once the resume is committed (the returned func starts
// it): freeing a 1 GiB image's blocks during the resume delayed the commit
// of the started state (its journal commit queued behind the deletion) by
// 60-100 ms. Recovery empties the trash. The claim already makes sure the
// image is never restored again.
func (m *Manager) discardRestoredImage(id, dir string) (deleteLater func()) {
	claimed := snapshot.ClaimedDir(dir)
	trash := filepath.Join(m.trashDir(), id+"-"+filepath.Base(dir))
	if os.MkdirAll(m.trashDir(), 0o700) != nil || os.Rename(claimed, trash) != nil {
		snapshot.Remove(dir) // e.g. snapshots on another file system
		return func() {}
	}
	return func() { go os.RemoveAll(trash) }
}

// abandonRestore throws away a restore that must not go on (the image
// failed its check, or the restore itself failed) and cold-starts the
// machine instead, giving reason.
func (m *Manager) abandonRestore(ctx context.Context, mc model.Machine, snap model.Snapshot, reason error) error {
	m.log.Warn("resume falls back to a cold start", "machine", mc.ID, "reason", reason)
	m.rt.Kill(context.Background(), sandboxID(mc.ID))
	snapshot.Remove(snap.Dir)
	_, err := m.coldStart(ctx, mc, reason)
	return err
}

// claim takes the machine's snapshot for restore, at most once (invariant
// 2): the claim is committed in the store, then the image directory is
// renamed, then its seal is verified (the files' checksums are the
// caller's to check, with the seal returned). Whatever happens after, the
// snapshot is never claimed again. The error says why the snapshot cannot
// be used (invariant 5); the machine is then left starting.
func (m *Manager) claim(mc model.Machine) (model.Snapshot, string, snapshot.Seal, error) {
	var snap model.Snapshot
	_, err := m.enter(mc.ID, model.StateStarting, func(tx *store.Tx, rec *model.Machine) error {
		if err := m.admit(tx, rec); err != nil {
			return err
		}
		if err := m.failure("store/claim", mc.ID); err != nil {
			return err
		}
		s, ok, err := tx.Snapshot(mc.ID)
		if err != nil || !ok {
			return errors.Join(err, errNoSnapshot)
		}
		snap = s
		if s.Reason != "" { // e.g. left behind by a move to another host
			return fmt.Errorf("%w: %s", errUnusable, s.Reason)
		}
		if s.State != model.SnapshotSealed {
			return fmt.Errorf("%w (state %s)", errUnusable, s.State)
		}
		s.State, s.ClaimedAt = model.SnapshotClaimed, time.Now().UTC()
		return tx.PutSnapshot(s)
	})
	switch {
	case errors.Is(err, errNoSnapshot):
		m.enter(mc.ID, model.StateStarting, nil)
		return snap, "", snapshot.Seal{}, fmt.Errorf("%w: no snapshot record", snapshot.ErrMissing)
	case errors.Is(err, errUnusable) && snap.Reason != "":
		m.enter(mc.ID, model.StateStarting, nil)
		return snap, "", snapshot.Seal{}, fmt.Errorf("%w here: %s", snapshot.ErrMissing, snap.Reason)
	case errors.Is(err, errUnusable):
		m.enter(mc.ID, model.StateStarting, nil)
		return snap, "", snapshot.Seal{}, fmt.Errorf("snapshot already claimed or unsealed: %w", err)
	case err != nil:
		return snap, "", snapshot.Seal{}, fmt.Errorf("%w: %w", errClaimNotRecorded, err)
	}
	m.fault("resume/after-commit-claim", mc.ID)
	dir, err := snapshot.Claim(snap.Dir)
	if err != nil {
		return snap, "", snapshot.Seal{}, err
	}
	m.fault("resume/after-claim", mc.ID)
	seal, err := snapshot.VerifySeal(dir, m.expectedSeal(mc, snap, m.imageIdentity(mc)), snap.Checksum)
	if err != nil {
		snapshot.Remove(snap.Dir)
		return snap, "", seal, err
	}
	return snap, dir, seal, nil
}

var (
	errNoSnapshot    = errors.New("no snapshot")
	errUnusable      = errors.New("snapshot not restorable")
	errRestoreFailed = errors.New("restore failed")
	// errClaimNotRecorded: the store refused the claim's write; the
	// snapshot is as it was.
	errClaimNotRecorded = errors.New("the claim could not be recorded")
)

// fallbackReason classifies why a resume cold-started instead.
func fallbackReason(err error) model.FallbackReason {
	switch {
	case errors.Is(err, snapshot.ErrMissing):
		return model.FallbackMissing
	case errors.Is(err, errUnusable), errors.Is(err, ErrClaimedElsewhere):
		return model.FallbackClaimed
	case errors.Is(err, snapshot.ErrStale):
		return model.FallbackStale
	case errors.Is(err, snapshot.ErrWrongRuntime):
		return model.FallbackRuntime
	case errors.Is(err, snapshot.ErrWrongHost):
		return model.FallbackHost
	case errors.Is(err, snapshot.ErrCorrupt):
		return model.FallbackCorrupt
	case errors.Is(err, errRestoreFailed):
		return model.FallbackRestoreFailed
	}
	return model.FallbackOther
}

// expectedSeal is the identity a snapshot of mc must carry to be restored
// here and now: this machine, this boot generation, this runtime, this
// host, this root filesystem (image, see imageIdentity).
func (m *Manager) expectedSeal(mc model.Machine, snap model.Snapshot, image string) snapshot.Seal {
	return snapshot.Seal{
		Image:          image,
		SnapshotID:     snap.ID,
		MachineID:      mc.ID,
		BootGeneration: mc.BootGeneration,
		Runtime:        m.rt.Name(),
		RuntimeVersion: m.rt.Version(),
		Host:           m.hostID,
	}
}

// discardSnapshotDirs deletes every snapshot image of the machine. It
// empties the snapshots directory rather than removing it, which works when
// the directory is a mount point (dedicated snapshot storage).
func (m *Manager) discardSnapshotDirs(id string) error {
	m.stopFlush(id)
	return snapshot.RemoveExcept(m.snapshotsDir(id), "", false)
}
