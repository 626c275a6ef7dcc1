package checks

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

func dur(d time.Duration) model.Duration { return model.Duration{Duration: d} }

func TestNormalizeNamesTheFieldAndFillsDefaults(t *testing.T) {
	cfg := model.MachineConfig{
		Checks:   map[string]model.Check{"alive": {Type: "tcp", Port: 8080}},
		Services: []model.Service{{InternalPort: 8080, Checks: []model.Check{{Type: "http", Path: "/health", Method: "head"}}}},
	}
	if err := Normalize(&cfg); err != nil {
		t.Fatal(err)
	}
	alive, svc := cfg.Checks["alive"], cfg.Services[0].Checks[0]
	if alive.Interval.Duration != DefaultInterval || alive.Timeout.Duration != DefaultTimeout || alive.Method != "" {
		t.Errorf("tcp check defaults: %+v", alive)
	}
	if svc.Port != 8080 || svc.Method != "HEAD" || svc.Protocol != "http" || svc.Interval.Duration != DefaultInterval {
		t.Errorf("service check defaults: %+v", svc)
	}
	if got := Names(cfg); strings.Join(got, ",") != "alive,servicecheck-00-http-8080" {
		t.Errorf("names = %v", got)
	}

	tcp := func(c model.Check) model.MachineConfig {
		if c.Type == "" {
			c.Type = "tcp"
		}
		if c.Port == 0 {
			c.Port = 80
		}
		return model.MachineConfig{Checks: map[string]model.Check{"c": c}}
	}
	http := func(c model.Check) model.MachineConfig {
		c.Type = "http"
		return model.MachineConfig{Services: []model.Service{{InternalPort: 80, Checks: []model.Check{c}}}}
	}
	many := model.MachineConfig{Checks: map[string]model.Check{}}
	for i := range maxChecks + 1 {
		many.Checks["c"+strconv.Itoa(i)] = model.Check{Type: "tcp", Port: 80}
	}
	cases := []struct {
		cfg  model.MachineConfig
		want string
	}{
		{model.MachineConfig{Checks: map[string]model.Check{"c": {Type: "tcp"}}}, "config.checks.c.port is required"},
		{model.MachineConfig{Checks: map[string]model.Check{"bad name": {Type: "tcp", Port: 1}}}, "config.checks: check name"},
		{model.MachineConfig{Checks: map[string]model.Check{"servicecheck-00": {Type: "tcp", Port: 1}}}, "config.checks: check name"},
		{tcp(model.Check{Type: "udp"}), "config.checks.c.type must be"},
		{model.MachineConfig{Checks: map[string]model.Check{"c": {Port: 1}}}, "config.checks.c.type is required"},
		{tcp(model.Check{Port: 70000}), "config.checks.c.port must be between"},
		{tcp(model.Check{Port: -1}), "config.checks.c.port must be between"},
		{tcp(model.Check{Interval: dur(time.Millisecond)}), "config.checks.c.interval"},
		{tcp(model.Check{Interval: dur(2 * time.Hour)}), "config.checks.c.interval"},
		{tcp(model.Check{Timeout: dur(time.Millisecond)}), "config.checks.c.timeout"},
		{tcp(model.Check{Interval: dur(2 * time.Second), Timeout: dur(3 * time.Second)}), "config.checks.c.timeout (3s) must not exceed interval"},
		{tcp(model.Check{GracePeriod: dur(-time.Second)}), "config.checks.c.grace_period"},
		{tcp(model.Check{GracePeriod: dur(2 * time.Hour)}), "config.checks.c.grace_period"},
		{tcp(model.Check{Path: "/x"}), "config.checks.c.path is only for http checks"},
		{tcp(model.Check{Method: "GET"}), "config.checks.c.method is only for http checks"},
		{tcp(model.Check{Headers: []model.HTTPHeader{{Name: "a"}}}), "config.checks.c.headers is only for http checks"},
		{tcp(model.Check{TLSSkipVerify: true}), "config.checks.c.tls_skip_verify is only for http checks"},
		{http(model.Check{Method: "BREW"}), "config.services[0].checks[0].method"},
		{http(model.Check{Protocol: "ftp"}), "config.services[0].checks[0].protocol"},
		{http(model.Check{TLSSkipVerify: true}), "config.services[0].checks[0].tls_skip_verify"},
		{http(model.Check{Path: "health"}), "config.services[0].checks[0].path"},
		{http(model.Check{Path: "/a b"}), "config.services[0].checks[0].path"},
		{http(model.Check{Path: "/\n"}), "config.services[0].checks[0].path"},
		{http(model.Check{Headers: []model.HTTPHeader{{Name: "Bad Name"}}}), "config.services[0].checks[0].headers[0].name"},
		{http(model.Check{Headers: []model.HTTPHeader{{Name: "X", Values: []string{"a\r\nb"}}}}), "config.services[0].checks[0].headers[0].values[0]"},
		{many, "config: at most 16 checks"},
	}
	for _, c := range cases {
		err := Normalize(&c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) || model.KindOf(err) != model.KindInvalid {
			t.Errorf("%+v: error %v, want a KindInvalid one with %q", c.cfg, err, c.want)
		}
	}
}

// server is an HTTP server on loopback whose answer the test sets.
type server struct {
	*httptest.Server
	status atomic.Int32
	hits   atomic.Int32
	host   atomic.Value
}

func newServer(t *testing.T) *server {
	s := &server{}
	s.status.Store(200)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.host.Store(r.Host + " " + r.Header.Get("X-Check"))
		w.WriteHeader(int(s.status.Load()))
		w.Write([]byte("ok\n"))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *server) port() int { return s.Listener.Addr().(*net.TCPAddr).Port }

func addrOf(c model.Check) string { return "127.0.0.1:" + strconv.Itoa(c.Port) }

func TestProbe(t *testing.T) {
	s := newServer(t)
	h := model.Check{Type: "http", Port: s.port(), Method: "GET", Path: "/health", Protocol: "http", Timeout: dur(time.Second),
		Headers: []model.HTTPHeader{{Name: "Host", Values: []string{"app.internal"}}, {Name: "X-Check", Values: []string{"yes"}}}}
	ctx := context.Background()
	if r := probe(ctx, addrOf(h), h); r.status != model.CheckPassing || !strings.Contains(r.output, "200 OK") || !strings.Contains(r.output, `"ok"`) {
		t.Errorf("200: %+v", r)
	}
	if got := s.host.Load(); got != "app.internal yes" {
		t.Errorf("headers sent: %q", got)
	}
	for code, want := range map[int32]string{500: model.CheckCritical, 429: model.CheckWarning, 302: model.CheckCritical, 204: model.CheckPassing} {
		s.status.Store(code)
		if r := probe(ctx, addrOf(h), h); r.status != want {
			t.Errorf("HTTP %d: %+v, want %s", code, r, want)
		}
	}
	tcp := model.Check{Type: "tcp", Port: s.port(), Timeout: dur(time.Second)}
	if r := probe(ctx, addrOf(tcp), tcp); r.status != model.CheckPassing {
		t.Errorf("tcp to a listener: %+v", r)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := l.Addr().(*net.TCPAddr).Port
	l.Close()
	tcp.Port = closed
	if r := probe(ctx, addrOf(tcp), tcp); r.status != model.CheckCritical || !strings.Contains(r.output, "refused") {
		t.Errorf("tcp to nothing: %+v", r)
	}
	// A server that accepts and never answers: the timeout, said plainly.
	silent, _ := net.Listen("tcp", "127.0.0.1:0")
	defer silent.Close()
	h.Port, h.Timeout = silent.Addr().(*net.TCPAddr).Port, dur(200*time.Millisecond)
	if r := probe(ctx, addrOf(h), h); r.status != model.CheckCritical || !strings.Contains(r.output, "timed out after 200ms") {
		t.Errorf("silent server: %+v", r)
	}
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer tlsSrv.Close()
	hs := model.Check{Type: "http", Port: tlsSrv.Listener.Addr().(*net.TCPAddr).Port, Method: "GET", Path: "/", Protocol: "https", Timeout: dur(time.Second)}
	if r := probe(ctx, addrOf(hs), hs); r.status != model.CheckCritical || !strings.Contains(r.output, "certificate") {
		t.Errorf("https with a self-signed certificate, verified: %+v", r)
	}
	hs.TLSSkipVerify = true
	if r := probe(ctx, addrOf(hs), hs); r.status != model.CheckPassing {
		t.Errorf("https with tls_skip_verify: %+v", r)
	}
}

// fakeMachines is the edge the runner lists machines from.
type fakeMachines struct {
	mu sync.Mutex
	ms []model.Machine
}

func (f *fakeMachines) ListApps(context.Context) ([]model.App, error) {
	return []model.App{{Name: "app"}}, nil
}

func (f *fakeMachines) List(_ context.Context, app string) ([]model.Machine, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]model.Machine(nil), f.ms...), nil
}

func (f *fakeMachines) set(state model.State, instance string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ms[0].State, f.ms[0].InstanceID = state, instance
}

func (f *fakeMachines) machine() model.Machine {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ms[0]
}

type runnerRig struct {
	t       *testing.T
	fake    *fakeMachines
	r       *Runner
	s       *server
	changes atomic.Int32
}

func newRunnerRig(t *testing.T, c model.Check) *runnerRig {
	rig := &runnerRig{t: t, s: newServer(t)}
	c.Port = rig.s.port()
	if c.Type == "http" { // Normalize's defaults; its bounds do not allow the short intervals used here
		c.Method, c.Path, c.Protocol = "GET", "/", "http"
	}
	cfg := model.MachineConfig{Services: []model.Service{{InternalPort: c.Port, Checks: []model.Check{c}}}}
	rig.fake = &fakeMachines{ms: []model.Machine{{ID: "m1", App: "app", State: model.StateStarted, InstanceID: "i1",
		Version: "v1", PrivateIP: "127.0.0.1", Config: cfg}}}
	rig.r = New(rig.fake, Config{RefreshInterval: time.Hour, StartupInterval: 50 * time.Millisecond,
		OnChange: func(string) { rig.changes.Add(1) }})
	// The test syncs by hand (Run would list the machines at once).
	t.Cleanup(func() { rig.r.cancel(); rig.r.wg.Wait() })
	return rig
}

func (rig *runnerRig) sync() { rig.r.sync(mustList(rig.fake), time.Now()) }

func mustList(f *fakeMachines) []model.Machine {
	ms, _ := f.List(context.Background(), "app")
	return ms
}

// status returns the machine's only check's status.
func (rig *runnerRig) status() model.CheckStatus {
	st := rig.r.Statuses(rig.fake.machine())
	if len(st) != 1 {
		rig.t.Fatalf("statuses: %+v", st)
	}
	return st[0]
}

func (rig *runnerRig) waitStatus(want string) model.CheckStatus {
	rig.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := rig.status()
		if st.Status == want {
			return st
		}
		if time.Now().After(deadline) {
			rig.t.Fatalf("check stayed %s (%s), want %s", st.Status, st.Output, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRunnerPausesWhileSuspendedAndResumesOnLastResult(t *testing.T) {
	rig := newRunnerRig(t, model.Check{Type: "http", Interval: dur(300 * time.Millisecond), Timeout: dur(200 * time.Millisecond)})
	m := rig.fake.machine()
	port := m.Config.Services[0].InternalPort
	if rig.r.ServicePassing(m, port) {
		t.Fatal("a machine whose checks have not run is passing")
	}
	rig.sync()
	rig.waitStatus(model.CheckPassing)
	if !rig.r.ServicePassing(rig.fake.machine(), port) || !rig.r.ServicePassing(rig.fake.machine(), port+1) {
		t.Fatal("passing service (or a port without checks) not passing")
	}

	rig.s.status.Store(500)
	rig.waitStatus(model.CheckCritical)
	if rig.r.ServicePassing(rig.fake.machine(), port) || !strings.Contains(rig.r.Failing(rig.fake.machine(), port), "500") {
		t.Fatal("failing service passes")
	}
	rig.s.status.Store(200)
	before := rig.waitStatus(model.CheckPassing)
	if rig.changes.Load() < 3 {
		t.Errorf("OnChange called %d times for passing, critical, passing", rig.changes.Load())
	}

	// Suspended: no check runs, the last result stays.
	rig.fake.set(model.StateSuspended, "i1")
	rig.sync()
	hits := rig.s.hits.Load()
	time.Sleep(4 * 300 * time.Millisecond)
	if got := rig.s.hits.Load(); got != hits {
		t.Fatalf("%d checks ran while the machine was suspended", got-hits)
	}
	if st := rig.status(); st != before {
		t.Fatalf("status changed while suspended: %+v, was %+v", st, before)
	}
	// Resumed: routable at once on the last result, checked at once.
	rig.fake.set(model.StateStarted, "i1")
	if !rig.r.ServicePassing(rig.fake.machine(), port) {
		t.Fatal("resumed machine not routable on its last result")
	}
	resumed := time.Now()
	rig.sync()
	for rig.s.hits.Load() == hits {
		if time.Since(resumed) > 250*time.Millisecond {
			t.Fatal("no check right after the resume")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Cold start: results start over.
	rig.fake.set(model.StateStarted, "i2")
	if st := rig.status(); st.Status != model.CheckWarning {
		t.Fatalf("after a cold start the old result is used: %+v", st)
	}
	rig.sync()
	rig.waitStatus(model.CheckPassing)
}

func TestRunnerGracePeriodAndStartupRetries(t *testing.T) {
	rig := newRunnerRig(t, model.Check{Type: "http", Interval: dur(time.Hour), Timeout: dur(100 * time.Millisecond), GracePeriod: dur(time.Second)})
	// The app is not ready at first: inside the grace period that is a
	// warning, retried every StartupInterval (not every hour).
	rig.s.status.Store(503)
	rig.sync()
	st := rig.waitStatus(model.CheckWarning)
	for st.Output == "not checked yet" {
		st = rig.waitStatus(model.CheckWarning)
	}
	time.Sleep(200 * time.Millisecond)
	if st2 := rig.status(); !st2.UpdatedAt.After(st.UpdatedAt) || !strings.Contains(st2.Output, "grace period") {
		t.Fatalf("a failing check in the grace period is not retried soon: %+v then %+v", st, st2)
	}
	rig.waitStatus(model.CheckCritical) // the grace period is over
	rig.s.status.Store(200)
	rig.waitStatus(model.CheckPassing) // still retried quickly until it has passed once
}

func TestRunnerDropsAFailureOfAMachineThatIsNoLongerStarted(t *testing.T) {
	rig := newRunnerRig(t, model.Check{Type: "http", Interval: dur(100 * time.Millisecond), Timeout: dur(100 * time.Millisecond)})
	rig.sync()
	before := rig.waitStatus(model.CheckPassing)
	// The machine is being suspended, but the runner has not heard yet:
	// its app is frozen and its checks fail. They are not recorded.
	rig.fake.set(model.StateSuspending, "i1")
	rig.s.status.Store(500)
	hits := rig.s.hits.Load()
	for rig.s.hits.Load() < hits+3 {
		time.Sleep(10 * time.Millisecond)
	}
	if st := rig.status(); st.Status != model.CheckPassing {
		t.Fatalf("a failure while suspending was recorded: %+v (before: %+v)", st, before)
	}
	// The suspend failed and the machine stayed started: failures count.
	rig.fake.set(model.StateStarted, "i1")
	rig.waitStatus(model.CheckCritical)
}
