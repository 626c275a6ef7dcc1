package gvisor

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/torpor-dev/torpor/internal/runtime"
)

// Real runsc and rootfs used by the integration tests and benchmarks
// (TORPOR_RUNSC names another runsc, as for internal/daemon's tests).
const testRootFS = "/var/cache/torpor/rootfs/bookworm-python"

var testRunsc = func() string {
	if p := os.Getenv("TORPOR_RUNSC"); p != "" {
		return p
	}
	return "/var/cache/torpor/bin/runsc"
}()

// counterApp prints an incrementing counter every 50 ms and keeps it in memory.
const counterApp = `
import sys, time
i = 0
while True:
    print(i, flush=True)
    i += 1
    time.sleep(0.05)
`

// requireIntegration skips (or, with TORPOR_INTEGRATION=1, fails) when the
// real runsc, its rootfs or root privileges are missing.
func requireIntegration(tb testing.TB) {
	tb.Helper()
	var missing []string
	if fi, err := os.Stat(testRunsc); err != nil || fi.Mode()&0o111 == 0 {
		missing = append(missing, "runsc binary "+testRunsc+" (run scripts/install-runsc.sh)")
	}
	if _, err := os.Stat(filepath.Join(testRootFS, "usr/bin/python3")); err != nil {
		missing = append(missing, "rootfs "+testRootFS+" (run scripts/build-rootfs.sh)")
	}
	if os.Geteuid() != 0 {
		missing = append(missing, "root privileges")
	}
	if len(missing) == 0 {
		return
	}
	msg := "gvisor integration test needs " + strings.Join(missing, ", ")
	if os.Getenv("TORPOR_INTEGRATION") == "1" {
		tb.Fatal(msg + " (TORPOR_INTEGRATION=1)")
	}
	tb.Skip(msg + " (set TORPOR_INTEGRATION=1 to make this fatal)")
}

// newTestRuntime returns a driver on the real runsc with a private state dir.
func newTestRuntime(tb testing.TB) *Runtime {
	tb.Helper()
	requireIntegration(tb)
	root := tb.TempDir()
	rt, err := New(Config{RunscPath: testRunsc, RootDir: root})
	if err != nil {
		tb.Fatal(err)
	}
	// Close unmounts the gofers' empty network namespace at
	// <root>/null-netns, so that the temp dir can be removed.
	tb.Cleanup(func() { _ = rt.Close() })
	return rt
}

// newWrappedRuntime is newTestRuntime with runsc behind a bash wrapper that
// runs before (with $sub set to runsc's subcommand) and then execs the real
// runsc: a test makes a step of runsc late, or notes when it begins.
func newWrappedRuntime(tb testing.TB, before string) *Runtime {
	tb.Helper()
	requireIntegration(tb)
	dir := tb.TempDir()
	wrapper := filepath.Join(dir, "runsc")
	script := "#!/bin/bash\n" +
		"for a in \"$@\"; do case \"$a\" in -*) ;; *) sub=$a; break ;; esac; done\n" +
		before + "\nexec " + testRunsc + " \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		tb.Fatal(err)
	}
	rt, err := New(Config{RunscPath: wrapper, RootDir: filepath.Join(dir, "root")})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = rt.Close() })
	return rt
}

var idSeq atomic.Int64

// uniqueID returns a sandbox ID unique on the host.
func uniqueID(prefix string) string {
	return fmt.Sprintf("%s-%d-%d-%d", prefix, os.Getpid(), time.Now().UnixNano()%1e6, idSeq.Add(1))
}

// bootApp boots app (a Python script) in a new sandbox of rt named after
// prefix, and returns a context for the test's calls to rt (3 minutes, and
// cancelled when the test ends), the sandbox's console and its spec.
func bootApp(t *testing.T, rt *Runtime, prefix, app string) (context.Context, *console, runtime.Spec) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	con := newConsole(t)
	spec := newSpec(t, rt, prefix, con.path, app)
	if err := rt.Boot(ctx, spec); err != nil {
		t.Fatal(err)
	}
	return ctx, con, spec
}

// newSpec returns a spec running python3 with code, in a fresh bundle, and
// makes sure the sandbox is killed when the test ends.
func newSpec(tb testing.TB, rt *Runtime, prefix, console, code string) runtime.Spec {
	tb.Helper()
	spec := runtime.Spec{
		ID:       uniqueID(prefix),
		Bundle:   tb.TempDir(),
		RootFS:   testRootFS,
		Args:     []string{"/usr/bin/python3", "-u", "-c", code},
		Env:      []string{"LANG=C.UTF-8"},
		Hostname: prefix,
		CPUs:     1,
		MemoryMB: 512,
		Console:  console,
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := rt.Kill(ctx, spec.ID); err != nil {
			tb.Errorf("cleanup: %v", err)
		}
	})
	return spec
}

// console collects the lines the sandbox writes to a console FIFO.
type console struct {
	path  string
	f     *os.File
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

// newConsole makes a FIFO and drains it in the background until the test ends.
func newConsole(tb testing.TB) *console {
	tb.Helper()
	c := &console{path: filepath.Join(tb.TempDir(), "console"), done: make(chan struct{})}
	if err := unix.Mkfifo(c.path, 0o600); err != nil {
		tb.Fatal(err)
	}
	// Read-write, like the driver: reads never see EOF between sandboxes.
	f, err := os.OpenFile(c.path, os.O_RDWR, 0)
	if err != nil {
		tb.Fatal(err)
	}
	c.f = f
	go c.drain()
	tb.Cleanup(func() { f.Close(); <-c.done })
	return c
}

func (c *console) drain() {
	defer close(c.done)
	sc := bufio.NewScanner(c.f)
	for sc.Scan() {
		c.mu.Lock()
		c.lines = append(c.lines, sc.Text())
		c.mu.Unlock()
	}
}

// snapshot returns the lines read so far.
func (c *console) snapshot() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.lines...)
}

// numbers returns the integer lines among lines.
func numbers(lines []string) []int {
	var out []int
	for _, l := range lines {
		if n, err := strconv.Atoi(strings.TrimSpace(l)); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// waitFor polls cond every 10 ms until it holds or timeout passes.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// settle waits until the console has produced no new line for quiet.
func (c *console) settle(quiet time.Duration) []string {
	last := -1
	for {
		n := len(c.snapshot())
		if n == last {
			return c.snapshot()
		}
		last = n
		time.Sleep(quiet)
	}
}

// dirSize returns the total size of the regular files in dir.
func dirSize(tb testing.TB, dir string) int64 {
	tb.Helper()
	var total int64
	entries, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			total += fi.Size()
		}
	}
	return total
}

// mustState asserts the sandbox's status.
func mustState(tb testing.TB, rt *Runtime, id string, want runtime.Status) {
	tb.Helper()
	got, err := rt.State(context.Background(), id)
	if err != nil {
		tb.Fatalf("State(%s): %v", id, err)
	}
	if got != want {
		tb.Fatalf("State(%s) = %s, want %s", id, got, want)
	}
}
