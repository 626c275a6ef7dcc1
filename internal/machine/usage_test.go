package machine

import (
	"os"
	"path/filepath"
	"testing"
)

// SnapshotUsage counts images, the trash and the pages files the gvisor
// driver keeps for running machines (DATA_DIR/runsc/reuse).
func TestSnapshotUsageCountsKeptPagesFiles(t *testing.T) {
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
	write("runsc/reuse/torpor-m3.pages", 1<<20)
	u, err := e.m.SnapshotUsage()
	if err != nil {
		t.Fatal(err)
	}
	if u.Images != 1 || u.Bytes < 3<<20 {
		t.Fatalf("usage %+v: want 1 image and at least 3 MiB", u)
	}
}
