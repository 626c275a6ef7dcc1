package gvisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"

	"golang.org/x/sys/unix"
)

// nullNetnsFile is where, under its --root, runsc bind-mounts an empty
// network namespace that every sandbox's gofer joins (runsc's
// specutils.NullNetNSFilename). runsc creates it at the first cold start and
// never removes it; cold starts that race to create it stack one mount per
// racer (measured: two after six concurrent first starts). The driver pins
// it itself when it starts, before any sandbox, so runsc finds it and never
// stacks more, and unmounts it in Close, so that a stopped daemon leaves no
// mount behind.
const nullNetnsFile = "null-netns"

// pinNullNetns bind-mounts a new, empty network namespace at
// rootDir/null-netns, unless a namespace (left by an earlier run) is
// already mounted there.
func pinNullNetns(rootDir string) error {
	path := filepath.Join(rootDir, nullNetnsFile)
	if isNetnsMount(path) {
		return nil
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o444)
	if err != nil {
		return fmt.Errorf("gvisor: creating %s: %w", path, err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		// The thread leaves the daemon's network namespace and goes back
		// before it is unlocked. (Leaving it locked to die with the
		// goroutine is not enough: if the goroutine ran on the main
		// thread, which Go never ends, the main thread stayed in the empty
		// namespace, and so did /proc/self/ns/net, which the network
		// manager then took for the host's: its bridges and veths were
		// looked for, and made, in the empty namespace. Seen as machines
		// stopped at adoption after a restart, "veth pair ... is broken",
		// and "no route to host" to freshly started machines.)
		goruntime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return // the thread stays locked and is discarded
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			goruntime.UnlockOSThread()
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		merr := unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, "")
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(merr, fmt.Errorf("back to the daemon's network namespace: %w", err))
			return // the thread stays locked and is discarded
		}
		goruntime.UnlockOSThread()
		errc <- merr
	}()
	if err := <-errc; err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("gvisor: pinning the null network namespace at %s: %w", path, err)
	}
	return nil
}

// isNetnsMount reports whether a namespace is mounted at path.
func isNetnsMount(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// unpinNullNetns removes every mount at rootDir/null-netns (there may be
// several stacked) and the file. Sandboxes already running keep their
// gofers' namespace: processes hold it, not the mount.
func unpinNullNetns(rootDir string) error {
	path := filepath.Join(rootDir, nullNetnsFile)
	for {
		err := unix.Unmount(path, unix.MNT_DETACH)
		if err == nil {
			continue
		}
		if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("gvisor: unmounting %s: %w", path, err)
		}
		break
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("gvisor: %w", err)
	}
	return nil
}
