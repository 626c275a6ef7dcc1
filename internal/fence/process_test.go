package fence

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func startProc(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(name, args...)
	if err := cmd.Start(); err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// Start returns once the exec is past its point of no return, but the
	// kernel sets the new command line up a little later: until then
	// /proc/PID/cmdline reads empty, and StopPrevious rightly leaves the
	// process alone (a CI run failed so). Wait for the command line.
	want := strings.Join(append([]string{name}, args...), "\x00")
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", cmd.Process.Pid))
		if strings.TrimRight(string(b), "\x00") == want {
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d: command line %q, want %q", cmd.Process.Pid, b, want)
		}
		time.Sleep(time.Millisecond)
	}
}

func writePID(t *testing.T, dir string, pid int) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, PIDFile), []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestStopPrevious(t *testing.T) {
	dir := t.TempDir()
	if pid, err := StopPrevious(dir); pid != 0 || err != nil {
		t.Fatalf("no pid file: %d %v", pid, err)
	}
	// A pid reused by another process, or a watchdog of another data
	// directory, is left alone.
	other := startProc(t, "sleep", "30")
	writePID(t, dir, other.Process.Pid)
	if pid, err := StopPrevious(dir); pid != 0 || err != nil {
		t.Fatalf("stopped a process that is not a watchdog: %d %v", pid, err)
	}
	elsewhere := startProc(t, "bash", "-c", "sleep 30; :", Subcommand, "--data-dir", t.TempDir())
	writePID(t, dir, elsewhere.Process.Pid)
	if pid, err := StopPrevious(dir); pid != 0 || err != nil {
		t.Fatalf("stopped another data directory's watchdog: %d %v", pid, err)
	}
	// bash -c CMD NAME ARGS: its command line is that of a watchdog of dir.
	wd := startProc(t, "bash", "-c", "sleep 30; :", Subcommand, "--data-dir", dir)
	writePID(t, dir, wd.Process.Pid)
	exited := make(chan struct{})
	go func() { wd.Wait(); close(exited) }()
	pid, err := StopPrevious(dir)
	if pid != wd.Process.Pid || err != nil {
		t.Fatalf("StopPrevious: %d %v, want %d", pid, err, wd.Process.Pid)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("the watchdog still runs")
	}
	if other.ProcessState != nil || elsewhere.ProcessState != nil {
		t.Fatal("another process was stopped")
	}
}
