package daemon_test

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// Faults of the runtime and of the host under a running daemon (issue 17's
// F6, F7, F8): runsc missing for a moment, a full data directory, a store
// that refuses a write.

// swappableRunsc returns a path to runsc that the test can take away
// (missing) and put back (restore), for the daemon's --runsc.
func swappableRunsc(t *testing.T) (path string, missing, restore func()) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "runsc")
	if err := os.Symlink(runscPath, path); err != nil {
		t.Fatal(err)
	}
	missing = func() {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}
	restore = func() {
		if err := os.Symlink(runscPath, path); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
	}
	t.Cleanup(restore)
	return path, missing, restore
}

// TestRunscMissingAtSuspend is issue 17's F8 on the real runtime: a suspend
// while runsc is missing fails, and the machine stays started and
// supervised (its sandbox runs on), rather than being recorded stopped
// while its sandbox keeps running unsupervised. Once runsc is back it
// answers, suspends and resumes.
func TestRunscMissingAtSuspend(t *testing.T) {
	runsc, missing, restore := swappableRunsc(t)
	d := newParallelDaemon(t, "--runsc", runsc)
	m := d.create(counterConfig(nil))
	d.waitCount(m.ID, 2)
	missing()
	defer restore() // before the daemon's cleanup, which needs runsc
	if err := d.c.Suspend(ctx(t), d.app, m.ID); err == nil {
		t.Fatal("suspend without runsc succeeded")
	} else {
		t.Logf("suspend without runsc: %v", err)
	}
	time.Sleep(2 * time.Second) // the supervisor's failed waits are retried meanwhile
	d.wantState(m.ID, model.StateStarted)
	evs, err := d.c.Events(ctx(t), d.app, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Type == model.EventExit {
			t.Fatalf("runsc missing recorded an exit: %+v", ev)
		}
	}
	restore()
	d.httpGet(d.get(m.ID))
	before := d.waitCount(m.ID, 4)
	d.suspend(m.ID)
	if resp := d.start(m.ID); !resp.FromSnapshot {
		t.Fatalf("resume once runsc was back: %+v, want from the snapshot", resp)
	}
	consecutive(t, d.waitCount(m.ID, before[len(before)-1]+2)) // its memory came back
}

// TestFailedSuspendTheStoreRefusedIsRepaired is issue 17's F7: a suspend
// whose last store write fails (ENOSPC, injected at store/commit-suspended)
// after the sandbox is gone and the image sealed is answered 507, and the
// machine is repaired at once, without a daemon restart: suspended, and
// resumed with its memory by the next start. Before the fix it stayed
// suspending (stop and start 409) until a restart.
func TestFailedSuspendTheStoreRefusedIsRepaired(t *testing.T) {
	d := newParallelDaemon(t)
	d.stop()
	d.run("TORPOR_FAULT=store/commit-suspended")
	m := d.create(counterConfig(nil))
	before := d.waitCount(m.ID, 3)
	err := d.c.Suspend(ctx(t), d.app, m.ID)
	wantAPIError(t, "suspend whose last store write fails", err, 507, "repaired: the machine is suspended")
	t.Logf("answer: %v", err)
	d.wantState(m.ID, model.StateSuspended)
	if ev := d.event(m.ID, model.EventSuspend); ev.Status != "suspended" || ev.Field("repaired") != true {
		t.Fatalf("suspend event = %+v, want suspended, repaired", ev)
	}
	if resp := d.start(m.ID); !resp.FromSnapshot {
		t.Fatalf("start after the repaired suspend: %+v, want from the snapshot", resp)
	}
	consecutive(t, d.waitCount(m.ID, before[len(before)-1]+2))
	if err := d.c.Stop(ctx(t), d.app, m.ID, model.StopRequest{}); err != nil {
		t.Fatalf("stop after the repair: %v", err)
	}
}

// TestRunscMissingAtResume is issue 17's F6 for the runtime: a start of a
// suspended machine while runsc is missing answers 503 and keeps the
// machine suspended with its snapshot, which the next start, once runsc is
// back, resumes (the app's counter goes on). Before the fix the snapshot
// was claimed before the restore failed: it was discarded for a cold start.
func TestRunscMissingAtResume(t *testing.T) {
	runsc, missing, restore := swappableRunsc(t)
	d := newParallelDaemon(t, "--runsc", runsc)
	m := d.create(counterConfig(nil))
	before := d.waitCount(m.ID, 3)
	d.suspend(m.ID)
	missing()
	defer restore() // before the daemon's cleanup, which needs runsc
	_, err := d.c.Start(ctx(t), d.app, m.ID)
	wantAPIError(t, "start without runsc", err, 503, "stays suspended with its snapshot")
	t.Logf("answer: %v", err)
	d.wantState(m.ID, model.StateSuspended)
	restore()
	if resp := d.start(m.ID); !resp.FromSnapshot {
		t.Fatalf("start once runsc was back: %+v, want from the snapshot", resp)
	}
	consecutive(t, d.waitCount(m.ID, before[len(before)-1]+2))
}

// TestResumeOnAFullDataDir is issue 17's F6 for the disk: the daemon's data
// directory is a 1 GiB tmpfs, filled up once the machine is suspended; the
// start answers 507 and keeps the machine suspended with its snapshot,
// which the next start, once there is room, resumes. Before the fix the
// snapshot was claimed before the restore failed for want of space, and
// discarded.
func TestResumeOnAFullDataDir(t *testing.T) {
	flags := parallelRange(t)
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1g,mode=0700"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) }) // after the daemon's cleanup
	d := startDaemonIn(t, dir, "", 0, flags)
	m := d.create(counterConfig(nil))
	before := d.waitCount(m.ID, 3)
	d.suspend(m.ID)
	filler := filepath.Join(dir, "filler")
	fillDisk(t, filler)
	_, err := d.c.Start(ctx(t), d.app, m.ID)
	wantAPIError(t, "start on a full data dir", err, 507, "stays suspended with its snapshot")
	t.Logf("answer: %v", err)
	d.wantState(m.ID, model.StateSuspended)
	if len(d.snapshotDirs(m.ID)) != 1 {
		t.Fatalf("snapshot images after the refused start: %v, want 1", d.snapshotDirs(m.ID))
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if resp := d.start(m.ID); !resp.FromSnapshot {
		t.Fatalf("start once there was room: %+v, want from the snapshot", resp)
	}
	consecutive(t, d.waitCount(m.ID, before[len(before)-1]+2))
}

// fillDisk writes path until its file system is full.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, size := range []int{1 << 20, 4 << 10, 1} {
		buf := make([]byte, size)
		for {
			if _, err := f.Write(buf); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatal(err)
				}
				break
			}
		}
	}
}
