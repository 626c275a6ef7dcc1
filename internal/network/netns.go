package network

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// onThread runs fn on a fresh OS thread locked for it and then switches the
// thread back to the network namespace it started in. If switching back fails
// the thread stays locked, so the Go runtime destroys it when the goroutine
// ends instead of reusing a thread that is in the wrong namespace.
func onThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("restore netns: %w", err))
			return // thread stays locked and is discarded
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// openHostNetns opens the namespace at path, or when path is "" the
// calling thread's own, which is the daemon's: a thread that enters another
// namespace stays locked to its goroutine until it is back (onThread), so
// any unlocked thread is in the daemon's namespace. (/proc/self/ns/net is
// the main thread's, which a goroutine locked to it could have moved.)
func openHostNetns(path string) (netns.NsHandle, error) {
	if path != "" {
		ns, err := netns.GetFromPath(path)
		if err != nil {
			return ns, fmt.Errorf("open host netns %s: %w", path, err)
		}
		return ns, nil
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ns, err := netns.Get()
	if err != nil {
		return ns, fmt.Errorf("open the daemon's netns: %w", err)
	}
	return ns, nil
}

// inNetns runs fn on a fresh OS thread switched into ns (see onThread).
func inNetns(ns netns.NsHandle, fn func() error) error {
	return onThread(func() error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("enter netns: %w", err)
		}
		return fn()
	})
}

// createNetns creates a new network namespace and bind-mounts it at path,
// which must not exist, like `ip netns add` does.
func createNetns(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("create netns file: %w", err)
	}
	f.Close()
	err = onThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		if err := unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mount netns at %s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		_ = unix.Unmount(path, unix.MNT_DETACH)
		_ = os.Remove(path)
		return err
	}
	return nil
}

// deleteNetns unmounts and removes a namespace created by createNetns. A
// missing file or a file that is not mounted is not an error.
func deleteNetns(path string) error {
	for {
		err := unix.Unmount(path, unix.MNT_DETACH)
		if err == nil {
			continue // in case it was mounted more than once
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			break // not (or no longer) a mount point
		}
		return fmt.Errorf("unmount netns %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove netns file: %w", err)
	}
	return nil
}

// isNetns reports whether path exists and is a mounted network namespace
// (not, e.g., an empty file left over from before a reboot).
func isNetns(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("statfs %s: %w", path, err)
	}
	if st.Type != unix.NSFS_MAGIC {
		return false, nil
	}
	h, err := netns.GetFromPath(path)
	if err != nil {
		return false, fmt.Errorf("open netns %s: %w", path, err)
	}
	defer h.Close()
	// An nsfs file can also be another kind of namespace; ask the kernel.
	t, err := unix.IoctlRetInt(int(h), unix.NS_GET_NSTYPE)
	if err != nil {
		return false, fmt.Errorf("ns type of %s: %w", path, err)
	}
	return t == unix.CLONE_NEWNET, nil
}

// ensureNetns makes sure path is a mounted network namespace, creating it
// (after removing a stale file) if needed. It reports whether it created one.
func ensureNetns(path string) (created bool, err error) {
	ok, err := isNetns(path)
	if err != nil || ok {
		return false, err
	}
	if err := deleteNetns(path); err != nil {
		return false, err
	}
	return true, createNetns(path)
}

// prepareNetnsDir creates dir and makes it a shared mount point, as
// `ip netns add` does for /run/netns, so that namespace mounts made here
// propagate to other mount namespaces and can be removed from them.
func prepareNetnsDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	for bound := false; ; bound = true {
		err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EINVAL) || bound {
			return fmt.Errorf("make %s a shared mount: %w", dir, err)
		}
		// Not a mount point yet: bind it onto itself, then retry.
		if err := unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mount %s onto itself: %w", dir, err)
		}
	}
}
