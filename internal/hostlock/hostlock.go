// Package hostlock owns the locks that make one daemon the only user of a
// host resource: its data directory, its admin socket path and its machine
// network range (issue 17, F14: a second daemon with another data directory
// but the same --socket took the socket over and, when it stopped, left the
// first one unreachable).
//
// A lock is an flock(2) on a file that also says who holds it (pid, data
// directory, since when). The kernel drops an flock when its holder dies,
// however it dies, so a lock file nobody holds is stale by definition: the
// next daemon takes it over (and says whose it was). A lock someone holds is
// refused with a message naming the holder.
//
// It does not own what the resources are: package daemon decides which to
// lock, package network allocates within the range.
package hostlock

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrHeld is the class of a refusal: errors.Is(err, ErrHeld).
var ErrHeld = errors.New("held by another daemon")

// Owner is who holds a lock, as written in its file.
type Owner struct {
	PID     int       `json:"pid"`
	DataDir string    `json:"data_dir"`
	Since   time.Time `json:"since"`
}

func (o Owner) String() string {
	return fmt.Sprintf("pid %d, data directory %s, since %s", o.PID, o.DataDir, o.Since.UTC().Format(time.RFC3339))
}

// Me is the Owner describing this process for dataDir.
func Me(dataDir string) Owner {
	if abs, err := filepath.Abs(dataDir); err == nil {
		dataDir = abs
	}
	return Owner{PID: os.Getpid(), DataDir: dataDir, Since: time.Now().UTC()}
}

// Lock is a held lock.
type Lock struct {
	f    *os.File
	path string
	// Stale is the owner recorded in a lock file this lock took over (its
	// holder had died without releasing it), if any.
	Stale *Owner
	// unlink, if set, is called by Release (range locks remove their file).
	unlink func() error
}

// Acquire takes the lock at path for me; what names the resource in
// messages (e.g. "admin socket /run/torpor/torpor.sock"). It fails with an
// ErrHeld error naming the holder when another live process holds it.
func Acquire(path, what string, me Owner) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock of %s: %w", what, err)
	}
	l, err := take(f, path, what, me)
	if err != nil {
		f.Close()
		return nil, err
	}
	return l, nil
}

// take flocks f (opened at path) and writes me into it.
func take(f *os.File, path, what string, me Owner) (*Lock, error) {
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			holder := "another process"
			if o, ok := readOwner(f); ok {
				holder = "the daemon with " + o.String()
			}
			return nil, fmt.Errorf("%s is in use by %s (lock %s): %w", what, holder, path, ErrHeld)
		}
		return nil, fmt.Errorf("lock of %s: flock %s: %w", what, path, err)
	}
	l := &Lock{f: f, path: path}
	if o, ok := readOwner(f); ok && o.PID != me.PID {
		l.Stale = &o
	}
	data, _ := json.Marshal(me)
	if err := f.Truncate(0); err != nil {
		return nil, fmt.Errorf("lock of %s: %w", what, err)
	}
	if _, err := f.WriteAt(append(data, '\n'), 0); err != nil {
		return nil, fmt.Errorf("lock of %s: %w", what, err)
	}
	return l, nil
}

// readOwner reads the owner recorded in a lock file.
func readOwner(f *os.File) (Owner, bool) {
	buf := make([]byte, 4096)
	n, _ := f.ReadAt(buf, 0)
	var o Owner
	if n == 0 || json.Unmarshal([]byte(strings.TrimSpace(string(buf[:n]))), &o) != nil || o.PID == 0 {
		return Owner{}, false
	}
	return o, true
}

// Release gives the lock up (closing the file drops the flock).
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	var err error
	if l.unlink != nil {
		err = l.unlink()
	}
	err = errors.Join(err, l.f.Close())
	l.f = nil
	return err
}

// Path is the lock file.
func (l *Lock) Path() string { return l.path }

// AcquireRange takes the lock on a machine network range in dir (one lock
// file per range, named after it), refusing when a live daemon holds a range
// that overlaps it, not only the same one: two daemons handing out
// addresses from overlapping ranges would give two machines one address.
// dir is created (0700) if missing and must not be writable by others.
func AcquireRange(dir string, rng netip.Prefix, me Owner) (*Lock, error) {
	what := "network range " + rng.String()
	if err := privateDir(dir); err != nil {
		return nil, fmt.Errorf("lock of %s: %w", what, err)
	}
	// One acquirer at a time looks at the others' files (and may remove
	// stale ones): the guard lock is held only for that.
	guard, err := os.OpenFile(filepath.Join(dir, "ranges.guard"), os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock of %s: %w", what, err)
	}
	defer guard.Close()
	if err := unix.Flock(int(guard.Fd()), unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("lock of %s: %w", what, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("lock of %s: %w", what, err)
	}
	var stale *Owner
	for _, e := range entries {
		other, ok := rangeOf(e.Name())
		if !ok || !other.Overlaps(rng) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		o, err := takeOver(path, fmt.Sprintf("network range %s (which overlaps %s)", other, rng), me)
		if err != nil {
			return nil, err
		}
		if o != nil && stale == nil {
			stale = o
		}
	}
	path := filepath.Join(dir, rangeFile(rng))
	l, err := Acquire(path, what, me)
	if err != nil {
		return nil, err
	}
	if l.Stale == nil {
		l.Stale = stale
	}
	l.unlink = func() error { return removeUnder(guard.Name(), path) }
	return l, nil
}

// takeOver removes the lock file at path if nobody holds it (returning the
// owner it recorded), and fails with ErrHeld if someone does.
func takeOver(path, what string, me Owner) (*Owner, error) {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lock of %s: %w", what, err)
	}
	defer f.Close()
	l, err := take(f, path, what, me)
	if err != nil {
		return nil, err
	}
	// Removed while held: whoever opens this path next gets a new file.
	if err := os.Remove(path); err != nil {
		return nil, fmt.Errorf("remove stale lock %s: %w", path, err)
	}
	return l.Stale, nil
}

// removeUnder removes path while holding the guard lock at guardPath, so
// that no acquirer is between opening it and locking it.
func removeUnder(guardPath, path string) error {
	g, err := os.OpenFile(guardPath, os.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer g.Close()
	if err := unix.Flock(int(g.Fd()), unix.LOCK_EX); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// rangeFile names the lock file of a range: "range-10.224.0.0_16.lock".
func rangeFile(rng netip.Prefix) string {
	return "range-" + strings.ReplaceAll(rng.String(), "/", "_") + ".lock"
}

// rangeOf parses a name made by rangeFile.
func rangeOf(name string) (netip.Prefix, bool) {
	s, ok := strings.CutPrefix(name, "range-")
	if !ok {
		return netip.Prefix{}, false
	}
	s, ok = strings.CutSuffix(s, ".lock")
	if !ok {
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(strings.ReplaceAll(s, "_", "/"))
	return p, err == nil
}

// privateDir creates dir (0700) if needed and checks that only its owner
// (root or this user) can write it: another user could otherwise plant
// lock files that keep daemons from starting.
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if uid := uint32(os.Geteuid()); st.Uid != 0 && st.Uid != uid {
		return fmt.Errorf("directory %s is owned by uid %d, not root or uid %d", dir, st.Uid, uid)
	}
	if st.Mode&0o022 != 0 {
		return fmt.Errorf("directory %s has mode %o: it must not be writable by group or others (chmod go-w %s)", dir, st.Mode&0o7777, dir)
	}
	return nil
}

// HeldByOther reports whether a live process other than pid holds the lock
// at path (e.g. a new daemon took over a data directory whose daemon pid
// died). It reads the holder the file records, and only if that is not
// pid, probes the flock with a shared lock it drops at once: an acquirer
// racing that instant is refused as if the lock were held, and retries.
func HeldByOther(path string, pid int) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	o, ok := readOwner(f)
	if !ok || o.PID == pid {
		return false
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		return errors.Is(err, unix.EWOULDBLOCK)
	}
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false
}
