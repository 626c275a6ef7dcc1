// Package diskusage measures what files take on disk: the blocks allocated
// to them, which is what fills a disk (a pages file written over in place,
// a sparse image), beside their apparent sizes. Snapshot usage (machine),
// the gVisor driver's kept pages files and the benchmark's snapshot sizes
// use it.
//
// What it does not own: any file or directory (it only reads metadata) and
// what the numbers are charged to.
package diskusage

import (
	"errors"
	"io/fs"
	"path/filepath"
	"syscall"
)

// Usage is what the regular files of a tree take.
type Usage struct {
	Allocated int64 // bytes of the blocks allocated to them
	Apparent  int64 // their sizes
}

// Of adds up the regular files under path (or path itself, if it is one).
// A file or directory deleted while it walks is skipped, and a missing
// path takes nothing.
func Of(path string) (Usage, error) {
	var u Usage
	err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		u.Apparent += info.Size()
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			u.Allocated += st.Blocks * 512
		}
		return nil
	})
	return u, err
}
