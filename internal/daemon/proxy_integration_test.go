package daemon_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/freeport"
	"github.com/torpor-dev/torpor/internal/model"
)

// freePort returns a loopback TCP port nobody listens on now, outside the
// ephemeral range and not returned before in this test binary (freeport):
// two calls in a row once gave one test the same port for the daemon's
// --listen and a machine's service, and a port from the ephemeral range was
// taken by another process's connection before a daemon bound it.
func freePort(t testing.TB) int {
	t.Helper()
	port, err := freeport.Pick()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// serviceConfig is the counter app published by the proxy on port.
func serviceConfig(port int, handlers []string, autostop model.Autostop, min int) model.MachineConfig {
	cfg := counterConfig(nil)
	on := true
	cfg.Services = []model.Service{{
		Protocol:           "tcp",
		InternalPort:       8080,
		Ports:              []model.Port{{Port: &port, Handlers: handlers}},
		Autostop:           &autostop,
		Autostart:          &on,
		MinMachinesRunning: &min,
	}}
	return cfg
}

var proxyClient = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1000}}

// viaProxy GETs / through the proxy on port and decodes the app's answer.
func viaProxy(t testing.TB, port int) appState {
	t.Helper()
	var st appState
	resp, err := proxyClient.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		t.Fatalf("GET via proxy: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET via proxy: %s: %s", resp.Status, body)
	}
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("GET via proxy: %v: %s", err, body)
	}
	return st
}

// waitProxy waits until the proxy serves port.
func waitProxy(t testing.TB, port int) appState {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := proxyClient.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return viaProxy(t, port)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy never served port %d: %v", port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// events returns the machine's events of type typ newer than after (ms).
func (d *daemon) eventsOf(id, typ string, after int64) []model.Event {
	d.t.Helper()
	evs, err := d.c.Events(ctx(d.t), d.app, id)
	if err != nil {
		d.t.Fatal(err)
	}
	var out []model.Event
	for _, ev := range evs {
		if ev.Type == typ && ev.Timestamp >= after {
			out = append(out, ev)
		}
	}
	return out
}

func TestProxyWakesSuspendedAndStoppedMachines(t *testing.T) {
	d := newDaemon(t)
	port := freePort(t)
	m := d.create(serviceConfig(port, []string{"http"}, model.AutostopOff, 0))
	first := waitProxy(t, port)

	d.suspend(m.ID)
	resumed := viaProxy(t, port)
	if resumed.Started != first.Started {
		t.Fatalf("request to a suspended machine did not resume it: started %v, then %v", first.Started, resumed.Started)
	}
	if ev := d.event(m.ID, "resume"); ev.Source != model.SourceProxy || ev.Field("from_snapshot") != true {
		t.Fatalf("resume event = %+v", ev)
	}

	if err := d.c.Stop(ctx(t), d.app, m.ID, model.StopRequest{Signal: "SIGKILL"}); err != nil {
		t.Fatal(err)
	}
	cold := viaProxy(t, port)
	if cold.Started == first.Started {
		t.Fatal("request to a stopped machine did not cold-start it")
	}
	d.wantState(m.ID, model.StateStarted)
}

func TestProxyBurstWakesSuspendedMachineOnce(t *testing.T) {
	d := newDaemon(t)
	port := freePort(t)
	cfg := serviceConfig(port, []string{"http"}, model.AutostopOff, 0)
	// The proxy meters the burst to what one small app takes at once.
	cfg.Services[0].Concurrency = &model.Concurrency{Type: "requests", SoftLimit: 40, HardLimit: 50}
	m := d.create(cfg)
	waitProxy(t, port)
	d.suspend(m.ID)
	since := time.Now().UnixMilli()

	const n = 1000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := proxyClient.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
			if err != nil {
				errs <- err
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				errs <- fmt.Errorf("status %s", resp.Status)
			}
		}()
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if failed == 0 {
			t.Errorf("first failure: %v", err)
		}
		failed++
	}
	if failed > 0 {
		t.Fatalf("%d of %d requests failed", failed, n)
	}
	if resumes := d.eventsOf(m.ID, "resume", since); len(resumes) != 1 {
		t.Fatalf("%d resumes for a burst of %d requests, want exactly 1", len(resumes), n)
	}
}

func TestProxyAutostopSuspendsIdleMachineAndWakesItAgain(t *testing.T) {
	d := newDaemon(t, "--proxy-idle-timeout", "1s", "--proxy-check-interval", "200ms")
	port := freePort(t)
	m := d.create(serviceConfig(port, []string{"http"}, model.AutostopSuspend, 0))
	first := waitProxy(t, port)

	if _, err := d.c.Wait(ctx(t), d.app, m.ID, []model.State{model.StateSuspended}, 60*time.Second); err != nil {
		t.Fatalf("idle machine not suspended: %v", err)
	}
	if ev := d.event(m.ID, "suspend"); ev.Source != model.SourceProxy {
		t.Fatalf("suspend event = %+v, want source proxy", ev)
	}
	again := viaProxy(t, port)
	if again.Started != first.Started || again.Count < first.Count {
		t.Fatalf("woken machine lost its state: %+v then %+v", first, again)
	}
}

func TestProxyKeepsMinMachinesRunning(t *testing.T) {
	d := newDaemon(t, "--proxy-idle-timeout", "1s", "--proxy-check-interval", "200ms")
	port := freePort(t)
	a := d.create(serviceConfig(port, []string{"http"}, model.AutostopSuspend, 1))
	b := d.create(serviceConfig(port, []string{"http"}, model.AutostopSuspend, 1))
	waitProxy(t, port)

	// One of the two goes to sleep; the other must stay started for good.
	deadline := time.Now().Add(60 * time.Second)
	for d.get(a.ID).State != model.StateSuspended && d.get(b.ID).State != model.StateSuspended {
		if time.Now().After(deadline) {
			t.Fatal("no idle machine was suspended")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // many reaper passes past the idle timeout
	started := 0
	for _, id := range []string{a.ID, b.ID} {
		if d.get(id).State == model.StateStarted {
			started++
		}
	}
	if started != 1 {
		t.Fatalf("%d machines started, want min_machines_running = 1", started)
	}
}

func TestProxyTCPService(t *testing.T) {
	d := newDaemon(t)
	port := freePort(t)
	m := d.create(serviceConfig(port, nil, model.AutostopOff, 0)) // no handlers: raw TCP
	d.waitCount(m.ID, 1)
	d.suspend(m.ID)

	// A raw TCP connection wakes the machine and is spliced to it.
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	fmt.Fprintf(conn, "GET / HTTP/1.0\r\n\r\n")
	reply, err := io.ReadAll(conn)
	if err != nil || !strings.HasPrefix(string(reply), "HTTP/1.1 200") || !strings.Contains(string(reply), `"count"`) {
		t.Fatalf("raw TCP reply %q: %v", reply, err)
	}
	d.wantState(m.ID, model.StateStarted)
}

func TestKeepAliveConnectionSurvivesSuspendResume(t *testing.T) {
	d := newDaemon(t)
	m := d.create(counterConfig(nil))
	d.httpGet(d.get(m.ID)) // the app is up
	conn, err := net.DialTimeout("tcp", m.PrivateIP+":8080", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	ask := func() appState {
		t.Helper()
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: machine\r\n\r\n")
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("on the kept-alive connection: %v", err)
		}
		defer resp.Body.Close()
		var st appState
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	before := ask()
	d.suspend(m.ID)
	if resp := d.start(m.ID); !resp.FromSnapshot {
		t.Fatal("not resumed")
	}
	after := ask() // same TCP connection, opened before the suspend
	if after.Started != before.Started || after.Count < before.Count {
		t.Fatalf("answers from different processes: %+v then %+v", before, after)
	}
}
