package gvisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/torpor-dev/torpor/internal/runtime"
)

// Exec runs args inside the running sandbox ("runsc exec", with the
// container's environment and working directory) and returns its combined
// stdout and stderr. A non-zero exit is an error (an *Error wrapping
// *exec.ExitError); the output is returned either way.
func (r *Runtime) Exec(ctx context.Context, id string, args []string) ([]byte, error) {
	if len(args) == 0 {
		return nil, errors.New("gvisor: exec: no command")
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fmt.Errorf("gvisor: %w", err)
	}
	defer devnull.Close()
	cmdArgs := append([]string{id}, args...)
	cmd := r.command(ctx, nil, "exec", cmdArgs...)
	var out bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, &out, &out
	if err := cmd.Run(); err != nil {
		e := &Error{Subcommand: "exec", Args: cmdArgs, Err: ctxErr(ctx, err), Detail: tail(out.Bytes(), 512)}
		if st, serr := r.state(ctx, id); serr == nil && st == nil {
			return out.Bytes(), fmt.Errorf("%w: %w", runtime.ErrNotFound, e)
		}
		return out.Bytes(), e
	}
	return out.Bytes(), nil
}

// tail returns at most the last n bytes of b, as a trimmed string.
func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(bytes.TrimSpace(b))
}
