package daemon_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/model"
)

// TestSuspendDiskFull puts a machine's snapshot directory on a tmpfs much
// smaller than its image: the suspend fails with 507 Insufficient Storage,
// the event says disk full, no partial image is left, and the machine is
// started and serves. Once there is room again, suspend and resume work.
func TestSuspendDiskFull(t *testing.T) {
	d := newDaemon(t)
	m := d.create(counterConfig(nil))
	d.waitCount(m.ID, 3)
	snaps := filepath.Join(d.dataDir, "machines", m.ID, "snapshots")
	if err := os.MkdirAll(snaps, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", snaps, "tmpfs", 0, "size=16m,mode=0700"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	mounted := true
	unmount := func() {
		if mounted {
			if err := syscall.Unmount(snaps, syscall.MNT_DETACH); err != nil {
				t.Errorf("unmount %s: %v", snaps, err)
			}
			mounted = false
		}
	}
	t.Cleanup(unmount)

	gen := d.get(m.ID).BootGeneration
	err := d.c.Suspend(ctx(t), d.app, m.ID)
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 507 || !strings.Contains(apiErr.Message, "disk full") {
		t.Fatalf("suspend onto a full disk = %v, want 507 saying disk full", err)
	}
	d.wantState(m.ID, model.StateStarted)
	if dirs := d.snapshotDirs(m.ID); len(dirs) != 0 {
		t.Fatalf("partial snapshot left on the full disk: %v", dirs)
	}
	ev := d.event(m.ID, "suspend")
	if ev.Status != "failed" || !strings.Contains(ev.Field("error").(string), "ENOSPC") {
		t.Fatalf("suspend event = %+v", ev)
	}
	after := d.get(m.ID)
	t.Logf("after the failed checkpoint: generation %d -> %d, event %v", gen, after.BootGeneration, ev.Request)
	d.httpGet(after) // it serves
	d.waitCount(m.ID, 1)

	unmount()
	d.waitCount(m.ID, len(d.counts(m.ID))+2)
	d.suspend(m.ID)
	if resp := d.start(m.ID); !resp.FromSnapshot {
		t.Fatal("no resume once the disk had room again")
	}
	d.httpGet(d.get(m.ID))
}
