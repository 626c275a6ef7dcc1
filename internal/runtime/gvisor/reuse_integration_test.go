package gvisor

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The checkpoint of a restored sandbox writes over the pages file it was
// restored from (the same inode: runsc built with
// scripts/runsc-patches/reuse-pages-file.patch), truncated to what it
// wrote even when the old file was longer; the app goes on from that image;
// a Kill, or a driver with NoPagesReuse, keeps nothing.
func TestCheckpointWritesOverTheRestoredPagesFile(t *testing.T) {
	rt, spawns := newSpawnCountingRuntime(t)
	ctx, con, spec := bootApp(t, rt, "reuse", counterApp)
	waitFor(t, 20*time.Second, "counter output", func() bool { return len(numbers(con.snapshot())) >= 3 })
	first := t.TempDir()
	if err := rt.Checkpoint(ctx, spec.ID, first); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(rt.reusePath(spec.ID)); !os.IsNotExist(err) {
		t.Fatalf("a pages file kept before any restore: %v", err)
	}
	if err := rt.Restore(ctx, spec, first); err != nil {
		t.Fatal(err)
	}
	kept := inode(t, rt.reusePath(spec.ID))
	if kept != inode(t, filepath.Join(first, pagesFile)) {
		t.Fatal("the kept file is not the restored image's pages file")
	}
	// What a daemon finds at start-up: the live sandbox's file stays, and
	// one of a sandbox that is gone (it ended without a Kill) is deleted.
	ghost := rt.reusePath(uniqueID("gone"))
	if err := os.WriteFile(ghost, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	withGhost, err := rt.DiskBytes()
	if err != nil || withGhost < 1<<20+size(t, rt.reusePath(spec.ID))/2 {
		t.Fatalf("DiskBytes = %d, %v: want the kept file and the 1 MiB ghost", withGhost, err)
	}
	spawns.take(t)
	rt.sweepPagesFiles(ctx)
	if subs := spawns.take(t); len(subs) != 0 {
		t.Fatalf("the sweep ran runsc %q; the state files tell a running sandbox and a gone one", subs)
	}
	if _, err := os.Stat(ghost); !os.IsNotExist(err) {
		t.Fatalf("the pages file of a sandbox that is gone survived the sweep: %v", err)
	}
	if inode(t, rt.reusePath(spec.ID)) != kept {
		t.Fatal("the sweep deleted the running sandbox's pages file")
	}
	if after, err := rt.DiskBytes(); err != nil || after >= withGhost {
		t.Fatalf("DiskBytes after the sweep = %d, %v; %d before", after, err, withGhost)
	}
	// The caller deletes the restored image (the manager does, once
	// claimed): the kept link lives on. Make it longer than any image of
	// this app, with bytes no image has, to see the checkpoint truncate it.
	if err := os.RemoveAll(first); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(rt.reusePath(spec.ID), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	garbage := bytes.Repeat([]byte{0xa5}, 8<<20)
	if _, err := f.Write(garbage); err != nil {
		t.Fatal(err)
	}
	longer := size(t, rt.reusePath(spec.ID))
	f.Close()
	waitFor(t, 20*time.Second, "output after the restore", func() bool { return len(numbers(con.snapshot())) >= 6 })

	second := t.TempDir()
	if err := rt.Checkpoint(ctx, spec.ID, second); err != nil {
		t.Fatal(err)
	}
	pages := filepath.Join(second, pagesFile)
	if inode(t, pages) != kept {
		t.Fatal("the checkpoint wrote a new pages file instead of the kept one (is runsc built with scripts/runsc-patches?)")
	}
	if got := size(t, pages); got >= longer-int64(len(garbage))/2 {
		t.Fatalf("pages file of %d bytes after the checkpoint; it was %d with %d bytes appended: not truncated", got, longer, len(garbage))
	}
	for _, p := range []string{rt.reusePath(spec.ID), pages + reuseSuffix} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s left after the checkpoint: %v", p, err)
		}
	}
	before := numbers(con.settle(100 * time.Millisecond))
	if err := rt.Restore(ctx, spec, second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "output after the second restore", func() bool { return len(numbers(con.snapshot())) > len(before)+2 })
	after := numbers(con.snapshot())
	if last, next := before[len(before)-1], after[len(before)]; next != last+1 {
		t.Fatalf("counter went %d → %d across the restore from the rewritten file, want it to go on", last, next)
	}
	if err := rt.Kill(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(rt.reusePath(spec.ID)); !os.IsNotExist(err) {
		t.Fatalf("a killed sandbox's pages file is kept: %v", err)
	}

	// Off: a restore keeps nothing.
	if err := rt.Boot(ctx, spec); err != nil {
		t.Fatal(err)
	}
	third := t.TempDir()
	if err := rt.Checkpoint(ctx, spec.ID, third); err != nil {
		t.Fatal(err)
	}
	rt.cfg.NoPagesReuse = true
	if err := rt.Restore(ctx, spec, third); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(rt.reusePath(spec.ID)); !os.IsNotExist(err) {
		t.Fatalf("NoPagesReuse, yet a pages file is kept: %v", err)
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func size(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}
