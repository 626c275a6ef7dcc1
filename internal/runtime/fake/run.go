package fake

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/torpor-dev/torpor/internal/runtime"
)

// Run implements runtime.Runtime: RunFunc answers for a running sandbox;
// without one, ExecFunc's output is the command's stdout (its error makes
// exit code 1), and without either the command succeeds with no output.
func (r *Runtime) Run(ctx context.Context, id string, cmd runtime.Command) (runtime.CommandResult, error) {
	r.mu.Lock()
	r.record("run " + strings.Join(cmd.Args, " "))
	s, ok := r.sandboxes[id]
	run, exec := r.RunFunc, r.ExecFunc
	r.mu.Unlock()
	if !ok || s.stopped() {
		return runtime.CommandResult{}, runtime.ErrNotFound
	}
	switch {
	case run != nil:
		return run(ctx, id, cmd)
	case exec != nil:
		out, err := exec(ctx, id, cmd.Args)
		res := runtime.CommandResult{Stdout: out}
		if err != nil {
			res.ExitCode, res.Stderr = 1, []byte(err.Error())
		}
		return res, nil
	}
	return runtime.CommandResult{}, nil
}

// Processes implements runtime.Runtime: the sandbox's init process, as PID
// 1 running its spec's command in its working directory.
func (r *Runtime) Processes(ctx context.Context, id string) ([]runtime.Process, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.sandboxes[id]
	if !ok || s.stopped() {
		return nil, runtime.ErrNotFound
	}
	cwd := s.Spec.Cwd
	if cwd == "" {
		cwd = "/"
	}
	return []runtime.Process{{PID: 1, Command: strings.Join(s.Spec.Args, " "), Cwd: cwd}}, nil
}

// CheckpointLive implements runtime.Runtime: it writes the image as
// Checkpoint does and leaves the sandbox running.
func (r *Runtime) CheckpointLive(ctx context.Context, id, imageDir string) error {
	r.mu.Lock()
	hook := r.OnCheckpoint
	r.mu.Unlock()
	if hook != nil {
		hook(id)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s, err := r.checkpointable(id)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(imageDir, "checkpoint.img"), []byte(strconv.Itoa(s.Counter)), 0o600)
}

// checkpointable records a checkpoint (live or not: tests check the order
// of steps) and returns the running sandbox to save, or the injected
// failure. Callers hold r.mu.
func (r *Runtime) checkpointable(id string) (*Sandbox, error) {
	r.record("checkpoint")
	if err := r.takeFailure("checkpoint"); err != nil {
		return nil, err
	}
	s, ok := r.sandboxes[id]
	if !ok {
		return nil, runtime.ErrNotFound
	}
	if s.stopped() {
		return nil, fmt.Errorf("checkpoint %s: sandbox is not running", id)
	}
	return s, nil
}
