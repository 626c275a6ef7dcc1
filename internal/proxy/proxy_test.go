package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

func at(port int, path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", port, path) }

func TestWakeFromSuspended(t *testing.T) {
	f := newFleet(t)
	hp := freePort(t)
	f.add("app1", "m1", model.StateSuspended, false, service(hp))
	p, _ := startProxy(t, f, Config{})
	code, body := get(t, client(t), at(hp, "/"))
	if code != 200 || body != "m1" {
		t.Fatalf("got %d %q, want 200 m1", code, body)
	}
	if n := f.count(f.starts, "m1"); n != 1 {
		t.Errorf("Start called %d times, want 1", n)
	}
	if s := p.Stats()["app1"]; s.Wakes != 1 || s.Requests != 1 || s.Started != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestWakeFromStopped(t *testing.T) {
	f := newFleet(t)
	hp := freePort(t)
	f.add("app1", "m1", model.StateStopped, false, service(hp))
	startProxy(t, f, Config{})
	if code, body := get(t, client(t), at(hp, "/")); code != 200 || body != "m1" {
		t.Fatalf("got %d %q, want 200 m1", code, body)
	}
	if f.state("m1") != model.StateStarted {
		t.Errorf("machine is %s", f.state("m1"))
	}
}

func TestWakePrefersSuspended(t *testing.T) {
	f := newFleet(t)
	hp := freePort(t)
	f.add("app1", "a-stopped", model.StateStopped, false, service(hp))
	f.add("app1", "b-created", model.StateCreated, false, service(hp))
	f.add("app1", "c-suspended", model.StateSuspended, false, service(hp))
	startProxy(t, f, Config{})
	if code, body := get(t, client(t), at(hp, "/")); code != 200 || body != "c-suspended" {
		t.Fatalf("got %d %q, want 200 c-suspended", code, body)
	}
	if n := f.total(f.starts); n != 1 {
		t.Errorf("%d Start calls, want 1", n)
	}
}

func TestBurstSingleFlight(t *testing.T) {
	const n = 1000
	f := newFleet(t)
	hp := freePort(t)
	// Two machines that could be woken, and a soft limit high enough that
	// one machine takes the whole burst.
	svc := service(hp, withLimits(n, 0))
	f.add("app1", "m1", model.StateSuspended, false, svc)
	f.add("app1", "m2", model.StateSuspended, false, svc)
	// The wake is slow enough for the burst to pile up behind it.
	f.startHook = func(ctx context.Context, id string) error {
		time.Sleep(300 * time.Millisecond)
		return nil
	}
	p, _ := startProxy(t, f, Config{})
	c := client(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _ := get(t, c, at(hp, "/"))
			mu.Lock()
			codes[code]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if codes[200] != n {
		t.Errorf("status counts %v, want %d × 200", codes, n)
	}
	if starts := f.total(f.starts); starts != 1 {
		t.Errorf("%d Start calls, want exactly 1", starts)
	}
	s := p.Stats()["app1"]
	if s.Wakes != 1 || s.Requests != n || s.Unavailable != 0 || s.Queued != 0 {
		t.Errorf("stats %+v", s)
	}
	t.Logf("%d requests waited for the wake", s.QueuedTotal)
}

func TestQueueOverflow(t *testing.T) {
	f := newFleet(t)
	hp := freePort(t)
	f.add("app1", "m1", model.StateSuspended, false, service(hp))
	gate := make(chan struct{})
	f.startHook = func(ctx context.Context, id string) error {
		<-gate
		return nil
	}
	p, _ := startProxy(t, f, Config{QueueLimit: 5})
	c := client(t)
	var wg sync.WaitGroup
	codes := make([]int, 5)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _ = get(t, c, at(hp, "/"))
		}()
	}
	eventually(t, "5 queued requests", func() bool { return p.Stats()["app1"].Queued == 5 })
	code, body := get(t, c, at(hp, "/"))
	if code != 503 || !strings.Contains(body, "queue limit 5") || !strings.Contains(body, `app \"app1\"`) {
		t.Errorf("overflowing request: %d %s", code, body)
	}
	close(gate)
	wg.Wait()
	for i, code := range codes {
		if code != 200 {
			t.Errorf("queued request %d: %d, want 200", i, code)
		}
	}
	if s := p.Stats()["app1"]; s.Unavailable != 1 || s.Wakes != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestWakeFailure(t *testing.T) {
	f := newFleet(t)
	hp := freePort(t)
	f.add("app1", "m1", model.StateSuspended, false, service(hp))
	f.startHook = func(ctx context.Context, id string) error {
		return errors.New("runsc restore: boom")
	}
	p, _ := startProxy(t, f, Config{})
	resp, err := client(t).Get(at(hp, "/"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Error string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 503 || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("got %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{`app "app1"`, "m1", "boom"} {
		if !strings.Contains(body.Error, want) {
			t.Errorf("error %q does not say %q", body.Error, want)
		}
	}
	if s := p.Stats()["app1"]; s.WakeFailures != 1 || s.Unavailable != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestWakeTimeout(t *testing.T) {
	f := newFleet(t)
	hp := freePort(t)
	f.add("app1", "m1", model.StateSuspended, false, service(hp))
	f.startHook = func(ctx context.Context, id string) error {
		<-ctx.Done()
		return ctx.Err()
	}
	startProxy(t, f, Config{WakeTimeout: 300 * time.Millisecond})
	code, body := get(t, client(t), at(hp, "/"))
	if code != 503 || !strings.Contains(body, "did not start within 300ms") || !strings.Contains(body, "m1") {
		t.Errorf("got %d %s", code, body)
	}
}

func TestAutostartOff(t *testing.T) {
	f := newFleet(t)
	hp := freePort(t)
	f.add("app1", "m1", model.StateStopped, false, service(hp, withAutostart(false)))
	startProxy(t, f, Config{})
	code, body := get(t, client(t), at(hp, "/"))
	if code != 503 || !strings.Contains(body, "autostart is off") {
		t.Errorf("got %d %s", code, body)
	}
	if n := f.total(f.starts); n != 0 {
		t.Errorf("%d Start calls, want 0", n)
	}
}

// A Start that conflicts because the machine was started behind the proxy's
// back is a success.
func TestWakeConflictIsSuccess(t *testing.T) {
	f := newFleet(t)
	hp := freePort(t)
	f.add("app1", "m1", model.StateStarted, false, service(hp))
	f.staleUntilStart = map[string]bool{"m1": true}
	startProxy(t, f, Config{})
	if code, body := get(t, client(t), at(hp, "/")); code != 200 || body != "m1" {
		t.Fatalf("got %d %q", code, body)
	}
	if n := f.count(f.starts, "m1"); n != 1 {
		t.Errorf("Start called %d times, want 1", n)
	}
}

func idleConfig() Config {
	return Config{IdleTimeout: 100 * time.Millisecond, CheckInterval: 20 * time.Millisecond}
}

func TestAutostopSuspendThenWake(t *testing.T) {
	f := newFleet(t)
	hp := freePort(t)
	f.add("app1", "m1", model.StateSuspended, false, service(hp, withAutostop(model.AutostopSuspend)))
	p, _ := startProxy(t, f, idleConfig())
	c := client(t)
	if code, _ := get(t, c, at(hp, "/")); code != 200 {
		t.Fatalf("first request: %d", code)
	}
	eventually(t, "suspend", func() bool { return f.state("m1") == model.StateSuspended })
	if n := f.count(f.stops, "m1"); n != 0 {
		t.Errorf("Stop called %d times", n)
	}
	c.CloseIdleConnections()
	if code, body := get(t, c, at(hp, "/")); code != 200 || body != "m1" {
		t.Fatalf("request after suspend: %d %q", code, body)
	}
	if n := f.count(f.starts, "m1"); n != 2 {
		t.Errorf("Start called %d times, want 2", n)
	}
	if s := p.Stats()["app1"]; s.Suspends < 1 || s.Wakes != 2 {
		t.Errorf("stats %+v", s)
	}
}

func TestAutostopStopThenWake(t *testing.T) {
	f := newFleet(t)
	hp := freePort(t)
	f.add("app1", "m1", model.StateStarted, false, service(hp, withAutostop(model.AutostopStop)))
	p, _ := startProxy(t, f, idleConfig())
	eventually(t, "stop", func() bool { return f.state("m1") == model.StateStopped })
	if n := f.count(f.suspends, "m1"); n != 0 {
		t.Errorf("Suspend called %d times", n)
	}
	if code, body := get(t, client(t), at(hp, "/")); code != 200 || body != "m1" {
		t.Fatalf("request after stop: %d %q", code, body)
	}
	if s := p.Stats()["app1"]; s.Stops < 1 || s.Wakes != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestAutostopSuspendIneligibleFallsBackToStop(t *testing.T) {
	f := newFleet(t)
	hp := freePort(t)
	f.add("app1", "m1", model.StateStarted, false, service(hp, withAutostop(model.AutostopSuspend)))
	f.suspendErr = model.Errorf(model.KindPrecondition, "machine m1 has a GPU and cannot be suspended")
	startProxy(t, f, idleConfig())
	eventually(t, "stop", func() bool { return f.state("m1") == model.StateStopped })
	if n := f.count(f.suspends, "m1"); n != 1 {
		t.Errorf("Suspend called %d times, want 1", n)
	}
}

func TestAutostopOffByDefault(t *testing.T) {
	f := newFleet(t)
	hp := freePort(t)
	f.add("app1", "m1", model.StateStarted, false, service(hp))
	p, _ := startProxy(t, f, idleConfig())
	waitReaps(t, p, 15)
	if f.state("m1") != model.StateStarted {
		t.Errorf("machine is %s, want started", f.state("m1"))
	}
}

func TestMinMachinesRunning(t *testing.T) {
	f := newFleet(t)
	hp := freePort(t)
	svc := service(hp, withAutostop(model.AutostopStop), withMinRunning(1))
	f.add("app1", "m1", model.StateStarted, false, svc)
	f.add("app1", "m2", model.StateStarted, false, svc)
	p, _ := startProxy(t, f, idleConfig())
	eventually(t, "one stop", func() bool { return f.total(f.stops) == 1 })
	waitReaps(t, p, 15)
	if n := f.total(f.stops); n != 1 {
		t.Errorf("%d Stop calls, want 1", n)
	}
	started := 0
	for _, id := range []string{"m1", "m2"} {
		if f.state(id) == model.StateStarted {
			started++
		}
	}
	if started != 1 {
		t.Errorf("%d machines started, want 1", started)
	}
}

func TestStreamingPreventsAutostop(t *testing.T) {
	f := newFleet(t)
	hp := freePort(t)
	f.add("app1", "m1", model.StateStarted, false, service(hp, withAutostop(model.AutostopSuspend)))
	p, _ := startProxy(t, f, idleConfig())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", at(hp, "/stream"), nil)
	resp, err := client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "m1\n" {
		t.Fatalf("stream: %q %v", line, err)
	}
	waitReaps(t, p, 15)
	if n := f.count(f.suspends, "m1"); n != 0 {
		t.Fatalf("machine suspended %d times during a streaming response", n)
	}
	cancel()
	eventually(t, "suspend after the stream ends", func() bool { return f.state("m1") == model.StateSuspended })
}

func TestTCPWakeAndProxy(t *testing.T) {
	f := newFleet(t)
	hp := freePort(t)
	f.add("app1", "m1", model.StateSuspended, true, tcpService(hp))
	p, _ := startProxy(t, f, Config{})
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", hp))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	for _, msg := range []string{"hello", "again"} {
		fmt.Fprintf(c, "%s\n", msg)
		line, err := r.ReadString('\n')
		if err != nil || line != "m1:"+msg+"\n" {
			t.Fatalf("echo: %q %v", line, err)
		}
	}
	// Half-close: the machine's answer still comes back, then EOF.
	fmt.Fprintf(c, "last\n")
	c.(*net.TCPConn).CloseWrite()
	if line, _ := r.ReadString('\n'); line != "m1:last\n" {
		t.Errorf("after half-close: %q", line)
	}
	if s := p.Stats()["app1"]; s.Connections != 1 || s.Wakes != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestTCPConnectionPreventsAutostop(t *testing.T) {
	f := newFleet(t)
	hp := freePort(t)
	f.add("app1", "m1", model.StateStarted, true, tcpService(hp, withAutostop(model.AutostopStop)))
	p, _ := startProxy(t, f, idleConfig())
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", hp))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "hi\n")
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "m1:hi\n" {
		t.Fatalf("echo: %q %v", line, err)
	}
	waitReaps(t, p, 15)
	if n := f.count(f.stops, "m1"); n != 0 {
		t.Fatalf("machine stopped %d times while a connection was open", n)
	}
	c.Close()
	eventually(t, "stop after the connection closes", func() bool { return f.state("m1") == model.StateStopped })
}

func TestHardLimit(t *testing.T) {
	f := newFleet(t)
	hp := freePort(t)
	fm := f.add("app1", "m1", model.StateStarted, false, service(hp, withLimits(1, 2)))
	p, _ := startProxy(t, f, Config{})
	c := client(t)
	var wg sync.WaitGroup
	codes := make([]int, 4)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _ = get(t, c, at(hp, "/block"))
		}()
	}
	eventually(t, "2 in flight and 2 queued", func() bool {
		return fm.inflight.Load() == 2 && p.Stats()["app1"].Queued == 2
	})
	f.unblock()
	wg.Wait()
	for i, code := range codes {
		if code != 200 {
			t.Errorf("request %d: %d", i, code)
		}
	}
	if m := fm.maxInflight.Load(); m != 2 {
		t.Errorf("machine saw %d concurrent requests, hard_limit is 2", m)
	}
}

func TestHardLimitTimeout(t *testing.T) {
	f := newFleet(t)
	hp := freePort(t)
	fm := f.add("app1", "m1", model.StateStarted, false, service(hp, withLimits(1, 1)))
	startProxy(t, f, Config{WakeTimeout: 200 * time.Millisecond})
	c := client(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		get(t, c, at(hp, "/block"))
	}()
	defer func() { f.unblock(); <-done }()
	eventually(t, "one request in flight", func() bool { return fm.inflight.Load() == 1 })
	code, body := get(t, c, at(hp, "/"))
	if code != 503 || !strings.Contains(body, "hard_limit") {
		t.Errorf("got %d %s", code, body)
	}
}

func TestSoftLimitWakesAnother(t *testing.T) {
	f := newFleet(t)
	hp := freePort(t)
	svc := service(hp, withLimits(1, 0))
	a := f.add("app1", "a", model.StateStarted, false, svc)
	f.add("app1", "b", model.StateSuspended, false, svc)
	startProxy(t, f, Config{})
	c := client(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		get(t, c, at(hp, "/block"))
	}()
	defer func() { f.unblock(); <-done }()
	eventually(t, "a busy", func() bool { return a.inflight.Load() == 1 })
	// a is at its soft limit: this request still goes to a (no hard limit)
	// and wakes b.
	if code, body := get(t, c, at(hp, "/")); code != 200 || body != "a" {
		t.Errorf("got %d %q, want 200 a", code, body)
	}
	eventually(t, "b woken", func() bool { return f.state("b") == model.StateStarted })
	if code, body := get(t, c, at(hp, "/")); code != 200 || body != "b" {
		t.Errorf("got %d %q, want 200 b (least loaded)", code, body)
	}
	if n := f.count(f.starts, "b"); n != 1 {
		t.Errorf("b started %d times", n)
	}
}

func TestCordonedMachineGetsNoTraffic(t *testing.T) {
	f := newFleet(t)
	hp := freePort(t)
	f.add("app1", "a", model.StateStarted, false, service(hp)).m.Cordoned = true
	f.add("app1", "b", model.StateSuspended, false, service(hp))
	startProxy(t, f, Config{})
	if code, body := get(t, client(t), at(hp, "/")); code != 200 || body != "b" {
		t.Errorf("got %d %q, want 200 b", code, body)
	}
}

func TestListenersFollowConfigAndConflicts(t *testing.T) {
	f := newFleet(t)
	hp := freePort(t)
	f.add("app1", "m1", model.StateStarted, false, service(hp))
	f.add("app2", "m2", model.StateStarted, false, service(hp))
	p, logs := startProxy(t, f, Config{RefreshInterval: time.Hour})
	c := client(t)
	if code, body := get(t, c, at(hp, "/")); code != 200 || body != "m1" {
		t.Errorf("got %d %q, want 200 m1 (first app in name order)", code, body)
	}
	if !strings.Contains(logs.String(), "port conflict") {
		t.Errorf("conflict not logged")
	}
	// app1 goes away: the port passes to app2.
	f.remove("m1")
	if err := p.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.CloseIdleConnections()
	if code, body := get(t, c, at(hp, "/")); code != 200 || body != "m2" {
		t.Errorf("got %d %q, want 200 m2", code, body)
	}
	// app2 goes too: nothing listens.
	f.remove("m2")
	if err := p.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", hp), 5*time.Second); err == nil {
		t.Errorf("port %d still open", hp)
	}
}

func TestPortInUseIsNotFatal(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	taken := busy.Addr().(*net.TCPAddr).Port
	f := newFleet(t)
	hp := freePort(t)
	f.add("app1", "m1", model.StateStarted, false, service(taken), service(hp))
	f.ms["m1"].m.Config.Services[1].InternalPort = 8081
	_, logs := startProxy(t, f, Config{})
	if code, body := get(t, client(t), at(hp, "/")); code != 200 || body != "m1" {
		t.Errorf("got %d %q", code, body)
	}
	if !strings.Contains(logs.String(), "cannot publish service") {
		t.Errorf("listen failure not logged")
	}
}

// An upgraded connection (a websocket, say) counts as activity for its whole
// life.
func TestUpgradedConnectionPreventsAutostop(t *testing.T) {
	f := newFleet(t)
	hp := freePort(t)
	f.add("app1", "m1", model.StateSuspended, false, service(hp, withAutostop(model.AutostopSuspend)))
	p, _ := startProxy(t, f, idleConfig())
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", hp))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /upgrade HTTP/1.1\r\nHost: app1\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	echo := func(msg string) {
		t.Helper()
		fmt.Fprintf(c, "%s\n", msg)
		if line, err := r.ReadString('\n'); err != nil || line != "m1:"+msg+"\n" {
			t.Fatalf("echo: %q %v", line, err)
		}
	}
	echo("one")
	waitReaps(t, p, 15)
	echo("two")
	if n := f.count(f.suspends, "m1"); n != 0 {
		t.Fatalf("machine suspended %d times during an upgraded connection", n)
	}
	c.Close()
	eventually(t, "suspend after the connection closes", func() bool { return f.state("m1") == model.StateSuspended })
}

// A request arriving while the proxy suspends the machine waits for the
// suspend to finish, then wakes the machine again.
func TestRequestDuringAutostopWakesAgain(t *testing.T) {
	f := newFleet(t)
	hp := freePort(t)
	f.add("app1", "m1", model.StateStarted, false, service(hp, withAutostop(model.AutostopSuspend)))
	entered, gate := make(chan struct{}), make(chan struct{})
	var once sync.Once
	f.sleepHook = func(id string) {
		once.Do(func() { close(entered) })
		<-gate
	}
	p, _ := startProxy(t, f, idleConfig())
	<-entered
	done := make(chan struct{})
	var code int
	var body string
	go func() {
		defer close(done)
		code, body = get(t, client(t), at(hp, "/"))
	}()
	eventually(t, "a queued request", func() bool { return p.Stats()["app1"].Queued == 1 })
	close(gate)
	<-done
	if code != 200 || body != "m1" {
		t.Errorf("got %d %q", code, body)
	}
	if n := f.count(f.starts, "m1"); n != 1 {
		t.Errorf("Start called %d times, want 1", n)
	}
}

// TestStopThroughTheAPIIsSeenAtOnce: a machine the proxy woke (so warm) is
// stopped by someone else; once the machine layer reports the change
// (MachineChanged, which the daemon calls before the stop returns), the
// proxy sees it stopped without waiting for a reconcile, and the next
// request wakes it again instead of going to the dead address (the
// soak's proxied cold starts: "no route to host", dial timeouts, or no
// answer while the dial to the stopped machine was retried).
func TestStopThroughTheAPIIsSeenAtOnce(t *testing.T) {
	f := newFleet(t)
	hp := freePort(t)
	f.add("app1", "m1", model.StateStopped, false, service(hp))
	// No reconcile during the test but the first: what the proxy knows
	// of the stop is what MachineChanged told it.
	p, _ := startProxy(t, f, Config{RefreshInterval: time.Hour})
	c := client(t)
	if code, body := get(t, c, at(hp, "/")); code != 200 || body != "m1" {
		t.Fatalf("first request: %d %q", code, body)
	}
	c.CloseIdleConnections()
	for round := 1; round <= 3; round++ {
		if err := f.Stop(context.Background(), "app1", "m1", model.StopRequest{}); err != nil {
			t.Fatal(err)
		}
		p.MachineChanged(model.Change{Machine: model.Machine{ID: "m1", App: "app1", State: model.StateStopped}, From: model.StateStarted})
		if st, _ := p.app("app1").stateOf("m1"); st != model.StateStopped {
			t.Fatalf("round %d: right after the change the proxy sees the machine %s", round, st)
		}
		if code, body := get(t, c, at(hp, "/")); code != 200 || body != "m1" {
			t.Fatalf("round %d: request after the stop: %d %q", round, code, body)
		}
		if n := f.count(f.starts, "m1"); n != round+1 {
			t.Fatalf("round %d: Start called %d times, want %d", round, n, round+1)
		}
		c.CloseIdleConnections()
	}
}

// TestEquallyLoadedMachinesShareTraffic: sequential requests (each machine
// idle at every pick) go to every machine, about evenly.
func TestEquallyLoadedMachinesShareTraffic(t *testing.T) {
	f := newFleet(t)
	hp := freePort(t)
	for _, id := range []string{"m1", "m2", "m3"} {
		f.add("app1", id, model.StateStarted, false, service(hp))
	}
	startProxy(t, f, Config{})
	c := client(t)
	const n = 300
	got := map[string]int{}
	for range n {
		code, body := get(t, c, at(hp, "/"))
		if code != 200 {
			t.Fatalf("got %d %q", code, body)
		}
		got[body]++
	}
	t.Logf("%d sequential requests: %v", n, got)
	// Binomial(300, 1/3): mean 100, sd 8; below 50 is 6 sd away.
	for _, id := range []string{"m1", "m2", "m3"} {
		if got[id] < 50 {
			t.Errorf("machine %s got %d of %d requests: %v", id, got[id], n, got)
		}
	}
}
