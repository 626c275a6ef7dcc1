package daemon_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// checkedConfig is the volume test app (without a volume) published by the
// proxy on port, with an HTTP check of /health every interval.
func checkedConfig(port int, interval time.Duration, autostop model.Autostop) model.MachineConfig {
	cfg := volConfig("")
	on := true
	cfg.Services = []model.Service{{
		Protocol: "tcp", InternalPort: 8080, Autostop: &autostop, Autostart: &on,
		Ports:  []model.Port{{Port: &port, Handlers: []string{"http"}}},
		Checks: []model.Check{{Type: "http", Path: "/health", Interval: model.Duration{Duration: interval}, Timeout: model.Duration{Duration: 500 * time.Millisecond}}},
	}}
	cfg.Checks = map[string]model.Check{"alive": {Type: "tcp", Port: 8080, Interval: model.Duration{Duration: interval}}}
	return cfg
}

// checkStatus returns the status of the machine's service check.
func (d *daemon) checkStatus(id string) model.CheckStatus {
	d.t.Helper()
	for _, c := range d.get(id).Checks {
		if c.Name == "servicecheck-00-http-8080" {
			return c
		}
	}
	d.t.Fatalf("machine %s has no servicecheck-00-http-8080: %+v", id, d.get(id).Checks)
	return model.CheckStatus{}
}

// waitCheck waits until the machine's service check has status want and
// returns how long that took.
func (d *daemon) waitCheck(id, want string) time.Duration {
	d.t.Helper()
	begin := time.Now()
	for {
		c := d.checkStatus(id)
		if c.Status == want {
			return time.Since(begin)
		}
		if time.Since(begin) > 30*time.Second {
			d.t.Fatalf("check of machine %s stayed %s (%s), want %s", id, c.Status, c.Output, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// viaProxyIDs asks the proxy on port which machine answers /id, n times.
func viaProxyIDs(t *testing.T, port, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		var ans struct{ ID string }
		if err := callAppAt(fmt.Sprintf("127.0.0.1:%d", port), "GET", "/id", &ans); err != nil {
			t.Fatalf("GET /id via the proxy: %v", err)
		}
		got[ans.ID]++
	}
	return got
}

// waitProxyID waits until the proxy serves the app's /id on port.
func waitProxyID(t *testing.T, port int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var ans struct{ ID string }
	for {
		err := callAppAt(fmt.Sprintf("127.0.0.1:%d", port), "GET", "/id", &ans)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy never served port %d: %v", port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestChecksDecideWhereTheProxyRoutes: two machines behind the proxy with
// an HTTP check; one starts failing it (the proxy skips it), recovers
// (traffic comes back), and flaps again.
func TestChecksDecideWhereTheProxyRoutes(t *testing.T) {
	d := newParallelDaemon(t)
	port := freePort(t)
	cfg := checkedConfig(port, time.Second, model.AutostopOff)
	cfg.Services[0].Concurrency = &model.Concurrency{Type: "requests", SoftLimit: 1}
	a, b := d.create(cfg), d.create(cfg)
	d.waitCheck(a.ID, model.CheckPassing)
	d.waitCheck(b.ID, model.CheckPassing)
	if c := d.get(a.ID).Checks; len(c) != 2 || c[0].Name != "alive" || c[0].Status != model.CheckPassing {
		t.Fatalf("machine checks: %+v", c)
	}
	waitProxyID(t, port)
	if got := viaProxyIDs(t, port, 40); got[a.ID] == 0 || got[b.ID] == 0 {
		t.Fatalf("both machines healthy: traffic %v", got)
	}
	for round := 1; round <= 2; round++ {
		var ok struct{ Sick bool }
		d.call(b, "POST", "/sick?on=1", &ok)
		took := d.waitCheck(b.ID, model.CheckCritical)
		got := viaProxyIDs(t, port, 40)
		t.Logf("flap %d: machine %s failing after %s: proxy sent %d of 40 requests to it, %d to the healthy one (%s)",
			round, b.ID, took.Round(10*time.Millisecond), got[b.ID], got[a.ID], d.checkStatus(b.ID).Output)
		if got[b.ID] != 0 {
			t.Fatalf("the proxy sent %d requests to the failing machine", got[b.ID])
		}
		d.call(b, "POST", "/sick?on=0", &ok)
		took = d.waitCheck(b.ID, model.CheckPassing)
		got = viaProxyIDs(t, port, 40)
		t.Logf("flap %d: machine %s passing again after %s: %d of 40 requests", round, b.ID, took.Round(10*time.Millisecond), got[b.ID])
		if got[b.ID] == 0 {
			t.Fatalf("the recovered machine gets no traffic: %v", got)
		}
	}
}

// TestChecksQuietWhileSuspended: checks never keep a machine awake
// (autostop suspends it though they run every 2s), none runs while it is
// suspended, and after a resume it is routable at once on its last result
// and checked right away rather than an interval later.
func TestChecksQuietWhileSuspended(t *testing.T) {
	d := newParallelDaemon(t, "--proxy-idle-timeout", "2s", "--proxy-check-interval", "250ms")
	port := freePort(t)
	const interval = 2 * time.Second
	m := d.create(checkedConfig(port, interval, model.AutostopSuspend))
	d.waitCheck(m.ID, model.CheckPassing)
	waitProxyID(t, port)
	begin := time.Now()
	if _, err := d.c.Wait(ctx(t), d.app, m.ID, []model.State{model.StateSuspended}, 30*time.Second); err != nil {
		t.Fatalf("the machine was not auto-suspended while its checks ran: %v (checks: %+v)", err, d.get(m.ID).Checks)
	}
	t.Logf("auto-suspended %s after the last request, its checks running every %s", time.Since(begin).Round(100*time.Millisecond), interval)
	before := d.checkStatus(m.ID)
	time.Sleep(2*interval + 500*time.Millisecond)
	after := d.checkStatus(m.ID)
	if after != before || before.Status != model.CheckPassing {
		t.Fatalf("check while suspended: %+v, then %+v; want it unchanged and passing", before, after)
	}
	if d.get(m.ID).State != model.StateSuspended {
		t.Fatal("a check woke the suspended machine")
	}
	// A request wakes it: served at once on the last result, and checked
	// right after the resume.
	reqBegin := time.Now()
	var hits struct{ Hits int }
	if err := callAppAt(fmt.Sprintf("127.0.0.1:%d", port), "GET", "/hits", &hits); err != nil {
		t.Fatalf("request waking the machine: %v", err)
	}
	served := time.Since(reqBegin)
	resume := d.event(m.ID, model.EventResume)
	if resume.Start() == nil || !resume.Start().FromSnapshot {
		t.Fatalf("the request did not resume the machine: %+v", resume)
	}
	resumed := time.UnixMilli(resume.Timestamp)
	deadline := time.Now().Add(5 * time.Second)
	for d.checkStatus(m.ID).UpdatedAt.Equal(after.UpdatedAt) {
		if time.Now().After(deadline) {
			t.Fatal("no check after the resume")
		}
		time.Sleep(10 * time.Millisecond)
	}
	first := d.checkStatus(m.ID)
	lag := first.UpdatedAt.Sub(resumed)
	t.Logf("request to the suspended machine served in %s; first check %s after the resume was recorded (%s); the app has answered %d checks",
		served.Round(time.Millisecond), lag.Round(time.Millisecond), first.Status, hits.Hits)
	if lag > interval/2 || first.Status != model.CheckPassing {
		t.Fatalf("first check after the resume: %+v, %s after it; want passing, well within the %s interval", first, lag, interval)
	}
}

// callAppAt makes one request to the app at host:port.
func callAppAt(hostport, method, path string, out any) error {
	req, err := http.NewRequest(method, "http://"+hostport+path, nil)
	if err != nil {
		return err
	}
	return doJSON(req, out)
}
