package proxy

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/checks"
	"github.com/torpor-dev/torpor/internal/model"
)

// withHealthCheck gives a service an HTTP check of /health every interval.
func withHealthCheck(interval time.Duration) func(*model.Service) {
	return func(s *model.Service) {
		s.Checks = []model.Check{{Type: "http", Port: s.InternalPort, Method: "GET", Path: "/health", Protocol: "http",
			Interval: model.Duration{Duration: interval}, Timeout: model.Duration{Duration: interval}}}
	}
}

// startChecked runs a proxy whose routing follows a real checks.Runner
// over the fleet.
func startChecked(t *testing.T, f *fleet, cfg Config) (*Proxy, *checks.Runner) {
	t.Helper()
	var p *Proxy
	runner := checks.New(f, checks.Config{Address: f.backend, RefreshInterval: 50 * time.Millisecond, StartupInterval: 20 * time.Millisecond,
		OnChange: func(app string) {
			if p != nil {
				p.ChecksChanged(app)
			}
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runner.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	cfg.Health = runner
	p, _ = startProxy(t, f, cfg)
	return p, runner
}

// spread sends n requests and counts the machines that answered.
func spread(t *testing.T, c *http.Client, url string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		code, body := get(t, c, url)
		if code != 200 {
			t.Fatalf("GET: %d %s", code, body)
		}
		got[body]++
	}
	return got
}

func TestProxyRoutesOnlyToMachinesPassingChecks(t *testing.T) {
	f := newFleet(t)
	port := freePort(t)
	svc := service(port, withHealthCheck(50*time.Millisecond), withLimits(1, 0))
	f.add("app", "m1", model.StateStarted, false, svc)
	m2 := f.add("app", "m2", model.StateStarted, false, svc)
	_, runner := startChecked(t, f, Config{WakeTimeout: 2 * time.Second})
	c, url := client(t), fmt.Sprintf("http://127.0.0.1:%d/", port)
	passing := func(id string) bool {
		ms, _ := f.List(context.Background(), "app")
		for _, m := range ms {
			if m.ID == id {
				return runner.ServicePassing(m, 8080)
			}
		}
		return false
	}
	eventually(t, "both machines passing", func() bool { return passing("m1") && passing("m2") })
	if got := spread(t, c, url, 40); got["m1"] == 0 || got["m2"] == 0 {
		t.Fatalf("healthy machines: traffic %v, want both", got)
	}
	// m2 starts failing its check: it gets nothing while it does.
	m2.unhealthy.Store(true)
	eventually(t, "m2 critical", func() bool { return !passing("m2") })
	if got := spread(t, c, url, 40); got["m2"] != 0 {
		t.Fatalf("m2 fails its check but got %d of 40 requests", got["m2"])
	}
	// And it flaps back.
	m2.unhealthy.Store(false)
	eventually(t, "m2 passing again", func() bool { return passing("m2") })
	if got := spread(t, c, url, 40); got["m2"] == 0 {
		t.Fatalf("m2 passes again but gets no traffic: %v", got)
	}
	// No machine passes: requests wait, then fail saying why.
	f.ms["m1"].unhealthy.Store(true)
	m2.unhealthy.Store(true)
	eventually(t, "both critical", func() bool { return !passing("m1") && !passing("m2") })
	code, body := get(t, c, url)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "health checks") || !strings.Contains(body, "500") {
		t.Fatalf("no healthy machine: %d %s", code, body)
	}
	// A waiting request is served as soon as a machine passes again.
	go func() { time.Sleep(300 * time.Millisecond); m2.unhealthy.Store(false) }()
	if code, body := get(t, c, url); code != 200 || body != "m2" {
		t.Fatalf("request waiting for a healthy machine: %d %s", code, body)
	}
}

func TestProxyWakesAndWaitsForTheFirstPassingCheck(t *testing.T) {
	f := newFleet(t)
	port := freePort(t)
	m := f.add("app", "m1", model.StateStopped, false, service(port, withHealthCheck(time.Hour)))
	m.unhealthy.Store(true) // the app is not ready right after its start
	startChecked(t, f, Config{WakeTimeout: 10 * time.Second})
	go func() { time.Sleep(300 * time.Millisecond); m.unhealthy.Store(false) }()
	begin := time.Now()
	if code, body := get(t, client(t), fmt.Sprintf("http://127.0.0.1:%d/", port)); code != 200 || body != "m1" {
		t.Fatalf("woken machine: %d %s", code, body)
	}
	// Served within the startup retries, not the hour-long interval.
	if took := time.Since(begin); took < 300*time.Millisecond || took > 5*time.Second {
		t.Fatalf("request served after %s", took)
	}
}
