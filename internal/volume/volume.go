package volume

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/torpor-dev/torpor/internal/identifiers"
	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/store"
)

// Config configures a Manager.
type Config struct {
	// Dir holds one directory per volume (DATA_DIR/volumes).
	Dir string
	// Region is every volume's region (default "local").
	Region string
	// Zone is every volume's zone (default: derived from the host's identity).
	Zone string
	// MaxSizeGB bounds size_gb (default 500, Fly's limit).
	MaxSizeGB int
	// SharedMounts makes Dir a shared mount (sharedmount.go), so that a
	// volume unmounted on the host is unmounted in the sandboxes' copies
	// of the host's mounts too. The daemon sets it; Close undoes it.
	SharedMounts bool
	Tools        Tools
	Logger       *slog.Logger
}

// opTimeout bounds the host work of one volume operation (mkfs, a copy).
const opTimeout = 10 * time.Minute

// Manager owns the host's volumes. It is safe for concurrent use.
type Manager struct {
	cfg   Config
	store *store.Store
	log   *slog.Logger

	mu    sync.Mutex
	locks map[string]*sync.Mutex // per volume: create, extend, destroy, mount
}

// New returns a Manager. Call Recover before serving requests.
func New(cfg Config, st *store.Store) (*Manager, error) {
	if cfg.Region == "" {
		cfg.Region = "local"
	}
	if cfg.Zone == "" {
		cfg.Zone = hostZone()
	}
	if cfg.MaxSizeGB == 0 {
		cfg.MaxSizeGB = DefaultMaxSizeGB
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if !filepath.IsAbs(cfg.Dir) {
		return nil, fmt.Errorf("volume: Dir %q must be an absolute path", cfg.Dir)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, store: st, log: cfg.Logger.With("component", "volume"), locks: map[string]*sync.Mutex{}}
	if cfg.SharedMounts {
		if err := shareMounts(cfg.Dir); err != nil {
			// Volumes work without it; an unmounted volume may then live
			// on in a sandbox started while it was mounted.
			m.log.Warn("volumes: cannot make the volumes directory a shared mount", "dir", cfg.Dir, "err", err)
		}
	}
	return m, nil
}

// Close undoes what New set up on the host: the shared mount of Dir, when
// no volume is mounted under it any more (volumes stay mounted across a
// restart of the daemon, and so does the shared mount then).
func (m *Manager) Close() {
	if m.cfg.SharedMounts {
		unshareMounts(m.cfg.Dir)
	}
}

// hostZone names this host's one zone: four hex digits, like Fly's zones,
// stable for the host.
func hostZone() string {
	id, err := os.ReadFile("/etc/machine-id")
	if err != nil {
		h, _ := os.Hostname()
		id = []byte(h)
	}
	sum := sha256.Sum256(id)
	return hex.EncodeToString(sum[:2])
}

// lock takes volume id's lock.
func (m *Manager) lock(id string) func() {
	m.mu.Lock()
	l, ok := m.locks[id]
	if !ok {
		l = &sync.Mutex{}
		m.locks[id] = l
	}
	m.mu.Unlock()
	l.Lock()
	return l.Unlock
}

func (m *Manager) dir(id string) string   { return filepath.Join(m.cfg.Dir, id) }
func (m *Manager) file(id string) string  { return filepath.Join(m.dir(id), "ext4.img") }
func (m *Manager) fsDir(id string) string { return filepath.Join(m.dir(id), "fs") }
func (m *Manager) remove(id string) error { return os.RemoveAll(m.dir(id)) }
func sizeBytes(gb int) int64              { return int64(gb) * gib }

// or returns *p, or def when p is nil.
func or[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// Create makes a new volume of app: reserves its file, formats it (or
// copies the source volume into it) and mounts it.
func (m *Manager) Create(ctx context.Context, app string, req model.CreateVolumeRequest) (model.Volume, error) {
	if err := m.checkCreate(&req); err != nil {
		return model.Volume{}, err
	}
	v := model.Volume{
		ID: identifiers.NewVolumeID(), Name: req.Name, App: app, State: model.VolumeCreating,
		SizeGB: or(req.SizeGB, DefaultSizeGB), FSSizeGB: or(req.SizeGB, DefaultSizeGB), Region: m.cfg.Region, Zone: m.cfg.Zone,
		CreatedAt: time.Now().UTC(), SnapshotRetention: or(req.SnapshotRetention, defaultSnapshotRetention),
		AutoBackupEnabled: or(req.AutoBackupEnabled, false), FSType: "ext4",
		HostDedicationID: req.HostDedicationID,
	}
	// The work runs to its end even if the client goes away: half-made
	// volumes are cleaned up either way, but only by this call.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	unlock := m.lock(v.ID)
	defer unlock()
	var src model.Volume
	err := m.store.Update(func(tx *store.Tx) error {
		if _, err := tx.App(app); err != nil {
			return err
		}
		if req.SourceVolumeID != "" {
			var err error
			if src, err = volumeOf(tx, app, req.SourceVolumeID); err != nil {
				return err
			}
			if err := forkable(src, &v, req.SizeGB != nil); err != nil {
				return err
			}
		}
		return tx.PutVolume(v)
	})
	if err != nil {
		return model.Volume{}, err
	}
	begin := time.Now()
	v, err = m.build(ctx, v, src)
	if err != nil {
		m.log.Warn("create volume failed", "volume", v.ID, "err", err)
		if rerr := errors.Join(unmount(m.fsDir(v.ID)), m.remove(v.ID)); rerr != nil {
			m.log.Error("clean up a volume that could not be created", "volume", v.ID, "err", rerr)
		}
		m.store.Update(func(tx *store.Tx) error { return tx.DeleteVolume(v.ID) })
		return model.Volume{}, hostError("create volume "+v.ID, err)
	}
	fsSize := v.FSSizeGB
	v, err = m.modify(v.ID, func(v *model.Volume) {
		v.State, v.HostStatus, v.FSSizeGB = model.VolumeCreated, statusOK, fsSize
	})
	if err != nil {
		return v, err
	}
	m.log.Info("volume created", "volume", v.ID, "app", app, "size_gb", v.SizeGB, "took", time.Since(begin).Round(time.Millisecond))
	return m.withUsage(v), nil
}

// forkable checks that src can be copied into the new volume v and sizes
// v after it when the request set no size.
func forkable(src model.Volume, v *model.Volume, sized bool) error {
	if src.State != model.VolumeCreated {
		return model.Errorf(model.KindConflict, "source_volume_id: volume %s is %s", src.ID, src.State)
	}
	if !sized {
		v.SizeGB = src.SizeGB
	}
	v.FSSizeGB = src.FSSizeGB
	if v.SizeGB < src.SizeGB {
		return invalid("size_gb (%d) must be at least the size of source volume %s (%d GB)", v.SizeGB, src.ID, src.SizeGB)
	}
	return nil
}

// Host statuses of a volume.
const (
	statusOK    = "ok"
	statusError = "error"
)

// build makes the volume's files and mounts it: a fresh ext4 filesystem,
// or a copy of src taken while src's filesystem is frozen (so the copy is
// consistent, as after a clean unmount, while a machine keeps using src).
func (m *Manager) build(ctx context.Context, v, src model.Volume) (model.Volume, error) {
	if err := os.MkdirAll(m.fsDir(v.ID), 0o700); err != nil {
		return v, err
	}
	if src.ID == "" {
		if err := allocate(m.file(v.ID), sizeBytes(v.SizeGB)); err != nil {
			return v, err
		}
		if err := m.cfg.Tools.mkfsExt4(ctx, m.file(v.ID), v.Name); err != nil {
			return v, err
		}
		return v, mount(m.file(v.ID), m.fsDir(v.ID))
	}
	if err := m.copyFrom(ctx, src, v); err != nil {
		return v, err
	}
	if err := mount(m.file(v.ID), m.fsDir(v.ID)); err != nil {
		return v, err
	}
	return m.growFS(ctx, v)
}

// growFS grows v's mounted filesystem to fill its (grown) backing file,
// if it does not yet: online when the host allows it, else unmounted,
// which is only possible while no machine runs with it (errInUse). The
// growth is recorded in v.FSSizeGB. Call with v's lock held.
func (m *Manager) growFS(ctx context.Context, v model.Volume) (model.Volume, error) {
	if v.FSSizeGB >= v.SizeGB {
		return v, nil
	}
	err := growOnline(m.fsDir(v.ID), sizeBytes(v.SizeGB))
	if errors.Is(err, errNoOnlineGrow) {
		err = m.cfg.Tools.growOffline(ctx, m.file(v.ID), m.fsDir(v.ID))
	}
	if err != nil {
		return v, err
	}
	if v, err = m.modify(v.ID, func(v *model.Volume) { v.FSSizeGB = v.SizeGB }); err != nil {
		return v, err
	}
	m.log.Info("volume's filesystem grown", "volume", v.ID, "size_gb", v.SizeGB)
	return v, nil
}

// copyFrom fills the new volume v's file with src's filesystem.
func (m *Manager) copyFrom(ctx context.Context, src, v model.Volume) error {
	unlock := m.lock(src.ID)
	defer unlock()
	if _, err := m.mountLocked(ctx, src); err != nil {
		return fmt.Errorf("source volume %s: %w", src.ID, err)
	}
	if err := allocate(m.file(v.ID), sizeBytes(v.SizeGB)); err != nil {
		return err
	}
	if err := os.Truncate(m.file(v.ID), sizeBytes(src.SizeGB)); err != nil {
		return err
	}
	err := frozen(m.fsDir(src.ID), func() error { return copyData(m.file(src.ID), m.file(v.ID)) })
	if err != nil {
		return err
	}
	return grow(m.file(v.ID), sizeBytes(v.SizeGB))
}

// hostError classifies an error of the host's side of a volume operation:
// a full host disk is KindInsufficientStorage, anything else internal.
func hostError(op string, err error) error {
	if model.KindOf(err) != model.KindInternal {
		return err
	}
	if isNoSpace(err) {
		return model.Wrap(model.KindInsufficientStorage, err, op+": the host's disk has no room for it")
	}
	return model.Wrap(model.KindInternal, err, op)
}

// volumeOf reads volume id of app, hiding other apps' volumes.
func volumeOf(tx *store.Tx, app, id string) (model.Volume, error) {
	v, err := tx.Volume(id)
	if err == nil && v.App != app {
		err = model.Errorf(model.KindNotFound, "volume %q not found in app %q", id, app)
	}
	return v, err
}

// load reads volume id of app.
func (m *Manager) load(app, id string) (model.Volume, error) {
	var v model.Volume
	err := m.store.View(func(tx *store.Tx) error {
		var err error
		v, err = volumeOf(tx, app, id)
		return err
	})
	return v, err
}

// modify changes the stored record of volume id with fn and returns it as
// stored. Every change goes through the current record: machines attach
// and detach volumes in their own transactions, whatever a volume
// operation holds in hand.
func (m *Manager) modify(id string, fn func(*model.Volume)) (model.Volume, error) {
	var v model.Volume
	err := m.store.Update(func(tx *store.Tx) error {
		var err error
		if v, err = tx.Volume(id); err != nil {
			return err
		}
		fn(&v)
		return tx.PutVolume(v)
	})
	return v, err
}

// Get returns a volume of app with its usage.
func (m *Manager) Get(ctx context.Context, app, id string) (model.Volume, error) {
	v, err := m.load(app, id)
	if err != nil {
		return v, err
	}
	return m.withUsage(v), nil
}

// List returns the volumes of app with their usage.
func (m *Manager) List(ctx context.Context, app string) ([]model.Volume, error) {
	var vs []model.Volume
	err := m.store.View(func(tx *store.Tx) error {
		if _, err := tx.App(app); err != nil {
			return err
		}
		var err error
		vs, err = tx.Volumes(app)
		return err
	})
	for i := range vs {
		vs[i] = m.withUsage(vs[i])
	}
	if vs == nil {
		vs = []model.Volume{}
	}
	return vs, err
}

// withUsage fills in v's usage from its mounted filesystem.
func (m *Manager) withUsage(v model.Volume) model.Volume {
	if dev, err := mountDevice(m.fsDir(v.ID)); err != nil || dev == 0 {
		return v
	}
	if u, err := statUsage(m.fsDir(v.ID)); err == nil {
		v.BlockSize, v.Blocks, v.BlocksFree, v.BlocksAvail = u.blockSize, u.blocks, u.blocksFree, u.blocksAvail
	}
	return v
}

// Update changes a volume's settings (snapshot_retention, auto_backup_enabled).
func (m *Manager) Update(ctx context.Context, app, id string, req model.UpdateVolumeRequest) (model.Volume, error) {
	if err := checkUpdate(&req); err != nil {
		return model.Volume{}, err
	}
	var v model.Volume
	err := m.store.Update(func(tx *store.Tx) error {
		var err error
		if v, err = volumeOf(tx, app, id); err != nil {
			return err
		}
		if req.SnapshotRetention != nil {
			v.SnapshotRetention = *req.SnapshotRetention
		}
		if req.AutoBackupEnabled != nil {
			v.AutoBackupEnabled = *req.AutoBackupEnabled
		}
		return tx.PutVolume(v)
	})
	if err != nil {
		return v, err
	}
	return m.withUsage(v), nil
}

// Extend grows a volume to req.SizeGB, online: a machine using it sees the
// new size at once. Volumes never shrink.
func (m *Manager) Extend(ctx context.Context, app, id string, req model.ExtendVolumeRequest) (model.ExtendVolumeResponse, error) {
	unlock := m.lock(id)
	defer unlock()
	v, err := m.load(app, id)
	if err != nil {
		return model.ExtendVolumeResponse{}, err
	}
	switch {
	case req.SizeGB <= v.SizeGB:
		return model.ExtendVolumeResponse{}, invalid("size_gb must be larger than the volume's size of %d GB (volumes only grow), got %d", v.SizeGB, req.SizeGB)
	case req.SizeGB > m.cfg.MaxSizeGB:
		return model.ExtendVolumeResponse{}, invalid("size_gb must be at most %d, got %d", m.cfg.MaxSizeGB, req.SizeGB)
	case v.State != model.VolumeCreated:
		return model.ExtendVolumeResponse{}, model.Errorf(model.KindConflict, "volume %s is %s and cannot be extended now", id, v.State)
	}
	if v, err = m.mountLocked(ctx, v); err != nil {
		return model.ExtendVolumeResponse{}, err
	}
	// The backing file grows first (a crash after it leaves an extend that
	// recovery finishes), then the filesystem.
	if v, err = m.modify(id, func(v *model.Volume) { v.State = model.VolumeExtending }); err != nil {
		return model.ExtendVolumeResponse{}, err
	}
	err = grow(m.file(id), sizeBytes(req.SizeGB))
	grown := err == nil
	v, perr := m.modify(id, func(v *model.Volume) {
		v.State = model.VolumeCreated
		if grown {
			v.SizeGB = req.SizeGB
		}
	})
	if err == nil {
		err = perr
	}
	op := fmt.Sprintf("extend volume %s to %d GB", id, req.SizeGB)
	if err != nil {
		return model.ExtendVolumeResponse{}, hostError(op, err)
	}
	v, err = m.growFS(ctx, v)
	resp := model.ExtendVolumeResponse{NeedsRestart: errors.Is(err, errInUse)}
	if err != nil && !resp.NeedsRestart {
		return resp, hostError(op+" (the filesystem grows when the volume is next mounted)", err)
	}
	m.log.Info("volume extended", "volume", id, "size_gb", v.SizeGB, "needs_restart", resp.NeedsRestart)
	resp.Volume = m.withUsage(v)
	return resp, nil
}

// Destroy removes a volume and its data. A volume a machine is attached to
// is not destroyed: destroy the machine (which detaches it) or update its
// config.mounts first.
func (m *Manager) Destroy(ctx context.Context, app, id string) (model.Volume, error) {
	unlock := m.lock(id)
	defer unlock()
	var v model.Volume
	err := m.store.Update(func(tx *store.Tx) error {
		var err error
		if v, err = volumeOf(tx, app, id); err != nil {
			return err
		}
		if v.State == model.VolumeCreating {
			return model.Errorf(model.KindConflict, "volume %s is still being created", id)
		}
		if v.Attached() {
			return model.Errorf(model.KindConflict, "volume %s is attached to machine %s; destroy the machine or remove the volume from its config.mounts first",
				id, *v.AttachedMachineID)
		}
		v.State = model.VolumeDestroying
		return tx.PutVolume(v)
	})
	if err != nil {
		return v, err
	}
	if err := m.destroyFiles(v); err != nil {
		return v, err
	}
	v.State = model.VolumeDestroyed
	m.log.Info("volume destroyed", "volume", id, "app", app)
	return v, nil
}

// destroyFiles unmounts a volume that is being destroyed, deletes its
// files and then its record.
func (m *Manager) destroyFiles(v model.Volume) error {
	if err := unmount(m.fsDir(v.ID)); err != nil {
		return model.Errorf(model.KindInternal, "destroy volume %s: %v (it stays in state %s; retry the destroy)", v.ID, err, v.State)
	}
	if err := m.remove(v.ID); err != nil {
		return model.Errorf(model.KindInternal, "destroy volume %s: %v", v.ID, err)
	}
	return m.store.Update(func(tx *store.Tx) error { return tx.DeleteVolume(v.ID) })
}

// Prepare readies volume id of app for machine machineID to boot or
// restore with, and returns the host directory to bind into its sandbox.
// The volume must be attached to the machine. An unmounted volume is
// checked and mounted; a volume that cannot be (its backing file missing,
// its filesystem corrupt) is an error that says so, and is recorded on the
// volume.
func (m *Manager) Prepare(ctx context.Context, app, machineID, id string) (string, error) {
	unlock := m.lock(id)
	defer unlock()
	v, err := m.load(app, id)
	if err != nil {
		return "", err
	}
	if !v.Attached() || *v.AttachedMachineID != machineID {
		return "", model.Errorf(model.KindConflict, "volume %s is not attached to machine %s", id, machineID)
	}
	if v, err = m.mountLocked(ctx, v); err != nil {
		return "", err
	}
	// A pending grow needs the filesystem unmounted everywhere. Any sandbox
	// of the host that is being created (by this daemon or another) holds
	// a copy of the host's mounts until it has pivoted into its root, so
	// "in use" is usually a moment's state: try again for a little while.
	_, err = m.growFS(ctx, v)
	for try := 0; errors.Is(err, errInUse) && try < growInUseTries && ctx.Err() == nil; try++ {
		time.Sleep(growInUsePause)
		_, err = m.growFS(ctx, v)
	}
	if err != nil {
		// The machine starts with the filesystem it had; the next start retries.
		m.log.Warn("grow volume's filesystem before a start", "volume", id, "err", err)
	}
	return m.fsDir(id), nil
}

// How long Prepare waits for a filesystem to grow that is briefly held by
// another mount namespace (about 2 s in all).
const (
	growInUseTries = 10
	growInUsePause = 200 * time.Millisecond
)

// Sync writes everything written to the volume so far to disk: after it,
// a crash of the host loses none of it. The machine lifecycle calls it
// once a sandbox using the volume has been checkpointed or has stopped.
func (m *Manager) Sync(ctx context.Context, id string) error {
	dev, err := mountDevice(m.fsDir(id))
	if err != nil || dev == 0 {
		return err
	}
	if err := syncFS(m.fsDir(id)); err != nil {
		return fmt.Errorf("sync volume %s: %w", id, err)
	}
	return nil
}

// mountLocked makes sure v's filesystem is mounted at its directory,
// checking it first if it was not, and records on v whether that worked.
// It returns v as recorded. Call with v's lock held.
func (m *Manager) mountLocked(ctx context.Context, v model.Volume) (model.Volume, error) {
	err := m.ensureMounted(ctx, v)
	status, msg := statusOK, ""
	if err != nil {
		status, msg = statusError, err.Error()
	}
	if v.HostStatus != status || v.Error != msg {
		cur, uerr := m.modify(v.ID, func(v *model.Volume) { v.HostStatus, v.Error = status, msg })
		if uerr != nil {
			m.log.Warn("record volume status", "volume", v.ID, "err", uerr)
		} else {
			v = cur
		}
	}
	if err != nil {
		return v, model.Wrap(model.KindUnavailable, err, fmt.Sprintf("volume %s (%s) cannot be mounted", v.ID, v.Name))
	}
	return v, nil
}

func (m *Manager) ensureMounted(ctx context.Context, v model.Volume) error {
	file, dir := m.file(v.ID), m.fsDir(v.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ok, err := mountedFrom(dir, file)
	if err != nil || ok {
		return err
	}
	st, err := os.Stat(file)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("its backing file %s is missing", file)
	case err != nil:
		return err
	case st.Size() < sizeBytes(v.SizeGB):
		return fmt.Errorf("its backing file %s is %d bytes, smaller than the volume's %d GB (truncated?)", file, st.Size(), v.SizeGB)
	}
	if magic, err := hasExt4Magic(file); err != nil {
		return err
	} else if !magic {
		return fmt.Errorf("its backing file %s holds no ext4 filesystem (the superblock is corrupt)", file)
	}
	begin := time.Now()
	if err := m.cfg.Tools.check(ctx, file); err != nil {
		return fmt.Errorf("its filesystem is damaged (%v); repair it with e2fsck -f %s", err, file)
	}
	if err := mount(file, dir); err != nil {
		return err
	}
	m.log.Info("volume mounted", "volume", v.ID, "took", time.Since(begin).Round(time.Millisecond))
	return nil
}

// Recover resolves what a daemon that stopped or crashed left: volumes it
// was creating or destroying are removed, an interrupted extend is
// finished, and every volume is mounted (checked first if it was not
// mounted, as after a reboot). A volume that cannot be mounted is logged
// and recorded; machines using it will not start.
func (m *Manager) Recover(ctx context.Context) error {
	var vs []model.Volume
	if err := m.store.View(func(tx *store.Tx) (err error) { vs, err = tx.Volumes(""); return err }); err != nil {
		return err
	}
	for _, v := range vs {
		if err := m.recoverVolume(ctx, v); err != nil {
			m.log.Error("recover volume", "volume", v.ID, "state", v.State, "err", err)
		}
	}
	return nil
}

func (m *Manager) recoverVolume(ctx context.Context, v model.Volume) error {
	unlock := m.lock(v.ID)
	defer unlock()
	switch v.State {
	case model.VolumeCreating, model.VolumeDestroying:
		return m.destroyFiles(v)
	case model.VolumeExtending:
		// The backing file grows first: its size is the truth.
		st, err := os.Stat(m.file(v.ID))
		if err != nil {
			return err
		}
		if v, err = m.modify(v.ID, func(v *model.Volume) {
			v.State, v.SizeGB = model.VolumeCreated, max(v.SizeGB, int(st.Size()/gib))
		}); err != nil {
			return err
		}
	}
	v, err := m.mountLocked(ctx, v)
	if err != nil {
		return err
	}
	// A growth that waited for its machine to restart; a machine adopted
	// running still holds it (errInUse): it grows at its next start.
	if _, err := m.growFS(ctx, v); err != nil && !errors.Is(err, errInUse) {
		return err
	}
	return nil
}
