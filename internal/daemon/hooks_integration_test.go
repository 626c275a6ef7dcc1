package daemon_test

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/model"
)

// hookApp serves, on :8080, what it knows of its resumes: the generation
// file, the marker file its hooks append to, the generation file as read by
// each SIGUSR2 handler call, and its boot generation from the environment.
// With CLOCK_PORT set it also sends "seq wall-time" from UDP port 9099 to
// that UDP port of its gateway (the host) every millisecond. The host's
// firewall only lets in replies to what the host sent, so the test first
// sends a datagram to the machine's port 9099 (see clockListener.open).
const hookApp = `
import http.server, json, os, signal, socket, threading, time

def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None

signals = []
signal.signal(signal.SIGUSR2, lambda *_: signals.append(read("/run/torpor/generation")))

def clock(port):
    gateway = os.environ["FLY_PRIVATE_IP"].rsplit(".", 1)[0] + ".1"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 9099))
    n = 0
    while True:
        n += 1
        try:
            s.sendto(b"%d %.6f" % (n, time.time()), (gateway, port))
        except OSError:
            pass
        time.sleep(0.001)

if os.environ.get("CLOCK_PORT"):
    threading.Thread(target=clock, args=(int(os.environ["CLOCK_PORT"]),), daemon=True).start()

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"generation": read("/run/torpor/generation"), "marker": read("/run/marker"),
                           "signals": signals, "boot_env": os.environ.get("TORPOR_BOOT_GENERATION"),
                           "now": time.time()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
`

// hookAppState is what hookApp answers.
type hookAppState struct {
	Generation *string  `json:"generation"`
	Marker     *string  `json:"marker"`
	Signals    []string `json:"signals"`
	BootEnv    string   `json:"boot_env"`
	Now        float64  `json:"now"`
}

func hookConfig(hooks *model.Hooks, env map[string]string) model.MachineConfig {
	return model.MachineConfig{
		Image: pythonImage,
		Init:  model.InitConfig{Exec: []string{"python3", "-c", hookApp}},
		Env:   env,
		Guest: model.Guest{CPUs: 1, MemoryMB: 256},
		Hooks: hooks,
	}
}

func shHook(script string, timeout time.Duration) *model.Hook {
	return &model.Hook{Cmd: []string{"/bin/sh", "-c", script}, Timeout: model.Duration{Duration: timeout}}
}

// appGet asks hookApp for its state, waiting for it to answer.
func (d *daemon) appGet(m model.Machine) hookAppState {
	d.t.Helper()
	var st hookAppState
	d.getJSON(m, &st)
	return st
}

// appWait polls hookApp until ok accepts its state.
func (d *daemon) appWait(m model.Machine, what string, ok func(hookAppState) bool) hookAppState {
	d.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := d.appGet(m)
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("machine %s: %s: app state %+v", m.ID, what, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// execIn runs a command in the machine with runsc exec, as the daemon does.
func (d *daemon) execIn(id string, args ...string) (string, error) {
	argv := append([]string{"--root", filepath.Join(d.dataDir, "runsc"), "exec", "torpor-" + id}, args...)
	out, err := exec.Command(runscPath, argv...).CombinedOutput()
	return string(out), err
}

// processes lists the command lines of the machine's processes.
func (d *daemon) processes(id string) []string {
	d.t.Helper()
	out, err := d.execIn(id, "python3", "-c",
		`import os
for p in os.listdir("/proc"):
    if p.isdigit():
        print(open("/proc/%s/cmdline" % p).read().replace("\0", " ").strip())`)
	if err != nil {
		d.t.Fatalf("list processes: %v: %s", err, out)
	}
	return strings.Split(strings.TrimSpace(out), "\n")
}

// detail reads a nested event detail such as "pre_suspend.status".
func detail(ev model.Event, path string) any { return ev.Field(path) }

func TestPreSuspendHookFailureKeepsMachineStarted(t *testing.T) {
	d := newDaemon(t)
	cases := []struct {
		name    string
		hook    *model.Hook
		status  string
		message string
	}{
		{"exit", shHook("echo not now, 2 jobs running; exit 3", 5*time.Second), "failed", "exited with status 3"},
		{"timeout", shHook("echo draining; sleep 30", time.Second), "timeout", "timed out after 1s"},
		{"missing", &model.Hook{Cmd: []string{"/no/such/hook"}, Timeout: model.Duration{Duration: 5 * time.Second}}, "failed", "pre_suspend hook"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := d.create(hookConfig(&model.Hooks{PreSuspend: c.hook}, nil))
			d.appGet(m)
			begin := time.Now()
			err := d.c.Suspend(ctx(t), d.app, m.ID)
			took := time.Since(begin)
			var apiErr *client.APIError
			if !errors.As(err, &apiErr) || apiErr.Status != 409 || !strings.Contains(apiErr.Message, c.message) {
				t.Fatalf("suspend = %v, want 409 saying %q", err, c.message)
			}
			t.Logf("suspend answered %d after %v: %s", apiErr.Status, took.Round(time.Millisecond), apiErr.Message)
			d.wantState(m.ID, model.StateStarted)
			ev := d.event(m.ID, "suspend")
			out, _ := detail(ev, "pre_suspend.output").(string)
			if ev.Status != "failed" || detail(ev, "pre_suspend.status") != c.status || out == "" ||
				!strings.Contains(apiErr.Message, out) {
				t.Fatalf("suspend event = %+v", ev)
			}
			if dirs := d.snapshotDirs(m.ID); len(dirs) != 0 {
				t.Fatalf("aborted suspend left images: %v", dirs)
			}
			d.appGet(m) // the app still serves
			for _, p := range d.processes(m.ID) {
				if strings.Contains(p, "sleep 30") {
					t.Fatalf("the timed-out hook still runs in the machine: %q", p)
				}
			}
		})
	}
}

func TestHooksGenerationFileAndResumeSignal(t *testing.T) {
	// With the clock gate (--clock-gate): the resume event says how the
	// daemon's reading went. TestClockRightAfterResume runs without it.
	d := newDaemon(t, "--clock-gate")
	hooks := &model.Hooks{
		PreSuspend:   shHook("echo pre >> /run/marker", 5*time.Second),
		PostResume:   shHook(`echo "post $(grep COUNT /run/torpor/generation)" >> /run/marker`, 5*time.Second),
		ResumeSignal: "SIGUSR2",
	}
	m := d.create(hookConfig(hooks, nil))
	st := d.appWait(m, "generation file at boot", func(s hookAppState) bool { return s.Generation != nil })
	if *st.Generation != "TORPOR_BOOT_GENERATION=1\nTORPOR_RESUME_COUNT=0\nTORPOR_SUSPENDED_AT=\nTORPOR_RESUMED_AT=\n" ||
		st.BootEnv != "1" || st.Marker != nil || len(st.Signals) != 0 {
		t.Fatalf("app after cold start: %+v generation %q", st, deref(st.Generation))
	}

	marker := ""
	for i := 1; i <= 2; i++ {
		d.suspend(m.ID)
		if ev := d.event(m.ID, "suspend"); detail(ev, "pre_suspend.status") != "ok" || detail(ev, "pre_suspend.duration_ms") == nil {
			t.Fatalf("suspend event = %+v", ev)
		}
		if resp := d.start(m.ID); !resp.FromSnapshot {
			t.Fatal("not resumed")
		}
		ev := d.event(m.ID, "resume")
		if detail(ev, "post_resume.status") != "ok" || detail(ev, "resume_count") != float64(i) ||
			detail(ev, "resume_signal") != "SIGUSR2" || detail(ev, "clock_ok") != true {
			t.Fatalf("resume event = %+v", ev)
		}
		t.Logf("resume %d: post_resume %vms, daemon's clock check: skew %vms ± %vms, restore %vms, total %vms", i,
			detail(ev, "post_resume.duration_ms"), ev.Field("clock_skew_ms"), ev.Field("clock_uncertainty_ms"),
			ev.Field("restore_ms"), ev.Field("duration_ms"))

		st := d.appWait(m, "resume signal", func(s hookAppState) bool { return len(s.Signals) == i })
		want := fmt.Sprintf("TORPOR_BOOT_GENERATION=1\nTORPOR_RESUME_COUNT=%d\n", i)
		if st.Generation == nil || !strings.HasPrefix(*st.Generation, want) ||
			!strings.Contains(*st.Generation, "TORPOR_RESUMED_AT=20") || !strings.Contains(*st.Generation, "TORPOR_SUSPENDED_AT=20") {
			t.Fatalf("generation file after resume %d = %q", i, deref(st.Generation))
		}
		// The signal came after the file was rewritten; post_resume saw the new file.
		if st.Signals[i-1] != *st.Generation {
			t.Fatalf("the handler of signal %d read %q, want the new file", i, st.Signals[i-1])
		}
		marker += fmt.Sprintf("pre\npost TORPOR_RESUME_COUNT=%d\n", i)
		if deref(st.Marker) != marker {
			t.Fatalf("marker = %q, want %q", deref(st.Marker), marker)
		}
	}

	if err := d.c.Stop(ctx(t), d.app, m.ID, model.StopRequest{}); err != nil {
		t.Fatal(err)
	}
	d.start(m.ID)
	st = d.appWait(m, "generation file after a cold start", func(s hookAppState) bool { return s.Generation != nil })
	if !strings.HasPrefix(*st.Generation, "TORPOR_BOOT_GENERATION=2\nTORPOR_RESUME_COUNT=0\n") || st.BootEnv != "2" || st.Marker != nil {
		t.Fatalf("app after a cold start: %+v generation %q", st, deref(st.Generation))
	}
}

func deref(s *string) string {
	if s == nil {
		return "<none>"
	}
	return *s
}

func TestPostResumeHookFailureKeepsResume(t *testing.T) {
	d := newDaemon(t)
	m := d.create(hookConfig(&model.Hooks{PostResume: shHook("echo cannot reach the GPU >&2; exit 4", 5*time.Second)}, nil))
	d.appGet(m)
	d.suspend(m.ID)
	if resp := d.start(m.ID); !resp.FromSnapshot {
		t.Fatal("not resumed")
	}
	ev := d.event(m.ID, "resume")
	if ev.Status != "started" || detail(ev, "post_resume.status") != "failed" || detail(ev, "post_resume.exit_code") != 4.0 {
		t.Fatalf("resume event = %+v", ev)
	}
	hev := d.event(m.ID, "post_resume")
	if hev.Status != "failed" || !strings.Contains(fmt.Sprint(hev.Field("output")), "cannot reach the GPU") {
		t.Fatalf("post_resume event = %+v", hev)
	}
	d.appGet(m)
}

// clockSample is one datagram of hookApp's clock: the app's wall time when
// it sent it and the host's when it arrived (the kernel's receive
// timestamp), and when the test read it.
type clockSample struct {
	seq             int
	app, recv, read time.Time
}

func (s clockSample) skew() time.Duration { return s.app.Sub(s.recv) }

// clockListener collects hookApp's clock datagrams.
type clockListener struct {
	conn    *net.UDPConn
	machine *net.UDPAddr // where open sends to; nil before
	mu      sync.Mutex
	samples []clockSample
}

// open lets the machine at ip send to the listener through the host's
// firewall: a datagram from the listener to the app's clock port makes the
// app's datagrams replies of a flow the host started.
func (l *clockListener) open(ip string) {
	l.mu.Lock()
	l.machine = &net.UDPAddr{IP: net.ParseIP(ip), Port: 9099}
	l.mu.Unlock()
	l.hello()
}

func (l *clockListener) hello() {
	l.mu.Lock()
	to := l.machine
	l.mu.Unlock()
	if to != nil {
		l.conn.WriteToUDP([]byte("hello"), to)
	}
}

func listenClock(t *testing.T) *clockListener {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{})
	if err != nil {
		t.Fatal(err)
	}
	// Arrival times come from the kernel (SO_TIMESTAMPNS), not from when
	// this goroutine got to read: on a loaded host the reader can lag,
	// and a datagram sent before the suspend but read after start was
	// called would look sent after it, by a clock behind.
	raw, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1)
	}); err != nil || serr != nil {
		t.Fatalf("SO_TIMESTAMPNS: %v %v", err, serr)
	}
	l := &clockListener{conn: conn}
	t.Cleanup(func() { conn.Close() })
	go l.receive()
	return l
}

func (l *clockListener) port() int { return l.conn.LocalAddr().(*net.UDPAddr).Port }

func (l *clockListener) receive() {
	buf, oob := make([]byte, 128), make([]byte, 128)
	for {
		n, oobn, _, _, err := l.conn.ReadMsgUDP(buf, oob)
		read := time.Now()
		if err != nil {
			return
		}
		recv, ok := kernelTimestamp(oob[:oobn])
		if !ok {
			continue
		}
		seqText, wallText, _ := strings.Cut(string(buf[:n]), " ")
		seq, err1 := strconv.Atoi(seqText)
		wall, err2 := strconv.ParseFloat(wallText, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		app := time.Unix(0, int64(wall*1e9))
		l.mu.Lock()
		l.samples = append(l.samples, clockSample{seq: seq, app: app, recv: recv, read: read})
		l.mu.Unlock()
	}
}

// kernelTimestamp returns the SCM_TIMESTAMPNS arrival time in a
// datagram's control messages.
func kernelTimestamp(oob []byte) (time.Time, bool) {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Time{}, false
	}
	for _, m := range msgs {
		if m.Header.Level == syscall.SOL_SOCKET && m.Header.Type == syscall.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
			ts := (*syscall.Timespec)(unsafe.Pointer(&m.Data[0]))
			return time.Unix(ts.Unix()), true
		}
	}
	return time.Time{}, false
}

// readLag is the longest time between a sample's arrival and its read.
func readLag(samples []clockSample) time.Duration {
	lag := time.Duration(0)
	for _, s := range samples {
		lag = max(lag, s.read.Sub(s.recv))
	}
	return lag
}

// since returns the samples received after t, in send order.
func (l *clockListener) since(t time.Time) []clockSample {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []clockSample
	for _, s := range l.samples {
		if s.recv.After(t) {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

// lastSample is the sample with the highest sequence number so far.
func (l *clockListener) lastSample() clockSample {
	l.mu.Lock()
	defer l.mu.Unlock()
	var last clockSample
	for _, s := range l.samples {
		if s.seq > last.seq {
			last = s
		}
	}
	return last
}

// lastSeq is the highest sequence number received so far.
func (l *clockListener) lastSeq() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.samples {
		n = max(n, s.seq)
	}
	return n
}

// waitSamples waits until n samples arrived after t.
func (l *clockListener) waitSamples(tb testing.TB, t time.Time, n int) []clockSample {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if s := l.since(t); len(s) >= n {
			return s
		}
		if time.Now().After(deadline) {
			tb.Fatalf("only %d clock samples after 30s", len(l.since(t)))
		}
		l.hello() // keeps the flow known to conntrack
		time.Sleep(10 * time.Millisecond)
	}
}

func medianSkew(samples []clockSample) time.Duration {
	skews := make([]time.Duration, len(samples))
	for i, s := range samples {
		skews[i] = s.skew()
	}
	slices.Sort(skews)
	return skews[len(skews)/2]
}

// TestClockRightAfterResume measures the machine's wall clock against the
// host's from the first instruction after a restore: the app sends its
// time.time() over UDP every millisecond, and the first datagram sent after
// the restore is compared with the host time it arrived at (an upper bound
// on the skew: transit time adds to it).
//
// Without torpor's freeze (SIGSTOP before the checkpoint, SIGCONT once the
// daemon has seen the clock right), this failed on the pinned gVisor build in
// about one resume in three: after seconds asleep the first reads were behind
// by the whole time suspended, for tens of milliseconds.
func TestClockRightAfterResume(t *testing.T) {
	const limit = 50 * time.Millisecond
	d := newDaemon(t)
	l := listenClock(t)
	m := d.create(hookConfig(nil, map[string]string{"CLOCK_PORT": strconv.Itoa(l.port())}))
	l.open(m.PrivateIP)
	steady := l.waitSamples(t, time.Now(), 500)
	t.Logf("while running: median skew %v over %d samples", medianSkew(steady), len(steady))

	for i, asleep := range []time.Duration{time.Second, 3 * time.Second, 10 * time.Second} {
		d.suspend(m.ID)
		suspended := time.Now()
		time.Sleep(asleep)
		before := time.Now()
		lastSeq := l.lastSeq()
		last := l.lastSample()
		if resp := d.start(m.ID); !resp.FromSnapshot {
			t.Fatal("not resumed")
		}
		returned := time.Now()
		after := l.waitSamples(t, before, 101)
		// A datagram the app stamped and sent just before the freeze can
		// still sit in the sandbox's network stack when the checkpoint is
		// taken, and leave it only after the restore (CI, 2026-12-02: seq
		// lastSeq+1, stamped 1 ms after the last one received before the
		// suspend, 10 s behind; again on 2026-12-03 at load ~10, stamped
		// 10 ms after the suspend call began and 3 s behind). Its stamp is
		// right for when it was taken, before the suspend call returned,
		// and only the one datagram right after the last received can be
		// in flight: it is not judged. A clock left at the snapshot's time
		// would still break the datagrams after it, judged below (it lasted
		// tens of milliseconds, at one datagram per millisecond).
		if after[0].seq == last.seq+1 && after[0].app.Before(suspended) {
			t.Logf("datagram %d was stamped %v after the last one before the suspend and before the suspend call returned, and delivered after the restore (in flight at the checkpoint): not judged",
				after[0].seq, after[0].app.Sub(last.app))
			after = after[1:]
		}
		first := after[0]
		worst := time.Duration(0)
		for _, s := range after[:100] {
			worst = max(worst, s.skew().Abs())
		}
		ev := d.event(m.ID, "resume")
		t.Logf("resume %d after %v asleep: first datagram (seq %d, last before the suspend %d) sent at %s, "+
			"received %v after start was called and %v before it returned: skew %v; worst of the first 100: %v; "+
			"daemon's clock check: %vms ± %vms; the test read them up to %v after they arrived",
			i+1, asleep, first.seq, lastSeq, first.app.Format("15:04:05.000000"),
			first.recv.Sub(before).Round(time.Microsecond), returned.Sub(first.recv).Round(time.Microsecond),
			first.skew().Round(time.Microsecond), worst.Round(time.Microsecond),
			ev.Field("clock_skew_ms"), ev.Field("clock_uncertainty_ms"), readLag(after[:100]).Round(time.Microsecond))
		if first.seq != lastSeq+1 {
			t.Logf("note: datagrams %d to %d were lost, the first one received is not the first sent after the restore", lastSeq+1, first.seq-1)
		}
		// Every datagram was sent after start was called and before it was
		// received, so a right clock stamps it between the two (give or take
		// the limit). These bounds hold however loaded the host is; a clock
		// left at the snapshot's time breaks the first by the time asleep.
		for _, s := range after[:100] {
			if s.app.Before(before.Add(-limit)) {
				t.Fatalf("clock behind after resume: datagram %d (first after the restore: %d) stamped %v before start was called; arrived %v after it, read %v after that",
					s.seq, first.seq, before.Sub(s.app), s.recv.Sub(before), s.read.Sub(s.recv))
			}
			if s.app.After(s.recv.Add(limit)) {
				t.Fatalf("clock ahead after resume: datagram %d (first after the restore: %d) stamped %v after it arrived (%v after start was called)",
					s.seq, first.seq, s.app.Sub(s.recv), s.recv.Sub(before))
			}
		}
	}
}
