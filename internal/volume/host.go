package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file holds what a volume is on the host: a backing file whose
// blocks are reserved up front (fallocate), formatted ext4, attached to a
// loop device and mounted. The loop device is set up with the kernel's
// loop ioctls rather than losetup(8): no output to parse, exact errors
// (EBUSY on a race for a free device is retried), and LO_FLAGS_AUTOCLEAR
// ties the device's life to the mount, so that an unmount (or a crash of
// the daemon before the mount) leaves no device behind.

const (
	gib = int64(1) << 30

	// ext4's superblock starts 1024 bytes into the device; its magic
	// number (0xEF53, little-endian) is at offset 56 in it.
	superblockOffset = 1024
	superblockMagic  = 0xEF53

	// ioctls not in x/sys/unix.
	ioctlExt4ResizeFS = 0x40086610 // EXT4_IOC_RESIZE_FS, _IOW('f', 16, __u64)
	ioctlFIFreeze     = 0xC0045877 // FIFREEZE, _IOWR('X', 119, int)
	ioctlFIThaw       = 0xC0045878 // FITHAW, _IOWR('X', 120, int)

	loopMajor = 7
)

// Tools is where the e2fsprogs tools are; empty fields are looked up on PATH.
type Tools struct {
	Mkfs   string // mkfs.ext4
	Fsck   string // e2fsck
	Resize string // resize2fs
}

func (t Tools) mkfs() string   { return firstNonEmpty(t.Mkfs, "mkfs.ext4") }
func (t Tools) fsck() string   { return firstNonEmpty(t.Fsck, "e2fsck") }
func (t Tools) resize() string { return firstNonEmpty(t.Resize, "resize2fs") }

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// allocate creates the backing file at path with size bytes, all reserved
// on the host's filesystem, so that filling the volume can never take
// space from anything else on the host: the volume is full when its own
// filesystem is, and only then.
func allocate(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = unix.Fallocate(int(f.Fd()), 0, 0, size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("reserve %d GiB for %s: %w", size/gib, path, err)
	}
	return nil
}

// grow extends the backing file at path to size bytes, reserved like
// allocate's. On failure the file is cut back to its old size.
func grow(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		f.Truncate(st.Size())
		return fmt.Errorf("reserve %d GiB for %s: %w", size/gib, path, err)
	}
	return f.Sync()
}

// mkfs formats the file at path as ext4: no blocks reserved for root (the
// volume is all the app's), errors remount it read-only rather than let
// damage spread, no discard (which would punch holes in the reserved file).
func (t Tools) mkfsExt4(ctx context.Context, path, label string) error {
	out, err := exec.CommandContext(ctx, t.mkfs(), "-q", "-F", "-t", "ext4", "-m", "0", "-e", "remount-ro",
		"-E", "nodiscard", "-L", label, path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mkfs.ext4 %s: %w: %s", path, err, bytes.TrimSpace(out))
	}
	return nil
}

// check runs e2fsck in preen mode on the unmounted file at path, as a boot
// does for a data filesystem: it replays the journal and fixes what is
// safe to fix, and fails if anything else is wrong.
func (t Tools) check(ctx context.Context, path string) error {
	return t.runFsck(ctx, path, "-p")
}

// runFsck runs e2fsck with args on path; exit codes 1 and 2 (errors
// corrected) are success.
func (t Tools) runFsck(ctx context.Context, path string, args ...string) error {
	out, err := exec.CommandContext(ctx, t.fsck(), append(args, path)...).CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() <= 2 {
		return nil // 1 and 2: errors corrected
	}
	if err != nil {
		return fmt.Errorf("e2fsck %s: %v: %s", strings.Join(args, " "), err, firstLines(out, 3))
	}
	return nil
}

// firstLines returns at most n lines of out, joined by "; ".
func firstLines(out []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "; ")
}

// hasExt4Magic reports whether the file at path starts like an ext4 (or
// ext2/3) filesystem.
func hasExt4Magic(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var b [2]byte
	if _, err := f.ReadAt(b[:], superblockOffset+56); err != nil {
		return false, nil
	}
	return uint16(b[0])|uint16(b[1])<<8 == superblockMagic, nil
}

// mount attaches the file at path to a free loop device and mounts it at
// dir. The device detaches itself when the filesystem is unmounted.
func mount(path, dir string) error {
	backing, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer backing.Close()
	dev, loop, err := attachLoop(backing)
	if err != nil {
		return err
	}
	defer loop.Close() // the mount holds the device from here; the last close clears it if the mount failed
	err = unix.Mount(dev, dir, "ext4", unix.MS_NOSUID|unix.MS_NODEV, "errors=remount-ro")
	if err != nil {
		return fmt.Errorf("mount %s (%s) at %s: %w", path, dev, dir, err)
	}
	return nil
}

// attachLoop binds backing to a free loop device and returns the device's
// path and an open handle on it. Another process may take the free device
// first; that is retried.
func attachLoop(backing *os.File) (string, *os.File, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return "", nil, fmt.Errorf("loop devices: %w", err)
	}
	defer ctl.Close()
	var lastErr error
	for attempt := 0; attempt < 20; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", nil, fmt.Errorf("find a free loop device: %w", err)
		}
		dev := "/dev/loop" + strconv.Itoa(n)
		loop, err := openLoop(dev, n)
		if err != nil {
			return "", nil, err
		}
		err = configureLoop(loop, backing, unix.LO_FLAGS_AUTOCLEAR|unix.LO_FLAGS_DIRECT_IO)
		if errors.Is(err, unix.EINVAL) {
			// Direct I/O needs the backing filesystem's blocks to line up
			// with the device's; without it the host page cache serves.
			err = configureLoop(loop, backing, unix.LO_FLAGS_AUTOCLEAR)
		}
		if err == nil {
			return dev, loop, nil
		}
		loop.Close()
		lastErr = err
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(time.Duration(attempt+1) * 5 * time.Millisecond)
	}
	return "", nil, fmt.Errorf("attach a loop device: %w", lastErr)
}

// openLoop opens loop device n at dev, creating its node where no devtmpfs
// did (some containers).
func openLoop(dev string, n int) (*os.File, error) {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		if err := unix.Mknod(dev, unix.S_IFBLK|0o600, int(unix.Mkdev(loopMajor, uint32(n)))); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("create %s: %w", dev, err)
		}
		f, err = os.OpenFile(dev, os.O_RDWR, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dev, err)
	}
	return f, nil
}

func configureLoop(loop, backing *os.File, flags uint32) error {
	cfg := unix.LoopConfig{Fd: uint32(backing.Fd())}
	cfg.Info.Flags = flags
	copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], backing.Name())
	return unix.IoctlLoopConfigure(int(loop.Fd()), &cfg)
}

// unmount unmounts the volume at dir (its loop device then detaches). A
// filesystem something still uses is not unmounted (EBUSY).
func unmount(dir string) error {
	err := unix.Unmount(dir, 0)
	if errors.Is(err, unix.EINVAL) {
		return nil // not mounted
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	return nil
}

// mountedFrom reports whether dir is a mount point whose filesystem is the
// loop device backed by file path. A mount point backed by anything else
// is an error: dir is torpor's own.
func mountedFrom(dir, path string) (bool, error) {
	dev, err := mountDevice(dir)
	if err != nil || dev == 0 {
		return false, err
	}
	backing, err := loopBacking(dev)
	if err != nil {
		return false, fmt.Errorf("%s is mounted, but not from a loop device: %w", dir, err)
	}
	want, _ := filepath.EvalSymlinks(path)
	if backing != path && backing != want {
		return false, fmt.Errorf("%s is mounted from %s, not from %s", dir, backing, path)
	}
	return true, nil
}

// mountDevice returns the device of the filesystem mounted at dir, 0 if
// dir is not a mount point.
func mountDevice(dir string) (uint64, error) {
	var st, parent unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, err
	}
	if err := unix.Stat(filepath.Dir(dir), &parent); err != nil {
		return 0, err
	}
	if st.Dev == parent.Dev {
		return 0, nil
	}
	return st.Dev, nil
}

// loopBacking returns the backing file of the loop device dev.
func loopBacking(dev uint64) (string, error) {
	if unix.Major(dev) != loopMajor {
		return "", fmt.Errorf("device %d:%d is not a loop device", unix.Major(dev), unix.Minor(dev))
	}
	data, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/loop/backing_file", unix.Major(dev), unix.Minor(dev)))
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(strings.TrimSpace(string(data)), " (deleted)"), nil
}

// usage is a filesystem's size and free space, in blocks.
type usage struct {
	blockSize                       int64
	blocks, blocksFree, blocksAvail uint64
}

func statUsage(dir string) (usage, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return usage{}, err
	}
	return usage{blockSize: st.Bsize, blocks: st.Blocks, blocksFree: st.Bfree, blocksAvail: st.Bavail}, nil
}

// growOnline grows the ext4 filesystem mounted at dir, whose backing file
// has grown to size bytes, while it stays mounted (and in use): the loop
// device learns the new size, then the kernel grows the filesystem (what
// resize2fs does for a mounted filesystem). The kernel allows it only with
// CAP_SYS_RESOURCE: without it the error is errNoOnlineGrow.
func growOnline(dir string, size int64) error {
	dev, err := mountDevice(dir)
	if err != nil {
		return err
	}
	if dev == 0 {
		return fmt.Errorf("%s is not mounted", dir)
	}
	loop, err := openLoop(fmt.Sprintf("/dev/loop%d", unix.Minor(dev)), int(unix.Minor(dev)))
	if err != nil {
		return err
	}
	defer loop.Close()
	if err := unix.IoctlSetInt(int(loop.Fd()), unix.LOOP_SET_CAPACITY, 0); err != nil {
		return fmt.Errorf("loop device capacity: %w", err)
	}
	u, err := statUsage(dir)
	if err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	blocks := uint64(size / u.blockSize)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, d.Fd(), ioctlExt4ResizeFS, uintptr(unsafe.Pointer(&blocks)))
	switch errno {
	case 0:
		return nil
	case unix.EPERM:
		return errNoOnlineGrow
	}
	return fmt.Errorf("grow the filesystem to %d blocks: %w", blocks, errno)
}

// errNoOnlineGrow is growOnline without CAP_SYS_RESOURCE.
var errNoOnlineGrow = errors.New("growing a mounted ext4 filesystem needs CAP_SYS_RESOURCE, which the daemon lacks")

// errInUse says a volume's filesystem is mounted by a sandbox.
var errInUse = errors.New("the filesystem is in use by a machine")

// growOffline grows the filesystem of the backing file at path (which has
// grown) while it is unmounted: it unmounts it from dir, checks that no
// sandbox still has it mounted (errInUse, and it is mounted again), checks
// it (a resize needs a clean filesystem), grows it and mounts it again.
func (t Tools) growOffline(ctx context.Context, path, dir string) error {
	if err := unmount(dir); err != nil {
		return err
	}
	if inUse, err := loopInUse(path); err != nil || inUse {
		if merr := mount(path, dir); merr != nil {
			return errors.Join(err, merr)
		}
		if err != nil {
			return err
		}
		return errInUse
	}
	err := t.checkForced(ctx, path)
	if err == nil {
		err = t.resize2fs(ctx, path)
	}
	return errors.Join(err, mount(path, dir))
}

// loopInUse reports whether a loop device is still bound to the file at
// path: one of its mounts is alive, outside the host's mount namespace (a
// sandbox's gofer holds a bind mount of it), since the host's is not.
func loopInUse(path string) (bool, error) {
	files, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		return false, err
	}
	want, _ := filepath.EvalSymlinks(path)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue // detached meanwhile
		}
		if b := strings.TrimSpace(string(data)); b == path || b == want {
			return true, nil
		}
	}
	return false, nil
}

// checkForced runs a full check (e2fsck -f -p), which resize2fs wants
// before it grows a filesystem.
func (t Tools) checkForced(ctx context.Context, path string) error {
	return t.runFsck(ctx, path, "-f", "-p")
}

func (t Tools) resize2fs(ctx context.Context, path string) error {
	out, err := exec.CommandContext(ctx, t.resize(), path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("resize2fs %s: %w: %s", path, err, firstLines(out, 3))
	}
	return nil
}

// syncFS writes the filesystem mounted at dir to its backing file and the
// backing file to disk (the loop device turns the flush into an fsync).
func syncFS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Syncfs(int(d.Fd()))
}

// frozen runs fn with the filesystem at dir frozen: every write to it
// waits, and what was written before is on the backing file.
func frozen(dir string, fn func() error) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, d.Fd(), ioctlFIFreeze, 0); errno != 0 {
		return fmt.Errorf("freeze %s: %w", dir, errno)
	}
	err = fn()
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, d.Fd(), ioctlFIThaw, 0); errno != 0 && err == nil {
		err = fmt.Errorf("thaw %s: %w", dir, errno)
	}
	return err
}

// copyData copies the data of file src into dst (same size, already
// reserved), skipping src's holes and unwritten extents, in the kernel.
func copyData(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer out.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	for off := int64(0); off < st.Size(); {
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only holes from off to the end
		}
		if err != nil {
			return err
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		for pos := data; pos < hole; {
			inOff, outOff := pos, pos
			n, err := unix.CopyFileRange(int(in.Fd()), &inOff, int(out.Fd()), &outOff, int(hole-pos), 0)
			if err != nil {
				return fmt.Errorf("copy %s: %w", src, err)
			}
			if n == 0 {
				return fmt.Errorf("copy %s: unexpected end at %d", src, pos)
			}
			pos += int64(n)
		}
		off = hole
	}
	return out.Sync()
}

// isNoSpace reports whether err is the host's filesystem being full.
func isNoSpace(err error) bool { return errors.Is(err, syscall.ENOSPC) }
