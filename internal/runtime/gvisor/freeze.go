package gvisor

import (
	"context"
	"os/exec"
	"strings"
	"time"
)

// Sandboxes lists the sandboxes under a runsc root directory ("runsc list
// -quiet"), without a Runtime: for the fencing watchdog (package fence),
// which runs without the daemon.
func Sandboxes(ctx context.Context, runsc, root string) ([]string, error) {
	out, err := output(ctx, standalone(ctx, runsc, root, "list", "-quiet"), "list", []string{"-quiet"})
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(out)), nil
}

// Freeze stops every process of sandbox id with SIGSTOP, as the daemon's
// own fence does (Runtime.SignalAll with "SIGSTOP"), so that the daemon
// thaws it the same way (SIGCONT).
func Freeze(ctx context.Context, runsc, root, id string) error {
	args := []string{"--all", id, "SIGSTOP"}
	_, err := output(ctx, standalone(ctx, runsc, root, "kill", args...), "kill", args)
	return err
}

func standalone(ctx context.Context, runsc, root, sub string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, runsc, append([]string{"--root=" + root, sub}, args...)...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}
