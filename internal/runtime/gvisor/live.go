package gvisor

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/torpor-dev/torpor/internal/runtime"
)

// CheckpointLive saves the sandbox to imageDir like Checkpoint, with
// "runsc checkpoint --leave-running": gVisor pauses the sandbox's kernel,
// writes the image, and resumes it, so the sandbox is still running when
// it returns, whether the save succeeded or failed (processes the caller
// stopped stay stopped). On success imageDir holds the image; killing the
// sandbox is the caller's move.
func (r *Runtime) CheckpointLive(ctx context.Context, id, imageDir string) error {
	if err := checkEmptyDir(imageDir); err != nil {
		return err
	}
	st, err := r.state(ctx, id)
	if err != nil {
		return err
	}
	if st == nil {
		return fmt.Errorf("gvisor: checkpoint %s: %w", id, runtime.ErrNotFound)
	}
	lifted := liftForCheckpoint(id, r.cfg.KeepLimits, r.cfg.KeepMemoryLimit)
	defer lifted.restore()
	args := []string{"--leave-running", "--image-path=" + imageDir, id}
	cmd := r.command(ctx, r.bundleFlags(st.Bundle), "checkpoint", args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		detail := string(out) + logTail(filepath.Join(st.Bundle, logFile))
		return &Error{Subcommand: "checkpoint", Args: args, Err: ctxErr(ctx, err), Detail: detail}
	}
	return checkImage(imageDir)
}
