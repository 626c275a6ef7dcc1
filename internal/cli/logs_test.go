package cli_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/torpor-dev/torpor/internal/cli"
	"github.com/torpor-dev/torpor/internal/logs"
	"github.com/torpor-dev/torpor/internal/model"
)

// machineLog returns an env with a machine and that machine's log, to
// append to.
func machineLog(t *testing.T) (*env, model.Machine, *logs.Log) {
	t.Helper()
	e := newEnv(t)
	m := e.createMachine()
	lg, err := e.mgr.Logs(context.Background(), "web", m.ID)
	if err != nil {
		t.Fatal(err)
	}
	// The log is the machine lifecycle's: it closes it.
	return e, m, lg
}

func TestMachineLogsPagesThroughEverything(t *testing.T) {
	e, m, lg := machineLog(t)
	const n = 2500 // more than one page
	for i := 1; i <= n; i++ {
		lg.Append([]byte(fmt.Sprintf("line %d", i)), time.Now())
	}
	out := e.ok("machine", "logs", "--app", "web", m.ID)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != n || lines[0] != "line 1" || lines[n-1] != fmt.Sprintf("line %d", n) {
		t.Fatalf("got %d lines, first %q last %q", len(lines), lines[0], lines[len(lines)-1])
	}
	out = e.ok("machine", "logs", "--app", "web", "--from-seq", "2499", "--json", m.ID)
	if !strings.Contains(out, `"seq":2499`) || !strings.Contains(out, `"message":"line 2500"`) {
		t.Fatalf("json output = %s", out)
	}
	e.fails("machine", "logs", "--app", "web", "--since", "yesterday", m.ID)
}

// TestMachineLogsEscapeControlSequencesOnATerminal is issue 17's F15: a
// machine's escape sequences (clear screen, set title, a bare carriage
// return that hides what came before) reach the operator's terminal as
// visible escapes, not as commands; --raw and a stdout that is not a
// terminal keep the bytes as the machine wrote them.
func TestMachineLogsEscapeControlSequencesOnATerminal(t *testing.T) {
	e, m, lg := machineLog(t)
	const hostile = "ok\x1b[2J\x1b]0;pwned\x07 rm -rf\rall good \xc2\x9b6n caf\xc3\xa9"
	lg.Append([]byte(hostile), time.Now())

	onTTY := func(args ...string) string {
		t.Helper()
		master, slave := openPTY(t)
		root := cli.NewRoot(nil)
		root.SetOut(slave)
		root.SetErr(io.Discard)
		root.SetArgs(append([]string{"--api", e.url}, args...))
		if err := root.ExecuteContext(context.Background()); err != nil {
			t.Fatal(err)
		}
		slave.Close()
		out, _ := io.ReadAll(master) // EIO once the slave is closed and drained
		return strings.TrimRight(string(out), "\r\n")
	}
	got := onTTY("machine", "logs", "--app", "web", m.ID)
	want := `ok\x1b[2J\x1b]0;pwned\x07 rm -rf\rall good \u009b6n café`
	if got != want {
		t.Fatalf("on a terminal:\n got %q\nwant %q", got, want)
	}
	if got := onTTY("machine", "logs", "--app", "web", "--raw", m.ID); got != hostile {
		t.Fatalf("--raw on a terminal: %q", got)
	}
	if got := strings.TrimSuffix(e.ok("machine", "logs", "--app", "web", m.ID), "\n"); got != hostile {
		t.Fatalf("to a pipe: %q, want the bytes as written", got)
	}
}

// openPTY opens a pseudo-terminal pair; output written to the slave is
// read on the master, without the \n → \r\n translation.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	master = os.NewFile(uintptr(fd), "/dev/ptmx")
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slave.Close() })
	tio, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Oflag &^= unix.OPOST
	if err := unix.IoctlSetTermios(int(slave.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	return master, slave
}
