package volume

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"

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
// same filesystem included), from /proc/self/mountinfo.
func isMountPoint(dir string) (bool, error) {
	dir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return false, err
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMountinfo(fields[4]) == dir {
			return true, nil
		}
	}
	if err := sc.Err(); err != nil {
		return false, err
	}
	return false, nil
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
