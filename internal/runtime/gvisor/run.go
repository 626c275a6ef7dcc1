package gvisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/torpor-dev/torpor/internal/runtime"
)

// Run runs cmd inside the running sandbox ("runsc exec", with the
// container's environment and working directory), with cmd.Stdin as its
// standard input and its standard output and error kept apart (the last
// cmd.MaxOutput bytes of each). A command that exits non-zero is reported
// in the result, not as an error; the error is for a command that could not
// be run (no such program, no sandbox) and for ctx ending, in which case
// the process is killed inside the sandbox as Exec does.
//
// runsc exits with the command's status, or 128 plus the signal that ended
// it (as a shell reports it), or 128 when it could not run the command;
// these cannot all be told apart from an app that exits 128 or more by
// itself, so a status over 128 is reported as that signal.
func (r *Runtime) Run(ctx context.Context, id string, c runtime.Command) (runtime.CommandResult, error) {
	if len(c.Args) == 0 {
		return runtime.CommandResult{}, errors.New("gvisor: run: no command")
	}
	limit := c.MaxOutput
	if limit <= 0 {
		limit = runtime.DefaultMaxOutput
	}
	dir, err := os.MkdirTemp("", "torpor-run-")
	if err != nil {
		return runtime.CommandResult{}, fmt.Errorf("gvisor: %w", err)
	}
	defer os.RemoveAll(dir)
	pidFile := filepath.Join(dir, "pid")
	// runsc's own messages go to a log file, not into the command's stderr.
	runscLog := filepath.Join(dir, "runsc.log")

	args := append([]string{"--internal-pid-file=" + pidFile, id}, c.Args...)
	cmd := r.command(ctx, []string{"--log=" + runscLog}, "exec", args...)
	stdout, stderr := &countingTail{max: limit}, &countingTail{max: limit}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(c.Stdin), stdout, stderr
	cmd.Cancel = func() error {
		if err := r.killExec(id, pidFile); err != nil {
			return errors.Join(err, cmd.Process.Kill())
		}
		return nil
	}
	err = cmd.Run()
	res := runtime.CommandResult{Stdout: stdout.Bytes(), Stderr: stderr.Bytes(),
		Truncated: stdout.total > limit || stderr.total > limit}
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return res, &Error{Subcommand: "exec", Args: args, Err: ctxErr(ctx, err)}
	case err == nil:
		return res, nil
	case !errors.As(err, &exit) || exit.ExitCode() < 0:
		return res, &Error{Subcommand: "exec", Args: args, Err: err, Detail: logTail(runscLog)}
	}
	code := exit.ExitCode()
	if _, perr := os.Stat(pidFile); perr != nil {
		// The process never started: runsc failed (exit 128) before.
		if st, serr := r.state(context.WithoutCancel(ctx), id); serr == nil && st == nil {
			return res, fmt.Errorf("%w: gvisor: exec in %s", runtime.ErrNotFound, id)
		}
		return res, &Error{Subcommand: "exec", Args: args, Err: err, Detail: runscFailure(runscLog)}
	}
	res.ExitCode = code
	if code > 128 && code < 128+65 {
		res.ExitCode = -1
		res.Signal = unix.SignalName(unix.Signal(code - 128))
		if res.Signal == "" {
			res.Signal = fmt.Sprintf("signal %d", code-128)
		}
	}
	return res, nil
}

// runscFailure is the reason runsc gives in its log for failing to run a
// command (its last warning or error line), else the log's tail.
func runscFailure(log string) string {
	tail := logTail(log)
	lines := strings.Split(tail, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := lines[i]
		if j := strings.Index(l, "FATAL ERROR: "); j >= 0 {
			return strings.TrimSpace(l[j+len("FATAL ERROR: "):])
		}
	}
	return tail
}

// countingTail keeps the last max bytes written to it and counts them all.
type countingTail struct {
	tailBuffer
	max   int
	total int
}

func (b *countingTail) Write(p []byte) (int, error) {
	b.tailBuffer.max = b.max
	b.total += len(p)
	return b.tailBuffer.Write(p)
}
