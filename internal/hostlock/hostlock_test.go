package hostlock

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A helper process: with HOSTLOCK_HOLD=path[,range] set, the test binary
// takes the lock (a range lock in path's directory if a range is given),
// prints "held" and waits to be killed.
func TestMain(m *testing.M) {
	if spec := os.Getenv("HOSTLOCK_HOLD"); spec != "" {
		path, rng, _ := strings.Cut(spec, ",")
		var err error
		if rng != "" {
			_, err = AcquireRange(path, netip.MustParsePrefix(rng), Me("/helper"))
		} else {
			_, err = Acquire(path, "helper resource", Me("/helper"))
		}
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println("held")
		time.Sleep(time.Hour)
	}
	os.Exit(m.Run())
}

// holder runs a helper process holding spec's lock and returns it once the
// lock is held.
func holder(t *testing.T, spec string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "HOSTLOCK_HOLD="+spec)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	buf := make([]byte, 512)
	n, _ := out.Read(buf)
	if !strings.HasPrefix(string(buf[:n]), "held") {
		t.Fatalf("helper: %s", buf[:n])
	}
	return cmd
}

func kill(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
}

// TestLiveLockRefusedDeadLockReclaimed: a lock a live process holds is
// refused with a message naming it; once that process is killed -9 the lock
// is taken over and the dead holder reported.
func TestLiveLockRefusedDeadLockReclaimed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "torpor.sock.lock")
	h := holder(t, path)
	_, err := Acquire(path, "admin socket /x/torpor.sock", Me("/mine"))
	if !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), "admin socket /x/torpor.sock is in use by the daemon with pid "+fmt.Sprint(h.Process.Pid)) ||
		!strings.Contains(err.Error(), "data directory /helper") {
		t.Fatalf("a live holder's lock: %v", err)
	}
	kill(t, h)
	l, err := Acquire(path, "admin socket /x/torpor.sock", Me("/mine"))
	if err != nil {
		t.Fatalf("a dead holder's lock: %v", err)
	}
	defer l.Release()
	if l.Stale == nil || l.Stale.PID != h.Process.Pid || l.Stale.DataDir != "/helper" {
		t.Fatalf("the stale holder is not reported: %+v", l.Stale)
	}
	// Held by this process now: a second Acquire (another open file) is refused.
	if _, err := Acquire(path, "admin socket", Me("/other")); !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), "data directory /mine") {
		t.Fatalf("second acquire: %v", err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	l2, err := Acquire(path, "admin socket", Me("/other"))
	if err != nil {
		t.Fatalf("after a release: %v", err)
	}
	l2.Release()
}

// TestRangeLocksRefuseOverlaps: a range a live daemon holds refuses any
// range that overlaps it; a dead daemon's range is reclaimed; a released
// range leaves no file.
func TestRangeLocksRefuseOverlaps(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "locks")
	h := holder(t, dir+",10.224.0.0/16")
	for _, r := range []string{"10.224.0.0/16", "10.224.7.0/24", "10.0.0.0/8"} {
		_, err := AcquireRange(dir, netip.MustParsePrefix(r), Me("/mine"))
		if !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), "10.224.0.0/16") || !strings.Contains(err.Error(), fmt.Sprint(h.Process.Pid)) {
			t.Fatalf("range %s while 10.224.0.0/16 is held: %v", r, err)
		}
	}
	other, err := AcquireRange(dir, netip.MustParsePrefix("10.225.0.0/16"), Me("/mine"))
	if err != nil {
		t.Fatalf("a range that overlaps nothing: %v", err)
	}
	kill(t, h)
	l, err := AcquireRange(dir, netip.MustParsePrefix("10.224.7.0/24"), Me("/mine"))
	if err != nil {
		t.Fatalf("a range overlapping a dead daemon's: %v", err)
	}
	if l.Stale == nil || l.Stale.PID != h.Process.Pid {
		t.Fatalf("the dead daemon's range is not reported: %+v", l.Stale)
	}
	if _, err := os.Stat(filepath.Join(dir, "range-10.224.0.0_16.lock")); !os.IsNotExist(err) {
		t.Fatalf("the dead daemon's lock file is still there: %v", err)
	}
	l.Release()
	other.Release()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "range-") {
			t.Fatalf("a released range left %s", e.Name())
		}
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := AcquireRange(dir, netip.MustParsePrefix("10.1.0.0/16"), Me("/mine")); err == nil || !strings.Contains(err.Error(), "writable by group or others") {
		t.Fatalf("a world-writable lock directory: %v", err)
	}
}

func TestHeldByOther(t *testing.T) {
	path := filepath.Join(t.TempDir(), "torpor.lock")
	dead := Owner{PID: 999999999, DataDir: "/x", Since: time.Now()}
	l, err := Acquire(path, "data directory", dead)
	if err != nil {
		t.Fatal(err)
	}
	if HeldByOther(path, dead.PID) {
		t.Error("the watched daemon's own lock counted as another's")
	}
	l.Release() // the watched daemon died
	if HeldByOther(path, dead.PID) {
		t.Error("a released lock counted as held")
	}
	l2, err := Acquire(path, "data directory", Me("/x")) // a new daemon
	if err != nil {
		t.Fatal(err)
	}
	if !HeldByOther(path, dead.PID) {
		t.Error("a new daemon's lock not seen")
	}
	l2.Release()
	if HeldByOther(path, dead.PID) {
		t.Error("the new daemon's released lock counted as held")
	}
	if _, err := Acquire(path, "data directory", Me("/x")); err != nil {
		t.Fatalf("the probe left the lock taken: %v", err)
	}
}
