package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"time"

	"github.com/torpor-dev/torpor/internal/connlimit"
	"github.com/torpor-dev/torpor/internal/model"
)

// Machines is what the proxy needs from the machine lifecycle; package
// machine's Manager implements it. Start on a started machine returns a
// KindConflict error.
type Machines interface {
	ListApps(ctx context.Context) ([]model.App, error)
	List(ctx context.Context, app string) ([]model.Machine, error)
	Get(ctx context.Context, app, id string) (model.Machine, error)
	Start(ctx context.Context, app, id string) (model.StartResponse, error)
	Stop(ctx context.Context, app, id string, req model.StopRequest) error
	Suspend(ctx context.Context, app, id string) error
	// PortOwners returns the app that owns each published host port
	// (first come, durable); a port with no owner goes by the proxy's own
	// rule (see resolve).
	PortOwners(ctx context.Context) (map[int]string, error)
}

// Config configures a Proxy. Zero fields take the defaults below.
type Config struct {
	// ListenHost is the host address listeners bind (default 127.0.0.1).
	ListenHost string
	// WakeTimeout bounds how long a request waits for a machine to wake or
	// for capacity (default 30s).
	WakeTimeout time.Duration
	// IdleTimeout is how long a machine must have had no request and no
	// connection before it is auto-stopped (default 5m).
	IdleTimeout time.Duration
	// CheckInterval is how often idle machines are looked for (default 15s).
	CheckInterval time.Duration
	// QueueLimit is the most requests and connections held per app while
	// waiting for a wake or capacity (default 2048).
	QueueLimit int
	// RefreshInterval is how often apps and machines are listed again
	// (default 2s).
	RefreshInterval time.Duration
	// Backend returns the address serving port of machine m (default
	// PrivateIP:port; "" when the machine has no private IP, which fails the
	// request with 502 rather than dialing some local port).
	Backend func(m model.Machine, port int) string
	// Observer is told of requests, waits and wakes (default: nobody).
	Observer Observer

	// Budget is the daemon-wide descriptor budget that client connections
	// and connections to machines draw from (nil: none). Over it, HTTP
	// clients get a 503 and TCP connections are closed.
	Budget *connlimit.Budget
	// MaxConnsPerClient caps the connections one client IP address holds
	// open to all published ports together (default 1024; -1: no cap).
	MaxConnsPerClient int
	// MaxConnsPerApp caps the client connections to one app's published
	// ports together, so that one app's clients cannot starve the others
	// (default 4096; -1: no cap).
	MaxConnsPerApp int
	// HeaderTimeout bounds the reading of an HTTP request's headers
	// (default 10s); IdleTimeout closes a kept-alive HTTP connection with
	// no request for that long (default 60s).
	HeaderTimeout, HTTPIdleTimeout time.Duration
	// TCPIdleTimeout closes a raw TCP connection that has carried no byte
	// either way for that long (default 10m).
	TCPIdleTimeout time.Duration
	// Reserved are host ports the proxy never binds, with what the daemon
	// keeps each for (its own API address); the machine layer refuses
	// configs that ask for them, this guards against older ones.
	Reserved map[int]string
	// Health, if set, says which machines pass their service checks; the
	// proxy routes only to those. Nil: every machine passes.
	Health Health

	// Remote, in a cluster, carries traffic to machines of other hosts
	// (package cluster implements it); nil on a single host.
	Remote Remote
}

// Remote carries the traffic of machines that live on another host of the
// cluster to that host, whose proxy serves it (ServeMachine, DialMachine).
// The proxy of the host a request arrives at balances and wakes as for its
// own machines; only the owner's proxy auto-stops a machine.
type Remote interface {
	// Local reports whether machine m lives on this host.
	Local(m model.Machine) bool
	// ServeHTTP serves request r for internal port of machine m on its host.
	ServeHTTP(w http.ResponseWriter, r *http.Request, m model.Machine, port int)
	// Dial connects to internal port of machine m through its host.
	Dial(ctx context.Context, m model.Machine, port int) (net.Conn, error)
}

// Health is what the proxy needs from health checks; package checks'
// Runner implements it. Its methods are called with an app's lock held
// and must not call back into the proxy.
type Health interface {
	// ServicePassing reports whether the checks of m's service on
	// internal port pass (true when it has none).
	ServicePassing(m model.Machine, port int) bool
	// Failing says which of those checks fails and why ("" if none).
	Failing(m model.Machine, port int) string
}

// passing is the Health of a proxy configured without one.
type passing struct{}

func (passing) ServicePassing(model.Machine, int) bool { return true }
func (passing) Failing(model.Machine, int) string      { return "" }

func (c *Config) setDefaults() {
	if c.Remote == nil {
		c.Remote = allLocal{}
	}
	if c.ListenHost == "" {
		c.ListenHost = "127.0.0.1"
	}
	if c.WakeTimeout <= 0 {
		c.WakeTimeout = 30 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	if c.CheckInterval <= 0 {
		c.CheckInterval = 15 * time.Second
	}
	if c.QueueLimit <= 0 {
		c.QueueLimit = 2048
	}
	if c.RefreshInterval <= 0 {
		c.RefreshInterval = 2 * time.Second
	}
	if c.Backend == nil {
		c.Backend = privateAddr
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.Health == nil {
		c.Health = passing{}
	}
	c.MaxConnsPerClient = orDefault(c.MaxConnsPerClient, 1024)
	c.MaxConnsPerApp = orDefault(c.MaxConnsPerApp, 4096)
	if c.HeaderTimeout <= 0 {
		c.HeaderTimeout = 10 * time.Second
	}
	if c.HTTPIdleTimeout <= 0 {
		c.HTTPIdleTimeout = time.Minute
	}
	if c.TCPIdleTimeout <= 0 {
		c.TCPIdleTimeout = 10 * time.Minute
	}
}

// orDefault is n, def if n is 0, and 0 (no cap) if n is negative.
func orDefault(n, def int) int {
	switch {
	case n == 0:
		return def
	case n < 0:
		return 0
	}
	return n
}

func privateAddr(m model.Machine, port int) string {
	if m.PrivateIP == "" {
		return ""
	}
	return net.JoinHostPort(m.PrivateIP, strconv.Itoa(port))
}

// allLocal is the Remote of a single host: every machine is local.
type allLocal struct{}

func (allLocal) Local(model.Machine) bool { return true }
func (allLocal) ServeHTTP(w http.ResponseWriter, _ *http.Request, m model.Machine, _ int) {
	writeError(w, http.StatusBadGateway, fmt.Sprintf("machine %s is not on this host", m.ID))
}
func (allLocal) Dial(_ context.Context, m model.Machine, _ int) (net.Conn, error) {
	return nil, fmt.Errorf("machine %s is not on this host", m.ID)
}

// errNoAddress is the dial error for a machine without an address.
var errNoAddress = errors.New("the machine has no private IP address (is machine networking enabled?)")

// Proxy routes traffic for every app's services to its machines.
type Proxy struct {
	m   Machines
	cfg Config
	log *slog.Logger

	// ctx lives until Run has drained; wakes, stops and requests use it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.RWMutex
	apps map[string]*app

	reconcileMu sync.Mutex // serializes reconciles; guards the fields below
	listeners   map[int]*listener
	listenErrs  map[int]string // last listen error logged per port
	conflicts   map[int]string // last conflict logged per port
	tlsWarned   map[int]bool
	closed      bool // set by shutdown
	reaps       int  // reaper passes, for tests

	connMu sync.Mutex
	conns  map[net.Conn]struct{} // open TCP connections, both sides
	// toMachine holds the open connections to each machine (HTTP and TCP),
	// by machine ID, so that they can be closed when the machine is gone.
	toMachine map[string]map[net.Conn]struct{}
	clients   *connlimit.Group // per client address, all ports

	spawnMu  sync.Mutex
	stopping bool // set by shutdown: spawn refuses new goroutines

	refreshc chan struct{}
	rp       *httputil.ReverseProxy
	tr       *http.Transport
}

// New returns a Proxy; Run starts it.
func New(m Machines, cfg Config, log *slog.Logger) *Proxy {
	cfg.setDefaults()
	if log == nil {
		log = slog.Default()
	}
	p := &Proxy{
		m:          m,
		cfg:        cfg,
		log:        log.With("component", "proxy"),
		apps:       map[string]*app{},
		listeners:  map[int]*listener{},
		listenErrs: map[int]string{},
		conflicts:  map[int]string{},
		tlsWarned:  map[int]bool{},
		conns:      map[net.Conn]struct{}{},
		toMachine:  map[string]map[net.Conn]struct{}{},
		clients:    connlimit.NewGroup("the proxy", 0, cfg.MaxConnsPerClient),
		refreshc:   make(chan struct{}, 1),
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.tr = newTransport(p.dial)
	p.rp = &httputil.ReverseProxy{Rewrite: rewrite, Transport: p.tr, ErrorHandler: p.badGateway}
	return p
}

// Run reconciles listeners with the machines' configs every RefreshInterval
// (or on Refresh) and auto-stops idle machines every CheckInterval, until ctx
// ends. It then closes the listeners, gives in-flight requests a few seconds,
// closes every connection and returns nil. Errors along the way are logged.
// Run is called once per Proxy.
func (p *Proxy) Run(ctx context.Context) error {
	defer p.shutdown()
	p.reconcileLogged(ctx)
	refresh := time.NewTicker(p.cfg.RefreshInterval)
	defer refresh.Stop()
	check := time.NewTicker(p.cfg.CheckInterval)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-refresh.C:
			p.reconcileLogged(ctx)
		case <-p.refreshc:
			p.reconcileLogged(ctx)
		case <-check.C:
			p.reap()
		}
	}
}

// Refresh asks Run to list apps and machines again now (for instance after
// the API created or updated a machine). It does not wait.
func (p *Proxy) Refresh() {
	select {
	case p.refreshc <- struct{}{}:
	default:
	}
}

func (p *Proxy) reconcileLogged(ctx context.Context) {
	if err := p.Reconcile(ctx); err != nil && ctx.Err() == nil {
		p.log.Warn("reconcile", "err", err)
	}
}

// Reconcile lists apps and machines and opens and closes listeners to match,
// before returning. Run calls it periodically.
func (p *Proxy) Reconcile(ctx context.Context) error {
	p.reconcileMu.Lock()
	defer p.reconcileMu.Unlock()
	if p.closed {
		return fmt.Errorf("proxy is shut down")
	}
	apps, err := p.m.ListApps(ctx)
	if err != nil {
		return fmt.Errorf("list apps: %w", err)
	}
	owners, err := p.m.PortOwners(ctx)
	if err != nil {
		return fmt.Errorf("list port owners: %w", err)
	}
	p.retainApps(apps)
	for _, a := range apps {
		p.refreshApp(ctx, p.app(a.Name))
	}
	p.syncListeners(p.desired(owners))
	return nil
}

// refreshApp lists the app's machines and updates the proxy's view, unless
// the proxy changed a machine's state meanwhile (the list may predate it).
func (p *Proxy) refreshApp(ctx context.Context, a *app) {
	version := a.currentVersion()
	ms, err := p.m.List(ctx, a.name)
	if err != nil {
		p.log.Warn("list machines", "app", a.name, "err", err)
		return
	}
	p.strand(a, a.update(ms, version, time.Now(), p.cfg.WakeTimeout))
}

// strand rescues or cuts off the connections to machines taken out of
// service (see app.update).
func (p *Proxy) strand(a *app, out []stranded) {
	for _, s := range out {
		if s.rescue {
			p.rescue(a, s.id)
		} else if n := p.closeMachine(s.id); n > 0 {
			p.log.Info("closed the connections to a machine out of service", "app", a.name, "machine", s.id, "connections", n)
		}
	}
}

// MachineChanged applies a change the machine layer has just committed
// (the daemon calls it from Machines.Subscribe, before the operation that
// made the change returns) to the proxy's view of the machine's state,
// then asks for a full refresh (Refresh). Without it the view lagged by a
// reconcile, which lists every app: a request sent right after a stop
// through the API (the soak's proxied client) was routed to the machine
// the proxy still took for started, and its dial went to a sandbox that
// was gone ("no route to host", dial timeouts, or no answer at all while
// the dial was retried).
func (p *Proxy) MachineChanged(c model.Change) {
	if a := p.app(c.Machine.App); a != nil && c.Transition() {
		p.strand(a, a.apply(c.Machine, time.Now(), p.cfg.WakeTimeout))
	}
	p.Refresh()
}

// retainApps creates state for new apps and forgets deleted ones.
func (p *Proxy) retainApps(apps []model.App) {
	p.mu.Lock()
	defer p.mu.Unlock()
	keep := map[string]bool{}
	for _, a := range apps {
		keep[a.Name] = true
		if p.apps[a.Name] == nil {
			p.apps[a.Name] = newApp(a.Name, p.cfg.MaxConnsPerApp, p.cfg.Health)
		}
	}
	for name := range p.apps {
		if !keep[name] {
			delete(p.apps, name)
		}
	}
}

// app returns the state of the named app, nil if the proxy does not know it.
func (p *Proxy) app(name string) *app {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.apps[name]
}

func (p *Proxy) allApps() []*app {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]*app, 0, len(p.apps))
	for _, a := range p.apps {
		out = append(out, a)
	}
	return out
}

// ChecksChanged tells the proxy that a health check of a machine of app
// changed status, so that requests waiting for a healthy machine look
// again. It does not wait.
func (p *Proxy) ChecksChanged(app string) {
	if a := p.app(app); a != nil {
		a.mu.Lock()
		a.broadcast()
		a.mu.Unlock()
	}
	// The proxy's copy of a machine that just cold-started may predate its
	// new boot, whose results these are.
	p.Refresh()
}

// Stats returns a snapshot of the counters of every app the proxy knows.
func (p *Proxy) Stats() map[string]AppStats {
	out := map[string]AppStats{}
	for _, a := range p.allApps() {
		out[a.name] = a.snapshot()
	}
	return out
}

// shutdown closes listeners, lets in-flight HTTP requests finish for a few
// seconds, then cancels everything left and waits for it.
func (p *Proxy) shutdown() {
	p.reconcileMu.Lock()
	p.closed = true
	var wg sync.WaitGroup
	for port, l := range p.listeners {
		delete(p.listeners, port)
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.close(shutdownGrace)
		}()
	}
	p.reconcileMu.Unlock()
	wg.Wait()
	p.spawnMu.Lock()
	p.stopping = true
	p.spawnMu.Unlock()
	p.cancel()
	p.closeConns()
	p.wg.Wait()
	p.tr.CloseIdleConnections()
}

// shutdownGrace is how long in-flight HTTP requests get when a listener closes.
const shutdownGrace = 5 * time.Second

// spawn runs f in a goroutine that shutdown waits for; it returns false,
// without running f, once shutdown has begun.
func (p *Proxy) spawn(f func()) bool {
	p.spawnMu.Lock()
	defer p.spawnMu.Unlock()
	if p.stopping {
		return false
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		f()
	}()
	return true
}
