package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/freeport"
	"github.com/torpor-dev/torpor/internal/model"
)

// fleet is a fake machine layer: each machine is a real HTTP or TCP server
// on 127.0.0.1 that listens while the machine is started.
type fleet struct {
	t  testing.TB
	mu sync.Mutex
	ms map[string]*fakeMachine

	// startHook, if set, runs at the start of every Start (after it is
	// counted); an error fails the Start.
	startHook  func(ctx context.Context, id string) error
	sleepHook  func(id string) // if set, runs at the start of Stop and Suspend
	suspendErr error

	starts, stops, suspends map[string]int

	// staleUntilStart lists these machines as suspended until Start is
	// called on them, like a list taken just before someone started them.
	staleUntilStart map[string]bool

	owners map[int]string // PortOwners' answer

	block   chan struct{} // /block requests wait for it to close
	release sync.Once
}

type fakeMachine struct {
	m    model.Machine
	addr string
	tcp  bool
	ln   net.Listener
	srv  *http.Server

	inflight, maxInflight atomic.Int32
	unhealthy             atomic.Bool // /health answers 500
}

func newFleet(t testing.TB) *fleet {
	f := &fleet{t: t, ms: map[string]*fakeMachine{}, block: make(chan struct{}),
		starts: map[string]int{}, stops: map[string]int{}, suspends: map[string]int{}}
	t.Cleanup(func() {
		f.unblock()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, fm := range f.ms {
			fm.down()
		}
	})
	return f
}

// add creates machine id of app in state with the given services; tcp says
// whether its server is a line echo server rather than HTTP.
func (f *fleet) add(app, id string, state model.State, tcp bool, services ...model.Service) *fakeMachine {
	f.t.Helper()
	fm := &fakeMachine{m: model.Machine{ID: id, App: app, State: state, Config: model.MachineConfig{Services: services}},
		addr: freeAddr(f.t), tcp: tcp}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ms[id] = fm
	if state == model.StateStarted {
		if err := f.up(fm); err != nil {
			f.t.Fatal(err)
		}
	}
	return fm
}

func (f *fleet) remove(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fm := f.ms[id]; fm != nil {
		fm.down()
		delete(f.ms, id)
	}
}

func (f *fleet) unblock() { f.release.Do(func() { close(f.block) }) }

func (f *fleet) state(id string) model.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ms[id].m.State
}

func (f *fleet) count(m map[string]int, id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return m[id]
}

func (f *fleet) total(m map[string]int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func (f *fleet) backend(m model.Machine, port int) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ms[m.ID].addr
}

func (f *fleet) ListApps(ctx context.Context) ([]model.App, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	seen := map[string]bool{}
	var out []model.App
	for _, fm := range f.ms {
		if !seen[fm.m.App] {
			seen[fm.m.App] = true
			out = append(out, model.App{Name: fm.m.App})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (f *fleet) List(ctx context.Context, app string) ([]model.Machine, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []model.Machine
	for _, fm := range f.ms {
		if fm.m.App == app {
			m := fm.m
			if f.staleUntilStart[m.ID] && f.starts[m.ID] == 0 {
				m.State = model.StateSuspended
			}
			out = append(out, m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (f *fleet) Get(ctx context.Context, app, id string) (model.Machine, error) {
	ms, _ := f.List(ctx, app)
	for _, m := range ms {
		if m.ID == id {
			return m, nil
		}
	}
	return model.Machine{}, model.Errorf(model.KindNotFound, "machine %q not found", id)
}

// PortOwners returns the owners set with f.owners (none by default: the
// proxy's own rule decides).
func (f *fleet) PortOwners(ctx context.Context) (map[int]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[int]string{}
	for p, app := range f.owners {
		out[p] = app
	}
	return out, nil
}

func (f *fleet) Start(ctx context.Context, app, id string) (model.StartResponse, error) {
	f.mu.Lock()
	f.starts[id]++
	hook := f.startHook
	f.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, id); err != nil {
			return model.StartResponse{}, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	fm := f.ms[id]
	if fm == nil {
		return model.StartResponse{}, model.Errorf(model.KindNotFound, "machine %s not found", id)
	}
	resp := model.StartResponse{PreviousState: fm.m.State, FromSnapshot: fm.m.State == model.StateSuspended}
	if fm.m.State == model.StateStarted {
		return resp, model.Errorf(model.KindConflict, "machine %s is already started", id)
	}
	if err := f.up(fm); err != nil {
		return resp, err
	}
	fm.m.State = model.StateStarted
	return resp, nil
}

func (f *fleet) Stop(ctx context.Context, app, id string, req model.StopRequest) error {
	return f.sleep(id, model.StateStopped, f.stops, nil)
}

func (f *fleet) Suspend(ctx context.Context, app, id string) error {
	return f.sleep(id, model.StateSuspended, f.suspends, f.suspendErr)
}

func (f *fleet) sleep(id string, state model.State, calls map[string]int, fail error) error {
	if f.sleepHook != nil {
		f.sleepHook(id)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	calls[id]++
	if fail != nil {
		return fail
	}
	fm := f.ms[id]
	fm.down()
	fm.m.State = state
	return nil
}

// up makes the machine's server listen. Call with f.mu held.
func (f *fleet) up(fm *fakeMachine) error {
	if fm.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", fm.addr)
	if err != nil {
		return err
	}
	fm.ln = ln
	if fm.tcp {
		go echo(ln, fm.m.ID)
		return nil
	}
	fm.srv = &http.Server{Handler: f.handler(fm)}
	go fm.srv.Serve(ln)
	return nil
}

func (fm *fakeMachine) down() {
	if fm.srv != nil {
		fm.srv.Close()
	}
	if fm.ln != nil {
		fm.ln.Close()
	}
	fm.ln, fm.srv = nil, nil
}

// handler answers the machine's ID on /, holds /block requests until the
// fleet unblocks, and streams /stream until the client leaves.
func (f *fleet) handler(fm *fakeMachine) http.Handler {
	id := fm.m.ID
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, id) })
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		if fm.unhealthy.Load() {
			http.Error(w, "sick", http.StatusInternalServerError)
		}
	})
	mux.HandleFunc("/block", func(w http.ResponseWriter, r *http.Request) {
		n := fm.inflight.Add(1)
		defer fm.inflight.Add(-1)
		for {
			cur := fm.maxInflight.Load()
			if n <= cur || fm.maxInflight.CompareAndSwap(cur, n) {
				break
			}
		}
		select {
		case <-f.block:
		case <-r.Context().Done():
		}
		io.WriteString(w, id)
	})
	mux.HandleFunc("/upgrade", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want Upgrade: echo", http.StatusBadRequest)
			return
		}
		c, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		brw.Flush()
		s := bufio.NewScanner(brw)
		for s.Scan() {
			fmt.Fprintf(c, "%s:%s\n", id, s.Text())
		}
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, id+"\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	return mux
}

// echo answers every line with "id:line" until the connection closes.
func echo(ln net.Listener, id string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			s := bufio.NewScanner(c)
			for s.Scan() {
				fmt.Fprintf(c, "%s:%s\n", id, s.Text())
			}
		}()
	}
}

// freeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago, outside the ephemeral range, that no earlier call returned (a fake
// machine and the proxy port it is published on must not get the same
// one; freeport).
func freeAddr(t testing.TB) string {
	t.Helper()
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func freePort(t testing.TB) int {
	t.Helper()
	port, err := freeport.Pick()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// logBuffer collects the proxy's log; it is printed if the test fails.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(b)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// startProxy runs a proxy over f until the test ends and waits for its
// listeners.
func startProxy(t testing.TB, f *fleet, cfg Config) (*Proxy, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log("proxy log:\n" + logs.String())
		}
	})
	cfg.Backend = f.backend
	if cfg.RefreshInterval == 0 {
		cfg.RefreshInterval = 100 * time.Millisecond
	}
	p := New(f, cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	if err := p.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	return p, logs
}

// service returns an HTTP service published on hostPort (internal port 8080).
func service(hostPort int, opts ...func(*model.Service)) model.Service {
	s := model.Service{Protocol: "tcp", InternalPort: 8080,
		Ports: []model.Port{{Port: &hostPort, Handlers: []string{"http"}}}}
	for _, o := range opts {
		o(&s)
	}
	return s
}

// tcpService returns a raw TCP service published on hostPort.
func tcpService(hostPort int, opts ...func(*model.Service)) model.Service {
	s := service(hostPort, opts...)
	s.Ports[0].Handlers = nil
	return s
}

func withAutostop(mode model.Autostop) func(*model.Service) {
	return func(s *model.Service) { s.Autostop = &mode }
}

func withMinRunning(n int) func(*model.Service) {
	return func(s *model.Service) { s.MinMachinesRunning = &n }
}

func withLimits(soft, hard int) func(*model.Service) {
	return func(s *model.Service) {
		s.Concurrency = &model.Concurrency{Type: "requests", SoftLimit: soft, HardLimit: hard}
	}
}

func withAutostart(on bool) func(*model.Service) {
	return func(s *model.Service) { s.Autostart = &on }
}

// client returns an HTTP client that keeps many connections alive.
func client(t testing.TB) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 2048}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 2 * time.Minute}
}

// get fetches url and returns the status and body.
func get(t testing.TB, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return 0, ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Errorf("GET %s: read body: %v", url, err)
	}
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// eventually waits (generously) for cond.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// reapCount returns how many reaper passes have run.
func (p *Proxy) reapCount() int {
	p.reconcileMu.Lock()
	defer p.reconcileMu.Unlock()
	return p.reaps
}

// waitReaps waits until n more reaper passes have run.
func waitReaps(t testing.TB, p *Proxy, n int) {
	t.Helper()
	target := p.reapCount() + n
	eventually(t, fmt.Sprintf("%d reaper passes", n), func() bool { return p.reapCount() >= target })
}
