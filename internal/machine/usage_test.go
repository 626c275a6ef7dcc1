package machine

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// SnapshotUsage counts images, the trash and what the runtime keeps of its
// own (runtime.DiskUser: the gvisor driver's pages files for running
// machines), and fails when the runtime cannot tell.
func TestSnapshotUsageCountsImagesTrashAndTheRuntimesFiles(t *testing.T) {
	e := newEnv(t)
	write := func(rel string, n int) {
		t.Helper()
		p := filepath.Join(e.cfg.DataDir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, make([]byte, n), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("machines/m1/snapshots/s1/pages.img", 1<<20)
	write("trash/m2-s2/pages.img", 1<<20)
	u, err := e.m.SnapshotUsage()
	if err != nil {
		t.Fatal(err)
	}
	if u.Images != 1 || u.Bytes < 2<<20 || u.Bytes >= 3<<20 {
		t.Fatalf("usage %+v: want 1 image and 2 to 3 MiB", u)
	}
	e.rt.SetDiskBytes(5 << 20)
	withKept, err := e.m.SnapshotUsage()
	if err != nil {
		t.Fatal(err)
	}
	if withKept.Images != 1 || withKept.Bytes != u.Bytes+5<<20 {
		t.Fatalf("usage %+v with the runtime keeping 5 MiB: want %d bytes", withKept, u.Bytes+5<<20)
	}
	e.rt.Fail("disk-bytes", errors.New("boom"))
	if _, err := e.m.SnapshotUsage(); err == nil {
		t.Fatal("SnapshotUsage hid the runtime's failure")
	}
}
