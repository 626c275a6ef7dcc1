package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/torpor-dev/torpor/internal/identifiers"
	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/store"
)

// These tests make real volumes: sparse-free ext4 files on loop devices,
// mounted on this host. They need root and loop devices; without them they
// are skipped, unless TORPOR_INTEGRATION=1 makes that a failure (as in CI).

type rig struct {
	t   *testing.T
	m   *Manager
	st  *store.Store
	dir string
}

func newRig(t *testing.T) *rig {
	t.Helper()
	if why := missing(); why != "" {
		if os.Getenv("TORPOR_INTEGRATION") == "1" {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "torpor.db"))
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, st: st, dir: filepath.Join(dir, "volumes")}
	r.m = r.manager()
	if err := st.Update(func(tx *store.Tx) error { return tx.CreateApp(model.App{Name: "app"}) }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		entries, _ := os.ReadDir(r.dir)
		for _, e := range entries {
			unix.Unmount(filepath.Join(r.dir, e.Name(), "fs"), unix.MNT_DETACH)
		}
		r.m.Close() // the shared bind mount of r.dir
		st.Close()
	})
	return r
}

func missing() string {
	if os.Geteuid() != 0 {
		return "not root"
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		return "no loop devices (/dev/loop-control)"
	}
	return ""
}

// manager is a new Manager on the rig's directory, as after a daemon restart.
func (r *rig) manager() *Manager {
	m, err := New(Config{Dir: r.dir, SharedMounts: true}, r.st)
	if err != nil {
		r.t.Fatal(err)
	}
	return m
}

func (r *rig) create(name string, sizeGB int) model.Volume {
	r.t.Helper()
	v, err := r.m.Create(context.Background(), "app", model.CreateVolumeRequest{Name: name, SizeGB: &sizeGB})
	if err != nil {
		r.t.Fatal(err)
	}
	return v
}

// fsBytes is the volume's filesystem size as statfs reports it.
func fsBytes(v model.Volume) int64 { return int64(v.Blocks) * v.BlockSize }

func TestCreateWriteExtendDestroy(t *testing.T) {
	r := newRig(t)
	begin := time.Now()
	v := r.create("data", 1)
	t.Logf("create 1 GB: %s", time.Since(begin).Round(time.Millisecond))
	if v.State != model.VolumeCreated || v.HostStatus != "ok" || v.FSType != "ext4" || !strings.HasPrefix(v.ID, "vol_") || len(v.ID) != 20 {
		t.Fatalf("created volume = %+v", v)
	}
	if b := fsBytes(v); b < 9*gib/10 || b > gib || v.BlocksAvail == 0 || v.BlocksAvail > v.BlocksFree {
		t.Fatalf("usage of a 1 GB volume: %d bytes, free %d, avail %d", b, v.BlocksFree, v.BlocksAvail)
	}
	var st unix.Stat_t
	if err := unix.Stat(r.m.file(v.ID), &st); err != nil || st.Blocks*512 < gib {
		t.Fatalf("backing file has %d bytes reserved, want 1 GiB (%v)", st.Blocks*512, err)
	}
	data := filepath.Join(r.m.fsDir(v.ID), "hello")
	if err := os.WriteFile(data, []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}

	resp, err := r.m.Extend(context.Background(), "app", v.ID, model.ExtendVolumeRequest{SizeGB: 2})
	if err != nil {
		t.Fatal(err)
	}
	if resp.NeedsRestart || resp.Volume.SizeGB != 2 || fsBytes(resp.Volume) < 19*gib/10 {
		t.Fatalf("extended to 2 GB: %+v (%d bytes)", resp, fsBytes(resp.Volume))
	}
	if got, err := os.ReadFile(data); err != nil || string(got) != "kept" {
		t.Fatalf("data after extend: %q, %v", got, err)
	}
	if _, err := r.m.Extend(context.Background(), "app", v.ID, model.ExtendVolumeRequest{SizeGB: 2}); model.KindOf(err) != model.KindInvalid || !strings.Contains(err.Error(), "size_gb") {
		t.Fatalf("extend to the same size: %v, want an invalid size_gb", err)
	}

	if _, err := r.m.Get(context.Background(), "other", v.ID); !model.IsNotFound(err) {
		t.Fatalf("volume seen from another app: %v", err)
	}
	got, err := r.m.Destroy(context.Background(), "app", v.ID)
	if err != nil || got.State != model.VolumeDestroyed {
		t.Fatalf("destroy: %+v, %v", got, err)
	}
	if _, err := os.Stat(r.m.dir(v.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("volume directory left after destroy: %v", err)
	}
	if _, err := r.m.Get(context.Background(), "app", v.ID); !model.IsNotFound(err) {
		t.Fatalf("volume record left after destroy: %v", err)
	}
}

func TestAttachOneMachineAtATime(t *testing.T) {
	r := newRig(t)
	v := r.create("db", 1)
	attach := func(machine string, mounts ...model.Mount) error {
		return r.st.Update(func(tx *store.Tx) error { return Attach(tx, "app", machine, mounts) })
	}
	mt := model.Mount{Volume: v.ID, Path: "/data"}
	if err := attach("m1", mt); err != nil {
		t.Fatal(err)
	}
	if err := attach("m1", mt); err != nil {
		t.Fatalf("the same machine attaching again (an update): %v", err)
	}
	err := attach("m2", mt)
	if model.KindOf(err) != model.KindConflict || !strings.Contains(err.Error(), v.ID) || !strings.Contains(err.Error(), "m1") {
		t.Fatalf("second machine: %v, want a conflict naming %s and m1", err, v.ID)
	}
	if _, err := r.m.Destroy(context.Background(), "app", v.ID); model.KindOf(err) != model.KindConflict || !strings.Contains(err.Error(), "attached") {
		t.Fatalf("destroy of an attached volume: %v, want a conflict", err)
	}
	if _, err := r.m.Prepare(context.Background(), "app", "m2", v.ID); model.KindOf(err) != model.KindConflict {
		t.Fatalf("prepare for a machine the volume is not attached to: %v", err)
	}
	path, err := r.m.Prepare(context.Background(), "app", "m1", v.ID)
	if err != nil || path != r.m.fsDir(v.ID) {
		t.Fatalf("prepare: %q, %v", path, err)
	}
	if err := attach("m1", model.Mount{Volume: "vol_nonexistent00000", Path: "/data"}); model.KindOf(err) != model.KindInvalid || !strings.Contains(err.Error(), "config.mounts[0].volume") {
		t.Fatalf("unknown volume: %v", err)
	}
	if err := r.st.Update(func(tx *store.Tx) error { return Detach(tx, "app", "m1") }); err != nil {
		t.Fatal(err)
	}
	if err := attach("m2", mt); err != nil {
		t.Fatalf("attach after the first machine let go: %v", err)
	}
	if err := attach("m2"); err != nil { // config without the mount: released
		t.Fatal(err)
	}
	if _, err := r.m.Destroy(context.Background(), "app", v.ID); err != nil {
		t.Fatalf("destroy of a detached volume: %v", err)
	}
}

// TestSharedMounts checks that the volumes directory is a shared mount
// while the Manager is open, so that an unmount reaches the sandboxes'
// copies of the host's mounts (sharedmount.go), and that Close removes it
// once no volume is mounted.
func TestSharedMounts(t *testing.T) {
	r := newRig(t)
	v := r.create("v", 1)
	if !sharedMount(t, r.dir) || !sharedMount(t, r.m.fsDir(v.ID)) {
		t.Fatal("the volumes directory, or a volume under it, is not a shared mount")
	}
	if mounted, err := isMountPoint(r.dir); err != nil || !mounted {
		t.Fatalf("isMountPoint of the shared volumes directory: %v, %v", mounted, err)
	}
	r.m.Close() // a volume is mounted: the shared mount stays
	if !sharedMount(t, r.dir) {
		t.Fatal("Close unmounted the volumes directory while a volume was mounted under it")
	}
	if err := unmount(r.m.fsDir(v.ID)); err != nil {
		t.Fatal(err)
	}
	r.m.Close()
	if mounted, err := isMountPoint(r.dir); err != nil || mounted {
		t.Fatalf("after Close with no volume mounted: mount point %v, %v", mounted, err)
	}
	r.m = r.manager() // as a restarted daemon: shared again
	if !sharedMount(t, r.dir) {
		t.Fatal("a new Manager did not make the volumes directory shared again")
	}
}

// sharedMount reports whether dir is a mount point with shared propagation.
func sharedMount(t *testing.T, dir string) bool {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 6 && f[4] == dir {
			for _, opt := range f[6:] {
				if strings.HasPrefix(opt, "shared:") {
					return true
				}
			}
		}
	}
	return false
}

func TestRecoverRemountsAndReportsBrokenVolumes(t *testing.T) {
	r := newRig(t)
	good, gone, corrupt := r.create("good", 1), r.create("gone", 1), r.create("corrupt", 1)
	if err := os.WriteFile(filepath.Join(r.m.fsDir(good.ID), "f"), []byte("survives"), 0o644); err != nil {
		t.Fatal(err)
	}
	// As after a reboot: nothing is mounted; then one backing file is
	// lost and another's superblock is overwritten.
	for _, v := range []model.Volume{good, gone, corrupt} {
		if err := unmount(r.m.fsDir(v.ID)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(r.m.file(gone.ID)); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(r.m.file(corrupt.ID), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(make([]byte, 4096), 0)
	f.Close()

	r.m = r.manager()
	begin := time.Now()
	if err := r.m.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Logf("recover 3 volumes (check + mount): %s", time.Since(begin).Round(time.Millisecond))
	if got, err := os.ReadFile(filepath.Join(r.m.fsDir(good.ID), "f")); err != nil || string(got) != "survives" {
		t.Fatalf("data after remount: %q, %v", got, err)
	}
	for _, c := range []struct {
		v    model.Volume
		want string
	}{{gone, "backing file"}, {corrupt, "no ext4 filesystem"}} {
		v, err := r.m.Get(context.Background(), "app", c.v.ID)
		if err != nil {
			t.Fatal(err)
		}
		if v.HostStatus != "error" || !strings.Contains(v.Error, c.want) {
			t.Errorf("volume %s after recovery: host_status %q, error %q; want one about %q", c.v.Name, v.HostStatus, v.Error, c.want)
		}
		if err := r.st.Update(func(tx *store.Tx) error {
			return Attach(tx, "app", "m-"+c.v.Name, []model.Mount{{Volume: c.v.ID, Path: "/d"}})
		}); err != nil {
			t.Fatal(err)
		}
		_, err = r.m.Prepare(context.Background(), "app", "m-"+c.v.Name, c.v.ID)
		if model.KindOf(err) != model.KindUnavailable || !strings.Contains(err.Error(), c.v.ID) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("prepare of volume %s: %v; want an error naming it and %q", c.v.Name, err, c.want)
		}
	}
	if v, _ := r.m.Get(context.Background(), "app", good.ID); v.HostStatus != "ok" || v.Blocks == 0 {
		t.Errorf("good volume after recovery: %+v", v)
	}
}

func TestRecoverFinishesInterruptedWork(t *testing.T) {
	r := newRig(t)
	half := model.Volume{ID: identifiers.NewVolumeID(), Name: "half", App: "app", State: model.VolumeCreating, SizeGB: 1}
	if err := os.MkdirAll(r.m.fsDir(half.ID), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := allocate(r.m.file(half.ID), gib); err != nil {
		t.Fatal(err)
	}
	grown := r.create("grown", 1)
	// An extend that died after growing the file, before the filesystem.
	if err := grow(r.m.file(grown.ID), 2*gib); err != nil {
		t.Fatal(err)
	}
	grown.State = model.VolumeExtending
	err := r.st.Update(func(tx *store.Tx) error {
		return errors.Join(tx.PutVolume(half), tx.PutVolume(grown))
	})
	if err != nil {
		t.Fatal(err)
	}
	r.m = r.manager()
	if err := r.m.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := r.m.Get(context.Background(), "app", half.ID); !model.IsNotFound(err) {
		t.Errorf("half-created volume kept: %v", err)
	}
	if _, err := os.Stat(r.m.dir(half.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("half-created volume's files kept: %v", err)
	}
	v, err := r.m.Get(context.Background(), "app", grown.ID)
	if err != nil || v.State != model.VolumeCreated || v.SizeGB != 2 || fsBytes(v) < 19*gib/10 {
		t.Errorf("interrupted extend after recovery: %+v (%d bytes), %v", v, fsBytes(v), err)
	}
}

func TestForkCopiesAVolumeInUse(t *testing.T) {
	r := newRig(t)
	src := r.create("src", 1)
	if err := os.WriteFile(filepath.Join(r.m.fsDir(src.ID), "f"), []byte("copied"), 0o644); err != nil {
		t.Fatal(err)
	}
	// An open file with unsynced writes: the freeze flushes them first.
	open, err := os.OpenFile(filepath.Join(r.m.fsDir(src.ID), "open"), os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	open.WriteString("unsynced")
	two := 2
	fork, err := r.m.Create(context.Background(), "app", model.CreateVolumeRequest{Name: "fork", SourceVolumeID: src.ID, SizeGB: &two})
	if err != nil {
		t.Fatal(err)
	}
	if fork.SizeGB != 2 || fsBytes(fork) < 19*gib/10 {
		t.Fatalf("fork = %+v (%d bytes)", fork, fsBytes(fork))
	}
	for name, want := range map[string]string{"f": "copied", "open": "unsynced"} {
		if got, err := os.ReadFile(filepath.Join(r.m.fsDir(fork.ID), name)); err != nil || string(got) != want {
			t.Errorf("fork's %s = %q, %v; want %q", name, got, err, want)
		}
	}
	os.WriteFile(filepath.Join(r.m.fsDir(fork.ID), "f"), []byte("changed"), 0o644)
	if got, _ := os.ReadFile(filepath.Join(r.m.fsDir(src.ID), "f")); string(got) != "copied" {
		t.Errorf("writing the fork changed the source: %q", got)
	}
	one := 1
	if _, err := r.m.Create(context.Background(), "app", model.CreateVolumeRequest{Name: "small", SourceVolumeID: fork.ID, SizeGB: &one}); model.KindOf(err) != model.KindInvalid {
		t.Errorf("fork smaller than its source: %v", err)
	}
}

// TestExtendInUse extends a volume that a process in another mount
// namespace holds mounted, as a machine's sandbox (its gofer) does. Where
// the host allows online growth (CAP_SYS_RESOURCE) it grows at once; else
// the answer says needs_restart and it grows at the next Prepare.
func TestExtendInUse(t *testing.T) {
	r := newRig(t)
	v := r.create("busy", 1)
	holder := exec.Command("unshare", "--mount", "--propagation", "private", "sleep", "60")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()
	deadline := time.Now().Add(5 * time.Second)
	for !holdsMount(holder.Process.Pid, r.m.fsDir(v.ID)) {
		if time.Now().After(deadline) {
			t.Fatal("the holder's mount namespace never showed the volume")
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp, err := r.m.Extend(context.Background(), "app", v.ID, model.ExtendVolumeRequest{SizeGB: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("extend in use: needs_restart %v, fs_size_gb %d, %d bytes", resp.NeedsRestart, resp.Volume.FSSizeGB, fsBytes(resp.Volume))
	if !resp.NeedsRestart {
		if resp.Volume.FSSizeGB != 2 || fsBytes(resp.Volume) < 19*gib/10 {
			t.Fatalf("grown online, but: %+v", resp.Volume)
		}
		return
	}
	if resp.Volume.SizeGB != 2 || resp.Volume.FSSizeGB != 1 || fsBytes(resp.Volume) > gib {
		t.Fatalf("extend waiting for a restart: %+v (%d bytes)", resp.Volume, fsBytes(resp.Volume))
	}
	holder.Process.Kill()
	holder.Wait()
	if err := r.st.Update(func(tx *store.Tx) error { return Attach(tx, "app", "m1", []model.Mount{{Volume: v.ID, Path: "/d"}}) }); err != nil {
		t.Fatal(err)
	}
	if _, err := r.m.Prepare(context.Background(), "app", "m1", v.ID); err != nil {
		t.Fatal(err)
	}
	got, _ := r.m.Get(context.Background(), "app", v.ID)
	if got.FSSizeGB != 2 || fsBytes(got) < 19*gib/10 {
		t.Fatalf("after the machine's restart: %+v (%d bytes)", got, fsBytes(got))
	}
}

// holdsMount reports whether process pid's mount namespace has dir mounted.
func holdsMount(pid int, dir string) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	return err == nil && strings.Contains(string(data), " "+dir+" ")
}
