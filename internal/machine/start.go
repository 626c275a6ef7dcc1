package machine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/runtime"
	"github.com/torpor-dev/torpor/internal/snapshot"
	"github.com/torpor-dev/torpor/internal/store"
)

// Start starts a machine: a suspended one is resumed from its snapshot (or
// cold-started, with the reason in its events, when that is impossible); a
// created or stopped one is cold-started.
func (m *Manager) Start(ctx context.Context, app, id string) (model.StartResponse, error) {
	ctx, mc, end, err := m.begin(ctx, app, id)
	if err != nil {
		return model.StartResponse{}, err
	}
	defer end()
	resp := model.StartResponse{PreviousState: mc.State}
	switch mc.State {
	case model.StateSuspended:
		resp.FromSnapshot, err = m.resume(ctx, mc)
	case model.StateCreated, model.StateStopped:
		_, err = m.coldStart(ctx, mc, "")
	case model.StateStarted:
		return resp, model.Errorf(model.KindConflict, "machine %s is already started", id)
	default:
		return resp, model.Errorf(model.KindConflict, "machine %s is %s and cannot be started", id, mc.State)
	}
	return resp, err
}

// coldStart boots the machine from its config in a new boot generation,
// which invalidates every snapshot taken before (invariant 1). reason, if
// set, says why a resume fell back to it.
func (m *Manager) coldStart(ctx context.Context, mc model.Machine, reason string) (model.Machine, error) {
	begin := time.Now()
	mc, err := m.commit(mc.ID, func(tx *store.Tx, mc *model.Machine) error {
		mc.State = model.StateStarting
		mc.BootGeneration++
		mc.InstanceID = newID(8)
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
	spec, err := m.prepare(ctx, mc)
	if err != nil {
		return m.failStart(mc, "prepare sandbox", err)
	}
	m.fault("start/after-prepare", mc.ID)
	if err := m.rt.Boot(ctx, spec); err != nil {
		return m.failStart(mc, "boot", err)
	}
	m.supervise(mc.ID)
	m.fault("start/after-boot", mc.ID)
	details := map[string]any{"from_snapshot": false, "boot_generation": mc.BootGeneration}
	m.bootGeneration(ctx, mc, details)
	details["duration_ms"] = time.Since(begin).Milliseconds()
	typ := "start"
	if reason != "" {
		typ, details["reason"] = "resume", reason
	}
	mc, err = m.commit(mc.ID, setState(model.StateStarted), event(typ, "started", model.SourceOf(ctx), details))
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
	mc, err := m.commit(mc.ID, setState(model.StateStopped),
		event("start", "failed", model.SourceFlyd, map[string]any{"error": msg}))
	if err != nil {
		return mc, err
	}
	return mc, model.Errorf(model.KindInternal, "%s", msg)
}

// prepare readies everything a boot or restore needs: no stale sandbox,
// network, console, bundle directory.
func (m *Manager) prepare(ctx context.Context, mc model.Machine) (runtime.Spec, error) {
	if err := m.rt.Kill(ctx, sandboxID(mc.ID)); err != nil {
		return runtime.Spec{}, fmt.Errorf("remove stale sandbox: %w", err)
	}
	rootfs, err := m.rootfs(mc.Config.Image)
	if err != nil {
		return runtime.Spec{}, err
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
		RootFS:   rootfs,
		Args:     command(&mc.Config),
		Cwd:      mc.Config.Init.Workdir,
		Hostname: mc.ID,
		CPUs:     mc.Config.Guest.CPUs,
		MemoryMB: mc.Config.Guest.MemoryMB,
		Console:  m.consolePath(mc.ID),
	}
	if m.cfg.Network != nil {
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
	spec.Env = m.environ(mc)
	if spec.Mounts, err = m.etcFiles(mc); err != nil {
		return spec, err
	}
	api, err := m.listenGuestAPI(mc)
	spec.Mounts = append(spec.Mounts, api...)
	return spec, err
}

// environ is the process environment: config.env plus what Fly provides.
func (m *Manager) environ(mc model.Machine) []string {
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"FLY_MACHINE_ID=" + mc.ID,
		"FLY_APP_NAME=" + mc.App,
		"FLY_REGION=" + m.cfg.Region,
		"FLY_PRIVATE_IP=" + mc.PrivateIP,
		"FLY_IMAGE_REF=" + mc.Config.Image,
		"TORPOR_BOOT_GENERATION=" + strconv.FormatUint(mc.BootGeneration, 10),
	}
	keys := make([]string, 0, len(mc.Config.Env))
	for k := range mc.Config.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+mc.Config.Env[k])
	}
	return env
}

// resume restores a suspended machine from its snapshot, enforcing the
// snapshot invariants; when the snapshot cannot be used it cold-starts and
// records why. It reports whether the machine was resumed from the snapshot.
func (m *Manager) resume(ctx context.Context, mc model.Machine) (bool, error) {
	begin := time.Now()
	snap, dir, seal, err := m.claim(mc)
	if err != nil {
		m.log.Warn("resume falls back to a cold start", "machine", mc.ID, "reason", err)
		_, cerr := m.coldStart(ctx, mc, err.Error())
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
	spec, err := m.prepare(ctx, mc)
	prepared := time.Now()
	if err == nil {
		m.fault("resume/after-prepare", mc.ID)
		err = m.rt.Restore(ctx, spec, dir)
	}
	restored := time.Now()
	if err == nil {
		m.fault("resume/after-restore", mc.ID)
	}
	verr := <-verified
	waited := time.Since(restored)
	switch {
	case verr != nil:
		return false, m.abandonRestore(ctx, mc, snap, verr.Error())
	case err != nil:
		return false, m.abandonRestore(ctx, mc, snap, "restore failed: "+err.Error())
	}
	m.supervise(mc.ID)
	m.fault("resume/after-verify", mc.ID)
	m.discardRestoredImage(mc.ID, snap.Dir)
	details := map[string]any{"from_snapshot": true, "snapshot_id": snap.ID, "boot_generation": mc.BootGeneration,
		"restore_ms": time.Since(begin).Milliseconds(), "claim_ms": claimed.Sub(begin).Milliseconds(),
		"prepare_ms": prepared.Sub(claimed).Milliseconds(), "runtime_restore_ms": restored.Sub(prepared).Milliseconds(),
		"verify_ms": verifyTook.Milliseconds(), "verify_wait_ms": waited.Milliseconds()}
	// The machine stays starting until the app has been told it was
	// resumed (post_resume may have to make it ready, e.g. reload a model).
	evs := m.afterRestore(ctx, mc, snap, details)
	details["duration_ms"] = time.Since(begin).Milliseconds()
	_, err = m.commit(mc.ID, func(tx *store.Tx, mc *model.Machine) error {
		mc.State = model.StateStarted
		return tx.DeleteSnapshot(mc.ID)
	}, append([]model.Event{event("resume", "started", model.SourceOf(ctx), details)}, evs...)...)
	if err == nil {
		m.fault("resume/after-commit-started", mc.ID)
	}
	return true, err
}

// discardRestoredImage deletes the image a machine was just restored from
// without making the resume wait: deleting 75 MB took 15 ms here. The image
// is moved to the trash at once (so the machine's snapshot directory only
// ever holds images that may still be restored) and deleted from there in
// the background; recovery empties the trash. The claim already makes sure
// the image is never restored again.
func (m *Manager) discardRestoredImage(id, dir string) {
	claimed := snapshot.ClaimedDir(dir)
	trash := filepath.Join(m.trashDir(), id+"-"+filepath.Base(dir))
	if os.MkdirAll(m.trashDir(), 0o700) != nil || os.Rename(claimed, trash) != nil {
		snapshot.Remove(dir) // e.g. snapshots on another file system
		return
	}
	go os.RemoveAll(trash)
}

// abandonRestore throws away a restore that must not go on (the image
// failed its check, or the restore itself failed) and cold-starts the
// machine instead, giving reason.
func (m *Manager) abandonRestore(ctx context.Context, mc model.Machine, snap model.Snapshot, reason string) error {
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
	_, err := m.commit(mc.ID, func(tx *store.Tx, rec *model.Machine) error {
		rec.State = model.StateStarting
		s, ok, err := tx.Snapshot(mc.ID)
		if err != nil || !ok {
			return errors.Join(err, errNoSnapshot)
		}
		snap = s
		if s.State != model.SnapshotSealed {
			return fmt.Errorf("%w (state %s)", errUnusable, s.State)
		}
		s.State, s.ClaimedAt = model.SnapshotClaimed, time.Now().UTC()
		return tx.PutSnapshot(s)
	})
	switch {
	case errors.Is(err, errNoSnapshot):
		m.commit(mc.ID, setState(model.StateStarting))
		return snap, "", snapshot.Seal{}, errors.New("snapshot missing: no snapshot record")
	case errors.Is(err, errUnusable):
		m.commit(mc.ID, setState(model.StateStarting))
		return snap, "", snapshot.Seal{}, fmt.Errorf("snapshot already claimed or unsealed: %v", err)
	case err != nil:
		return snap, "", snapshot.Seal{}, err
	}
	m.fault("resume/after-commit-claim", mc.ID)
	dir, err := snapshot.Claim(snap.Dir)
	if err != nil {
		return snap, "", snapshot.Seal{}, err
	}
	m.fault("resume/after-claim", mc.ID)
	seal, err := snapshot.VerifySeal(dir, m.expectedSeal(mc, snap), snap.Checksum)
	if err != nil {
		snapshot.Remove(snap.Dir)
		return snap, "", seal, err
	}
	return snap, dir, seal, nil
}

var (
	errNoSnapshot = errors.New("no snapshot")
	errUnusable   = errors.New("snapshot not restorable")
)

// expectedSeal is the identity a snapshot of mc must carry to be restored
// here and now: this machine, this boot generation, this runtime, this host.
func (m *Manager) expectedSeal(mc model.Machine, snap model.Snapshot) snapshot.Seal {
	return snapshot.Seal{
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
	return snapshot.RemoveExcept(m.snapshotsDir(id), "", false)
}
