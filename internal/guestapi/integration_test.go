package guestapi

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/runtime"
	"github.com/torpor-dev/torpor/internal/runtime/gvisor"
)

// Real runsc and rootfs used by the integration test.
const (
	testRunsc  = "/var/cache/torpor/bin/runsc"
	testRootFS = "/var/cache/torpor/rootfs/bookworm-python"
)

// pyUnixHTTP is Python's http.client over a Unix socket, and a call helper
// that returns (status, body) or ('error', repr(exception)).
const pyUnixHTTP = `
import http.client, os, socket, sys, time

class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__('torpor', timeout=10)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s

def call(method, url, path='/.torpor/api.sock', pause=0):
    c = UnixHTTPConnection(path)
    try:
        c.request(method, url)
        time.sleep(pause)
        r = c.getresponse()
        return r.status, r.read().decode().strip()
    except Exception as e:
        return 'error', repr(e)
    finally:
        c.close()

def say(*args):
    print(*args, flush=True)
`

// pyApp is the machine's process: it reads its info on both sockets,
// opens a connection it leaves idle, asks to be suspended (reading the
// answer only after half a second, so that a server that suspended the
// machine before the answer was read would lose it) and ticks until
// the test creates /tmp/restored; then it tries the idle connection and a
// new one.
const pyApp = pyUnixHTTP + `
say('info', *call('GET', '/v1/machine'))
say('fly', *call('GET', '/v1/machine', '/.fly/api'))
held = UnixHTTPConnection('/.torpor/api.sock')
held.connect()
say('suspend', *call('POST', '/v1/suspend', pause=0.5))
i = 0
while not os.path.exists('/tmp/restored'):
    i += 1
    say('tick', i)
    time.sleep(0.05)
try:
    held.request('GET', '/v1/machine')
    say('held', held.getresponse().status)
except Exception as e:
    say('held', 'error', repr(e))
say('after', *call('GET', '/v1/machine'))
while True:
    time.sleep(1)
`

// pyClient makes one call: argv is socket path, method, URL and an
// optional uid (and gid) to switch to first.
const pyClient = pyUnixHTTP + `
if len(sys.argv) > 4:
    os.setgid(int(sys.argv[4]))
    os.setuid(int(sys.argv[4]))
print(*call(sys.argv[2], sys.argv[3], sys.argv[1]))
`

// requireIntegration skips (or, with TORPOR_INTEGRATION=1, fails) when the
// real runsc, its rootfs or root privileges are missing.
func requireIntegration(t *testing.T) {
	t.Helper()
	var missing []string
	if fi, err := os.Stat(testRunsc); err != nil || fi.Mode()&0o111 == 0 {
		missing = append(missing, "runsc binary "+testRunsc)
	}
	if _, err := os.Stat(filepath.Join(testRootFS, "usr/bin/python3")); err != nil {
		missing = append(missing, "rootfs "+testRootFS)
	}
	if os.Geteuid() != 0 {
		missing = append(missing, "root privileges")
	}
	if len(missing) == 0 {
		return
	}
	msg := "guestapi integration test needs " + strings.Join(missing, ", ")
	if os.Getenv("TORPOR_INTEGRATION") == "1" {
		t.Fatal(msg + " (TORPOR_INTEGRATION=1)")
	}
	t.Skip(msg + " (set TORPOR_INTEGRATION=1 to make this fatal)")
}

// newRuntime returns the gVisor driver with RunscFlag and a private state dir.
func newRuntime(t *testing.T) *gvisor.Runtime {
	t.Helper()
	root := t.TempDir()
	rt, err := gvisor.New(gvisor.Config{RunscPath: testRunsc, RootDir: root, ExtraFlags: []string{RunscFlag}})
	if err != nil {
		t.Fatal(err)
	}
	// Close unmounts the empty network namespace at <root>/null-netns.
	t.Cleanup(func() { _ = rt.Close() })
	return rt
}

// lines collects what the sandbox writes to a console FIFO.
type lines struct {
	path string
	mu   sync.Mutex
	all  []string
}

// newLines makes a console FIFO and drains it until the test ends.
func newLines(t *testing.T) *lines {
	t.Helper()
	l := &lines{path: filepath.Join(t.TempDir(), "console")}
	if err := unix.Mkfifo(l.path, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(l.path, os.O_RDWR, 0) // never sees EOF between sandboxes
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			l.mu.Lock()
			l.all = append(l.all, sc.Text())
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { f.Close(); <-done })
	return l
}

// find returns the first line starting with prefix, "" if none yet.
func (l *lines) find(prefix string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.all {
		if strings.HasPrefix(s, prefix) {
			return s
		}
	}
	return ""
}

// wait waits up to 30 s for a line starting with prefix and returns it.
func (l *lines) wait(t *testing.T, prefix string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if s := l.find(prefix); s != "" {
			return s
		}
		if time.Now().After(deadline) {
			l.mu.Lock()
			defer l.mu.Unlock()
			t.Fatalf("no %q line from the machine; console:\n%s", prefix, strings.Join(l.all, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sandbox is the machine under test: its spec, the runtime and the fake
// whose Suspend checkpoints the sandbox for real.
type sandbox struct {
	t       *testing.T
	rt      *gvisor.Runtime
	spec    runtime.Spec
	fake    *fakeMachines
	images  chan string // image dirs of completed checkpoints
	console *lines
}

// newSandbox prepares (does not boot) a sandbox running pyApp with the
// given mounts, killed when the test ends.
func newSandbox(t *testing.T, rt *gvisor.Runtime, fake *fakeMachines, mounts []runtime.Mount) *sandbox {
	sb := &sandbox{t: t, rt: rt, fake: fake, images: make(chan string, 4), console: newLines(t)}
	sb.spec = runtime.Spec{
		ID:       fmt.Sprintf("guestapi-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9),
		Bundle:   t.TempDir(),
		RootFS:   testRootFS,
		Args:     []string{"/usr/bin/python3", "-u", "-c", pyApp},
		Env:      []string{"LANG=C.UTF-8"},
		CPUs:     1,
		MemoryMB: 256,
		Console:  sb.console.path,
		Mounts:   mounts,
	}
	fake.onSuspend = sb.checkpoint
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := rt.Kill(ctx, sb.spec.ID); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return sb
}

// checkpoint is the fake's Suspend: a real checkpoint into a new image dir.
func (sb *sandbox) checkpoint(ctx context.Context, app, id string) error {
	image := sb.t.TempDir()
	start := time.Now()
	if err := sb.rt.Checkpoint(ctx, sb.spec.ID, image); err != nil {
		return err
	}
	sb.t.Logf("checkpoint took %v", time.Since(start).Round(time.Millisecond))
	sb.images <- image
	return nil
}

// exec runs pyClient inside the sandbox and returns its trimmed output.
func (sb *sandbox) exec(ctx context.Context, args ...string) string {
	argv := append([]string{"/usr/bin/python3", "-c", pyClient}, args...)
	out, err := sb.rt.Exec(ctx, sb.spec.ID, argv)
	if err != nil {
		sb.t.Fatalf("exec %v: %v: %s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// waitCheckpointed waits for the fake's Suspend (a real checkpoint) to
// finish and returns the image directory.
func (sb *sandbox) waitCheckpointed() string {
	sb.t.Helper()
	select {
	case err := <-sb.fake.opDone:
		if err != nil {
			sb.t.Fatalf("suspend (checkpoint): %v", err)
		}
	case <-time.After(time.Minute):
		sb.t.Fatal("the machine's suspend request did not lead to a suspend")
	}
	return <-sb.images
}

// restore restores the sandbox from image, with the same spec (and so the
// same API mounts) as at boot.
func (sb *sandbox) restore(ctx context.Context, image string) {
	sb.t.Helper()
	sb.fake.setState("app1", "m1", model.StateStarted)
	start := time.Now()
	if err := sb.rt.Restore(ctx, sb.spec, image); err != nil {
		sb.t.Fatalf("restore of a sandbox with the API socket mounted: %v", err)
	}
	sb.t.Logf("restore took %v", time.Since(start).Round(time.Millisecond))
}

// TestIntegrationSuspendItself boots a gVisor sandbox with the API mounted,
// lets its process read its info and ask to be suspended (the fake's Suspend
// checkpoints it for real, with an idle API connection open), restores it
// and checks the API still serves it, also from a non-root user, after a
// server restart, and through a second suspend/restore cycle.
func TestIntegrationSuspendItself(t *testing.T) {
	requireIntegration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	rt := newRuntime(t)
	fake := newFakeMachines(testMachine("m1"))
	srv := New(fake, nil)
	defer srv.CloseAll()
	dir := t.TempDir()
	mounts, err := srv.Listen("app1", "m1", dir)
	if err != nil {
		t.Fatal(err)
	}
	sb := newSandbox(t, rt, fake, mounts)
	if err := rt.Boot(ctx, sb.spec); err != nil {
		t.Fatal(err)
	}
	con := sb.console
	if got := con.wait(t, "info "); !strings.Contains(got, `"id":"m1"`) || !strings.HasPrefix(got, "info 200 ") {
		t.Fatalf("info from inside the machine: %s", got)
	}
	if got := con.wait(t, "fly "); !strings.HasPrefix(got, "fly 200 ") {
		t.Fatalf("info through /.fly/api: %s", got)
	}

	image := sb.waitCheckpointed()
	// The sandbox is gone now: the app printed the 202 before the
	// checkpoint froze it.
	if got := con.wait(t, "suspend "); got != `suspend 202 {"ok":true}` {
		t.Fatalf("suspend answer seen by the app before the checkpoint: %q", got)
	}
	sb.restore(ctx, image)
	if c := fake.callsOf("suspend")[0]; c.source != Source {
		t.Errorf("suspend source = %q", c.source)
	}

	if _, err := rt.Exec(ctx, sb.spec.ID, []string{"/usr/bin/touch", "/tmp/restored"}); err != nil {
		t.Fatal(err)
	}
	t.Logf("idle connection across the checkpoint: %s", con.wait(t, "held "))
	if got := con.wait(t, "after "); !strings.HasPrefix(got, "after 200 ") {
		t.Fatalf("API call after restore: %s", got)
	}
	sb.checkSocketAccess(ctx)

	// A restarted daemon listens again in the same directory.
	srv.Close("m1")
	if got := sb.exec(ctx, "/.torpor/api.sock", "GET", "/v1/machine"); !strings.HasPrefix(got, "error ") {
		t.Errorf("call with the server closed: %s", got)
	}
	srv2 := New(fake, nil)
	defer srv2.CloseAll()
	if _, err := srv2.Listen("app1", "m1", dir); err != nil {
		t.Fatal(err)
	}
	if got := sb.exec(ctx, "/.torpor/api.sock", "GET", "/v1/machine"); !strings.HasPrefix(got, "200 ") {
		t.Fatalf("call after the server listened again: %s", got)
	}

	// A second cycle, asked for by another process of the machine.
	if got := sb.exec(ctx, "/.fly/api", "POST", "/v1/apps/app1/machines/m1/suspend"); got != `202 {"ok":true}` {
		t.Fatalf("second suspend request: %s", got)
	}
	sb.restore(ctx, sb.waitCheckpointed())
	if got := sb.exec(ctx, "/.torpor/api.sock", "GET", "/v1/machine"); !strings.HasPrefix(got, "200 ") {
		t.Fatalf("call after the second restore: %s", got)
	}
}

// checkSocketAccess checks that a non-root user of the machine can use the
// socket and that the mount is read-only.
func (sb *sandbox) checkSocketAccess(ctx context.Context) {
	sb.t.Helper()
	if got := sb.exec(ctx, "/.torpor/api.sock", "GET", "/v1/machine", "65534"); !strings.HasPrefix(got, "200 ") {
		sb.t.Errorf("call as uid 65534: %s", got)
	}
	out, err := sb.rt.Exec(ctx, sb.spec.ID, []string{"/usr/bin/touch", "/.torpor/x"})
	if err == nil {
		sb.t.Errorf("the machine could write into its socket directory: %s", out)
	}
	sb.t.Logf("writing into /.torpor: %s", strings.TrimSpace(string(out)))
}
