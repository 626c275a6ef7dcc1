package daemon_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// TestOneDaemonPerSocketDataDirAndRange is issue 17's F14: a second daemon
// asking for a live daemon's admin socket, data directory or network range
// (another data directory each time) is refused with a message naming the
// live one, which keeps serving; it used to take the socket over and leave
// the first daemon unreachable. After the first is killed -9, its locks are
// taken over.
func TestOneDaemonPerSocketDataDirAndRange(t *testing.T) {
	d := newDaemon(t)
	m := d.create(counterConfig(nil))
	pid := d.cmd.Process.Pid
	rng := testNetworkRange()
	for _, tc := range []struct {
		what string
		args []string
	}{
		{"its admin socket", []string{"--data-dir", t.TempDir(), "--socket", d.sock, "--network-range", ""}},
		{"its data directory", []string{"--data-dir", d.dataDir, "--socket", t.TempDir() + "/other.sock", "--network-range", ""}},
		{"its network range", []string{"--data-dir", t.TempDir(), "--socket", t.TempDir() + "/other.sock", "--network-range", rng}},
	} {
		out, code := secondDaemon(t, tc.args)
		if code == 0 || !strings.Contains(out, fmt.Sprintf("in use by the daemon with pid %d, data directory %s", pid, d.dataDir)) {
			t.Fatalf("a second daemon asking for %s: exit %d, want a refusal naming pid %d:\n%s", tc.what, code, pid, out)
		}
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := d.c.GetMachine(c, d.app, m.ID); err != nil {
			t.Fatalf("after a second daemon asked for %s the first does not answer: %v", tc.what, err)
		}
		cancel()
	}
	d.crash()
	d.run() // takes the dead daemon's locks over
	d.wantState(m.ID, model.StateStarted)
	if !strings.Contains(d.log(), "took over a lock a daemon that is gone left") {
		t.Fatal("the restarted daemon does not say it took stale locks over")
	}
}

// secondDaemon runs `torpor serve` with args for at most 20 s and returns
// its output and exit code (0 if it was still running: it started).
func secondDaemon(t *testing.T, args []string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, torporBin, append([]string{"serve", "--runsc", runscPath, "--no-proxy"}, args...)...)
	out, _ := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), 0
	}
	return string(out), cmd.ProcessState.ExitCode()
}
