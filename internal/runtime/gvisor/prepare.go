package gvisor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/torpor-dev/torpor/internal/runtime"
)

var _ runtime.Preparer = (*Runtime)(nil)

// minFreeBytes is the free space a restore needs where runsc writes (the
// bundle's config.json and logs, runsc's state under RootDir); the image
// it reads is already on disk.
const minFreeBytes = 8 << 20

// PrepareRestore implements runtime.Preparer: runsc must be there and
// executable, and the file systems of the bundle and of runsc's state
// directory must have minFreeBytes free.
func (r *Runtime) PrepareRestore(ctx context.Context, spec runtime.Spec) error {
	if err := r.checkRunsc(); err != nil {
		return err
	}
	for _, dir := range []string{spec.Bundle, r.cfg.RootDir} {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			return fmt.Errorf("gvisor: free space in %s: %w", dir, err)
		}
		if free := st.Bavail * uint64(st.Bsize); free < minFreeBytes {
			return fmt.Errorf("gvisor: %d bytes free in %s, a restore needs %d: %w", free, dir, minFreeBytes, syscall.ENOSPC)
		}
	}
	return nil
}

// checkRunsc checks that the runsc binary is there and executable.
func (r *Runtime) checkRunsc() error {
	fi, err := os.Stat(r.cfg.RunscPath)
	if err == nil && (fi.IsDir() || fi.Mode()&0o111 == 0) {
		err = fs.ErrPermission
	}
	if err != nil {
		return fmt.Errorf("gvisor: runsc at %s cannot run: %w (%w)", r.cfg.RunscPath, runtime.ErrUnavailable, err)
	}
	return nil
}

// unavailable wraps err in runtime.ErrUnavailable when it is the failure to
// start runsc itself (missing, not executable) rather than runsc's.
func unavailable(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission)) {
		return fmt.Errorf("%w: %w", runtime.ErrUnavailable, err)
	}
	return err
}
