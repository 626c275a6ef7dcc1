package cli

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// openPTY returns the two ends of a new pseudo-terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK, 0) // non-blocking: reads honour deadlines
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// TestProgressOnlyOnATerminal checks that the spinner is drawn (and
// cleared) on a terminal, and that nothing is drawn on a pipe.
func TestProgressOnlyOnATerminal(t *testing.T) {
	master, slave := openPTY(t)
	if !isTerminal(slave) || isTerminal(&bytes.Buffer{}) {
		t.Fatal("isTerminal is wrong")
	}
	cmd := &cobra.Command{}
	cmd.SetErr(slave)
	g := &globals{}
	err := g.withProgress(cmd, "Suspending machine m1", func() error {
		time.Sleep(350 * time.Millisecond)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	var all []byte
	master.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	for {
		n, err := master.Read(buf)
		all = append(all, buf[:n]...)
		if err != nil {
			break
		}
	}
	drawn := string(all)
	if !strings.Contains(drawn, "Suspending machine m1") || !strings.HasSuffix(drawn, "\r\033[K") || !strings.ContainsAny(drawn, strings.Join(spinnerFrames, "")) {
		t.Fatalf("spinner on the terminal: %q", drawn)
	}

	var pipe bytes.Buffer
	cmd.SetErr(&pipe)
	g.withProgress(cmd, "Suspending machine m1", func() error { time.Sleep(150 * time.Millisecond); return nil })
	if pipe.Len() != 0 {
		t.Fatalf("progress on a pipe: %q", pipe.String())
	}
	g.json = true
	cmd.SetErr(slave)
	g.withProgress(cmd, "x", func() error { time.Sleep(150 * time.Millisecond); return nil })
	master.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _ := master.Read(buf); n != 0 {
		t.Fatalf("progress with --json: %q", buf[:n])
	}
}
