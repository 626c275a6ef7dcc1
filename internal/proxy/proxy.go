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

	"github.com/torpor-dev/torpor/internal/model"
)

// Machines is what the proxy needs from the machine lifecycle; package
// machine's Manager implements it. Start on a started machine returns a
// KindConflict error.
type Machines interface {
	ListApps(ctx context.Context) ([]model.App, error)
	List(ctx context.Context, app string) ([]model.Machine, error)
	Start(ctx context.Context, app, id string) (model.StartResponse, error)
	Stop(ctx context.Context, app, id string, req model.StopRequest) error
	Suspend(ctx context.Context, app, id string) error
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
}

func (c *Config) setDefaults() {
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
}

func privateAddr(m model.Machine, port int) string {
	if m.PrivateIP == "" {
		return ""
	}
	return net.JoinHostPort(m.PrivateIP, strconv.Itoa(port))
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
	p.retainApps(apps)
	for _, a := range apps {
		p.refreshApp(ctx, p.app(a.Name))
	}
	p.syncListeners(p.desired())
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
	a.update(ms, version, time.Now(), p.cfg.WakeTimeout)
}

// retainApps creates state for new apps and forgets deleted ones.
func (p *Proxy) retainApps(apps []model.App) {
	p.mu.Lock()
	defer p.mu.Unlock()
	keep := map[string]bool{}
	for _, a := range apps {
		keep[a.Name] = true
		if p.apps[a.Name] == nil {
			p.apps[a.Name] = newApp(a.Name)
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
