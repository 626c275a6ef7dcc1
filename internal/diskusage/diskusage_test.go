package diskusage

import (
	"os"
	"path/filepath"
	"testing"
)

// TestOfCountsAllocatedAndApparent: a written file counts its blocks and
// size, a sparse one its size only; a missing path is zero.
func TestOfCountsAllocatedAndApparent(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "full"), make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "sub", "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	u, err := Of(dir)
	if err != nil {
		t.Fatal(err)
	}
	if u.Apparent != 1<<20+64<<20 {
		t.Errorf("apparent %d, want %d", u.Apparent, 1<<20+64<<20)
	}
	if u.Allocated < 1<<20 || u.Allocated >= 2<<20 {
		t.Errorf("allocated %d, want about 1 MiB (the sparse file takes no blocks)", u.Allocated)
	}
	one, err := Of(filepath.Join(dir, "full"))
	if err != nil || one.Apparent != 1<<20 {
		t.Errorf("one file: %+v, %v", one, err)
	}
	none, err := Of(filepath.Join(dir, "missing"))
	if err != nil || none != (Usage{}) {
		t.Errorf("missing path: %+v, %v", none, err)
	}
}
