package gvisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/torpor-dev/torpor/internal/runtime"
)

// maxExecOutput bounds the output Exec keeps: the last 1 MiB.
const maxExecOutput = 1 << 20

// execKillTimeout bounds the "runsc kill" that ends a cancelled exec.
const execKillTimeout = 10 * time.Second

// Exec runs args inside the running sandbox (what "runsc exec" does, with
// the container's environment and working directory, through the
// sandbox's control socket: control.go; by spawning runsc exec when the
// socket cannot be used) and returns its combined
// stdout and stderr (the last 1 MiB of it). A non-zero exit is an error (an
// *Error wrapping *exec.ExitError); the output is returned either way.
//
// When ctx ends first, the process is killed inside the sandbox, not just
// the runsc exec client (killing the client alone leaves the process
// running in the sandbox, measured): runsc writes the process's pid to a
// file (--internal-pid-file) and Exec sends SIGKILL to its process group
// ("runsc kill --pgid"). An exec'd process has no parent in the sandbox, so
// it leads a session and process group of its own, and the group holds its
// children too, except those that moved to another group (setsid, daemons).
// runsc exec then returns as the process is reaped, which shows that it is
// gone; runsc itself is killed only if it has not returned within its
// WaitDelay.
func (r *Runtime) Exec(ctx context.Context, id string, args []string, env ...string) ([]byte, error) {
	if len(args) == 0 {
		return nil, errors.New("gvisor: exec: no command")
	}
	for _, kv := range env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return nil, fmt.Errorf("gvisor: exec: environment entry %q is not KEY=VALUE", kv)
		}
	}
	out, err := r.controlExec(ctx, id, args, env)
	if !errors.Is(err, errNoControl) {
		return out, err
	}
	r.controlFallback(id, "exec", err)
	return r.spawnExec(ctx, id, args, env)
}

// spawnExec is Exec by spawning `runsc exec`.
func (r *Runtime) spawnExec(ctx context.Context, id string, args, env []string) ([]byte, error) {
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fmt.Errorf("gvisor: %w", err)
	}
	defer devnull.Close()
	dir, err := os.MkdirTemp("", "torpor-exec-")
	if err != nil {
		return nil, fmt.Errorf("gvisor: %w", err)
	}
	defer os.RemoveAll(dir)
	pidFile := filepath.Join(dir, "pid")

	cmdArgs := []string{"--internal-pid-file=" + pidFile}
	for _, kv := range env {
		cmdArgs = append(cmdArgs, "--env", kv)
	}
	cmdArgs = append(append(cmdArgs, id), args...)
	cmd := r.command(ctx, nil, "exec", cmdArgs...)
	out := &tailBuffer{max: maxExecOutput}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, out, out
	cmd.Cancel = func() error {
		if err := r.killExec(id, pidFile); err != nil {
			return errors.Join(err, cmd.Process.Kill())
		}
		return nil
	}
	if err := cmd.Run(); err != nil {
		e := &Error{Subcommand: "exec", Args: cmdArgs, Err: ctxErr(ctx, err), Detail: tail(out.Bytes(), 512)}
		if st, serr := r.state(context.WithoutCancel(ctx), id); serr == nil && st == nil {
			return out.Bytes(), fmt.Errorf("%w: %w", runtime.ErrNotFound, e)
		}
		return out.Bytes(), e
	}
	return out.Bytes(), nil
}

// killExec sends SIGKILL to the process group of the exec'd process whose
// sandbox-internal pid runsc wrote to pidFile. It fails when the pid is not
// known yet (runsc writes it just after starting the process).
func (r *Runtime) killExec(id, pidFile string) error {
	data, err := os.ReadFile(pidFile)
	if err != nil {
		return fmt.Errorf("gvisor: exec pid unknown: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return fmt.Errorf("gvisor: exec pid file holds %q", data)
	}
	ctx, cancel := context.WithTimeout(context.Background(), execKillTimeout)
	defer cancel()
	_, err = r.run(ctx, "kill", "--pgid="+strconv.Itoa(pid), id, "KILL")
	if err != nil {
		// The group is gone or, against expectation, the process leads
		// none: signal the process alone.
		_, err = r.run(ctx, "kill", "--pid="+strconv.Itoa(pid), id, "KILL")
	}
	return err
}

// tailBuffer is an io.Writer that keeps the last max bytes written.
type tailBuffer struct {
	buf []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.buf = append(b.buf, p...)
	if len(b.buf) > 2*b.max {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-b.max:]...)
	}
	return len(p), nil
}

// Bytes returns the last max bytes written.
func (b *tailBuffer) Bytes() []byte {
	if len(b.buf) > b.max {
		return b.buf[len(b.buf)-b.max:]
	}
	return b.buf
}

// tail returns at most the last n bytes of b, as a trimmed string.
func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(bytes.TrimSpace(b))
}
