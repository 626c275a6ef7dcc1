package volume

import (
	"errors"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Shared mounts. Every sandbox runsc starts takes a copy of the host's
// mounts (its gofer's and sentry's mount namespaces) and makes the copy a
// slave: it sees the host's later unmounts only of mounts that are shared.
// A host without systemd leaves / private, so a volume mounted when any
// sandbox started (a running machine, or a warm sandbox waiting for its
// resume) lived on in that sandbox's copy after torpor unmounted it: the
// filesystem stayed mounted, its loop device bound and its backing file
// written by the kernel's journal commits, for as long as the sandbox ran
// (seen: a volume "unmounted" and corrupted on purpose came back as a
// valid filesystem; a loop device still bound 30 s after the unmount).
// The volumes directory is therefore made a shared mount, bind-mounted
// onto itself first when it is not a mount point: volumes mounted under it
// are shared too, and their unmounts reach every copy.

// shareMounts makes dir a shared mount.
func shareMounts(dir string) error {
	mounted, err := isMountPoint(dir)
	if err != nil {
		return err
	}
	if !mounted {
		if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
			return err
		}
	}
	return unix.Mount("", dir, "", unix.MS_SHARED, "")
}

// unshareMounts removes the bind mount shareMounts put on dir, unless a
// volume is still mounted under it (unmounting it would take them along).
func unshareMounts(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if dev, err := mountDevice(filepath.Join(dir, e.Name(), "fs")); err != nil || dev != 0 {
			return
		}
	}
	if mounted, err := isMountPoint(dir); err == nil && mounted {
		_ = unix.Unmount(dir, 0) // EBUSY: something still uses it; it stays
	}
}

// isMountPoint reports whether dir is a mount point (bind mounts of the
// same filesystem included: a device comparison cannot tell those), as
// statx says (Linux 5.8).
func isMountPoint(dir string) (bool, error) {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, dir, 0, 0, &st); err != nil {
		return false, &os.PathError{Op: "statx", Path: dir, Err: err}
	}
	if st.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT == 0 {
		return false, errors.New("the kernel does not tell mount points apart (statx's STATX_ATTR_MOUNT_ROOT, Linux 5.8)")
	}
	return st.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
}
