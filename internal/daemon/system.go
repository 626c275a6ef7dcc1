package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/torpor-dev/torpor/internal/api"
	"github.com/torpor-dev/torpor/internal/auth"
	"github.com/torpor-dev/torpor/internal/checks"
	"github.com/torpor-dev/torpor/internal/cluster"
	"github.com/torpor-dev/torpor/internal/connlimit"
	"github.com/torpor-dev/torpor/internal/dashboard"
	"github.com/torpor-dev/torpor/internal/fence"
	"github.com/torpor-dev/torpor/internal/guestapi"
	"github.com/torpor-dev/torpor/internal/hostlock"
	"github.com/torpor-dev/torpor/internal/image"
	"github.com/torpor-dev/torpor/internal/machine"
	"github.com/torpor-dev/torpor/internal/metrics"
	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/proxy"
	"github.com/torpor-dev/torpor/internal/runtime"
	"github.com/torpor-dev/torpor/internal/runtime/gvisor"
	"github.com/torpor-dev/torpor/internal/snapshot"
	"github.com/torpor-dev/torpor/internal/store"
	"github.com/torpor-dev/torpor/internal/volume"
)

// System is one daemon's subsystems, assembled in one place (as Tailscale's
// tsd.System does): New opens them in dependency order, Run serves, Close
// releases them in reverse order. A subsystem added to torpor gets a field
// here, a step in New and, if it holds anything, a closer.
type System struct {
	cfg Config
	log *slog.Logger

	Store     *store.Store
	Runtime   runtime.Runtime
	Network   machine.Network // nil without networking
	Images    *image.Manager
	GuestAPI  *guestapi.Server
	Volumes   *volume.Manager
	Checks    *checks.Runner
	Machines  *machine.Manager
	Cluster   *cluster.Node // nil on a single host
	Metrics   *metrics.Metrics
	Dashboard *dashboard.Dashboard
	Proxy     *proxy.Proxy // nil with NoProxy
	// API serves the admin socket and the TCP listener: the REST API,
	// /metrics and the dashboard under /ui/.
	API http.Handler
	api http.Handler // the REST API alone
	// FDs splits the descriptor limit between tenants' connections (proxy,
	// in-machine API), the TCP API, the admin socket and the daemon itself.
	FDs connlimit.Plan

	// listeners are every address the daemon serves on: the API's, the
	// metrics listener's (metricsLn) and the dashboard's loopback port
	// once opened (see dashboardPort).
	listenMu  sync.Mutex
	listeners []net.Listener
	metricsLn net.Listener
	local     localDashboard
	closers   []func() // run in reverse order by Close
	// reserved are the host ports of the daemon's own listeners, which no
	// machine may publish (issue 17, F3): filled in by openListeners, read
	// by the machine layer and the proxy only once the daemon serves.
	reserved map[int]string
	// restoredStore is set when this start restored the store from its
	// backup (Config.RestoreStoreBackup): recovery then forgets the
	// machines the backup does not know.
	restoredStore bool
}

// runtimes are the sandbox drivers a daemon can run machines with, by name.
var runtimes = map[string]func(Config) (runtime.Runtime, func() error, error){
	"gvisor": func(cfg Config) (runtime.Runtime, func() error, error) {
		hugePages(cfg)
		rt, err := gvisor.New(gvisor.Config{RunscPath: cfg.RunscPath, RootDir: filepath.Join(cfg.DataDir, "runsc"),
			ExtraFlags: []string{guestapi.RunscFlag}, BackgroundRestore: cfg.BackgroundRestore,
			NoPagesReuse: cfg.NoPagesReuse, Log: cfg.Logger})
		if err != nil {
			return nil, nil, err
		}
		return rt, rt.Close, nil
	},
}

// hugePages applies cfg.HostHugePages and says when machine memory cannot
// use huge pages (see gvisor/hugepages.go for what they buy). The defrag
// policy matters to runsc only under shmem "advise", and is left alone
// otherwise.
func hugePages(cfg Config) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	policy := func(path string, enable func(string) (string, string, error)) (string, error) {
		if !cfg.HostHugePages {
			return gvisor.ShmemHugePages(path)
		}
		before, now, err := enable(path)
		if err == nil && before != now {
			log.Info("set a host huge page policy so that machine memory can use huge pages (--host-huge-pages=false leaves it)",
				"file", path, "was", before, "now", now)
		}
		return now, err
	}
	shmem, err := policy(gvisor.ShmemEnabledPath, gvisor.EnableShmemHugePages)
	defrag := ""
	if err == nil && shmem == "advise" {
		defrag, err = policy(gvisor.DefragPath, gvisor.EnableHugePageDefrag)
	}
	switch {
	case err != nil:
		log.Warn("machine memory may not use huge pages", "err", err)
	case !gvisor.HugePagesGranted(shmem, defrag):
		log.Warn("machine memory cannot use huge pages: checkpoints and restores are slower (docs/suspend-resume.md#huge-pages)",
			"shmem_enabled", shmem, "defrag", defrag)
	}
}

// RuntimeNames lists the names Config.Runtime accepts.
func RuntimeNames() []string {
	names := make([]string, 0, len(runtimes))
	for n := range runtimes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// New assembles a daemon: store, runtime, network, in-machine API, machine
// manager (which recovers every machine an earlier run left), API
// listeners and handler, proxy. On error, what was opened is closed again.
func New(ctx context.Context, cfg Config) (*System, error) {
	s := &System{cfg: cfg, log: cfg.Logger, reserved: map[int]string{}}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.cfg.ImagesDir == "" {
		s.cfg.ImagesDir = filepath.Join(cfg.DataDir, "images")
	}
	if s.cfg.Runtime == "" {
		s.cfg.Runtime = "gvisor"
	}
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"fault points", s.checkFaults},
		{"descriptor limits", s.planDescriptors},
		{"data directories", s.openDirs},
		{"locks", s.takeLocks},
		{"store", s.openStore},
		{"runtime", s.openRuntime},
		{"network", s.openNetwork},
		{"images", s.openImages},
		{"volumes", s.openVolumes},
		{"cluster", s.joinCluster},
		{"machines", s.openMachines},
		{"metrics", s.openMetrics},
		{"arming fault points", s.armFaults},
		{"recovery", s.recoverMachines},
		{"cluster reconcile", s.startCluster},
		{"health checks", s.openChecks},
		{"API listeners", s.openListeners},
		{"dashboard", s.openDashboard},
		{"API", s.openAPI},
		{"proxy", s.openProxy},
	}
	for _, step := range steps {
		if err := step.fn(ctx); err != nil {
			s.Close()
			if step.name == "store" || step.name == "recovery" {
				return nil, err
			}
			return nil, fmt.Errorf("%s: %w", step.name, err)
		}
	}
	return s, nil
}

// onClose registers fn to run when the system closes.
func (s *System) onClose(fn func()) { s.closers = append(s.closers, fn) }

// Close releases every subsystem, in the reverse order of New. Sandboxes
// keep running: a new System adopts them.
func (s *System) Close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// planDescriptors raises the descriptor limit as far as it goes and splits
// it (connlimit.Plan), so that no tenant can take the descriptors the admin
// socket, the API and the daemon's own files need (issue 17, F4).
func (s *System) planDescriptors(context.Context) error {
	limit, err := connlimit.RaiseNoFile()
	if err != nil {
		return err
	}
	s.FDs = connlimit.PlanFor(limit)
	s.log.Info(s.FDs.String())
	return nil
}

func (s *System) openDirs(context.Context) error {
	for _, dir := range []string{s.cfg.DataDir, s.cfg.ImagesDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	return nil
}

// takeLocks makes this daemon the only one using its data directory, its
// admin socket path and its network range (package hostlock), before it
// touches any of them (issue 17, F14). A lock a dead daemon left is taken
// over; one a live daemon holds stops this one with a message naming it.
func (s *System) takeLocks(context.Context) error {
	me := hostlock.Me(s.cfg.DataDir)
	take := func(l *hostlock.Lock, err error) error {
		if err != nil {
			return err
		}
		if l.Stale != nil {
			s.log.Info("took over a lock a daemon that is gone left", "lock", l.Path(), "was", l.Stale.String())
		}
		s.onClose(func() { l.Release() })
		return nil
	}
	if err := take(hostlock.Acquire(filepath.Join(s.cfg.DataDir, dataDirLock), "data directory "+me.DataDir, me)); err != nil {
		return err
	}
	// This daemon guards the data directory now: the fencing watchdog a
	// dead one left must not freeze what this one runs.
	if pid, err := fence.StopPrevious(s.cfg.DataDir); err != nil {
		return err
	} else if pid != 0 {
		s.log.Info("stopped the fencing watchdog an earlier daemon left", "pid", pid)
	}
	if s.cfg.Socket != "" {
		sock, err := filepath.Abs(s.cfg.Socket)
		if err != nil {
			return err
		}
		// The lock lives next to the socket: the directory must be as
		// private as the socket's own (see listenAdminSocket).
		if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
			return err
		}
		if err := checkPrivateDir(filepath.Dir(sock)); err != nil {
			return fmt.Errorf("admin socket %s: %w", sock, err)
		}
		if err := take(hostlock.Acquire(sock+".lock", "admin socket "+sock, me)); err != nil {
			return err
		}
	}
	if s.cfg.NetworkRange != "" {
		rng, err := netip.ParsePrefix(s.cfg.NetworkRange)
		if err != nil {
			return fmt.Errorf("network range %q: %w", s.cfg.NetworkRange, err)
		}
		dir := s.cfg.LockDir
		if dir == "" {
			dir = DefaultLockDir
		}
		if err := take(hostlock.AcquireRange(dir, rng.Masked(), me)); err != nil {
			return err
		}
	}
	return nil
}

func (s *System) openRuntime(context.Context) error {
	open, ok := runtimes[s.cfg.Runtime]
	if !ok {
		return fmt.Errorf("unknown runtime %q (have %s)", s.cfg.Runtime, strings.Join(RuntimeNames(), ", "))
	}
	rt, closeRT, err := open(s.cfg)
	if err != nil {
		return err
	}
	s.Runtime = rt
	s.onClose(func() {
		if err := closeRT(); err != nil {
			s.log.Warn("closing the runtime", "err", err)
		}
	})
	return nil
}

func (s *System) openNetwork(context.Context) error {
	if s.cfg.NetworkRange == "" {
		return nil
	}
	n, err := newNetwork(s.cfg)
	s.Network = n
	return err
}

func (s *System) openImages(context.Context) error {
	m, err := image.New(image.Config{Dir: filepath.Join(s.cfg.DataDir, "oci"), Store: s.Store,
		InsecureRegistries: s.cfg.Images.InsecureRegistries, ShareCredentials: s.cfg.Images.ShareCredentials,
		Limits: s.cfg.Images.Limits, Logger: s.log.With("component", "images"),
		// The metrics open after the images, and pulls begin after both.
		OnPull: func(took time.Duration, downloaded int64, err error) {
			if s.Metrics != nil {
				s.Metrics.ImagePull(took, downloaded, err)
			}
		}})
	s.Images = m
	return err
}

func (s *System) openMachines(context.Context) error {
	self := &machineRef{} // the in-machine API and the checks need the manager they are given to
	s.GuestAPI = guestapi.New(self, s.log.With("component", "guestapi"))
	s.GuestAPI.SetLimits(s.FDs.Tenant, 0)
	s.onClose(s.GuestAPI.CloseAll)
	s.Checks = checks.New(self, checks.Config{
		Logger: s.log,
		OnChange: func(app string) {
			if p := s.Proxy; p != nil {
				p.ChecksChanged(app)
			}
		},
	})
	hostMB, hostCPUs := machineLimits(s.cfg)
	mgr, err := machine.New(machine.Config{
		HostMemoryMB:          hostMB,
		HostCPUs:              hostCPUs,
		AppMemoryQuotaMB:      s.cfg.AppMemoryQuotaMB,
		AppCPUQuota:           s.cfg.AppCPUQuota,
		DataDir:               s.cfg.DataDir,
		ImagesDir:             s.cfg.ImagesDir,
		SuspendMemoryLimitMB:  s.cfg.SuspendMemoryLimitMB,
		RestartBackoff:        s.cfg.RestartBackoff,
		RestartBackoffMax:     s.cfg.RestartBackoffMax,
		RestartStableAfter:    s.cfg.RestartStableAfter,
		SyncSnapshots:         s.cfg.SyncSnapshots,
		ClockGate:             s.cfg.ClockGate,
		WarmSandboxesMemoryMB: s.cfg.WarmSandboxesMemoryMB,
		WarmSandboxCostMB:     s.cfg.WarmSandboxCostMB,
		Network:               s.Network,
		Images:                s.Images,
		GuestAPI:              s.GuestAPI,
		Volumes:               s.Volumes,
		Checks:                s.Checks,
		RunDir:                s.cfg.RunDir,
		Logger:                s.log,
		ReservedPorts:         s.reserved,
		Claimer:               s.claimer(),
	}, s.Store, s.Runtime)
	if err != nil {
		return err
	}
	if s.Cluster != nil {
		s.Cluster.Attach(mgr, s.Store)
	}
	self.Manager = mgr
	s.Machines = mgr
	s.onClose(mgr.Close)
	return nil
}

func (s *System) openVolumes(context.Context) error {
	v, err := volume.New(volume.Config{Dir: filepath.Join(s.cfg.DataDir, "volumes"), SharedMounts: true, Logger: s.log}, s.Store)
	if err != nil {
		return err
	}
	s.Volumes = v
	s.onClose(v.Close)
	return nil
}

// openChecks has the health check runner follow every committed change of
// a machine (it starts and pauses checks as machines start, stop and
// suspend); Run runs it.
func (s *System) openChecks(context.Context) error {
	s.onClose(s.Machines.Subscribe(func(model.Change) { s.Checks.Refresh() }))
	return nil
}

// recoverMachines mounts the volumes again (after a reboot) and resolves
// what the volume and machine operations of an earlier run left.
func (s *System) recoverMachines(ctx context.Context) error {
	if err := s.Volumes.Recover(ctx); err != nil {
		return fmt.Errorf("recover volumes: %w", err)
	}
	if s.restoredStore {
		ids, err := s.Machines.ForgetUnknown(ctx)
		if len(ids) > 0 {
			s.log.Warn("the restored store does not know these machines: stopped, their files are in DATA_DIR/forgotten", "machines", ids)
		}
		if err != nil {
			return fmt.Errorf("forget the machines the restored store does not know: %w", err)
		}
	}
	if err := s.Machines.Recover(ctx); err != nil {
		return fmt.Errorf("recover machines: %w", err)
	}
	return nil
}

// openListeners opens the API's listeners before the proxy binds any port,
// so that no machine's service can take the daemon's own address.
func (s *System) openListeners(context.Context) error {
	ls, err := listen(s.cfg, s.FDs, s.log)
	if err != nil {
		return err
	}
	s.listeners = ls
	for _, l := range ls {
		if a, ok := l.Addr().(*net.TCPAddr); ok {
			s.reserved[a.Port] = fmt.Sprintf("the daemon's TCP API (--listen %s)", s.cfg.ListenTCP)
		}
	}
	s.onClose(func() {
		for _, l := range s.listening() {
			l.Close()
		}
	})
	if s.cfg.MetricsListen != "" {
		l, err := net.Listen("tcp", s.cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("metrics listener: %w", err)
		}
		// Scrapers draw on the TCP API's share of descriptors, one client
		// at most as many connections as on the API.
		group := connlimit.NewGroup("the metrics listener", s.FDs.API, DefaultAPIMaxConnsPerClient)
		l = connlimit.Listen(l, connlimit.Limits{Groups: []*connlimit.Group{group}}, connlimit.RefuseHTTP, s.log)
		s.metricsLn = l
		s.listeners = append(s.listeners, l)
		if a, ok := l.Addr().(*net.TCPAddr); ok {
			s.reserved[a.Port] = fmt.Sprintf("the daemon's metrics listener (--metrics-listen %s)", s.cfg.MetricsListen)
		}
		if ap, err := netip.ParseAddrPort(l.Addr().String()); err == nil && !ap.Addr().IsLoopback() {
			s.log.Warn("--metrics-listen serves every metric without a token: keep it on a private network", "addr", l.Addr())
		}
	}
	return nil
}

// listening returns every listener the daemon has opened.
func (s *System) listening() []net.Listener {
	s.listenMu.Lock()
	defer s.listenMu.Unlock()
	return append([]net.Listener(nil), s.listeners...)
}

func (s *System) addListener(l net.Listener) {
	s.listenMu.Lock()
	defer s.listenMu.Unlock()
	s.listeners = append(s.listeners, l)
}

// openMetrics defines the metrics and subscribes them to every committed
// machine change, before recovery so that what recovery does is counted.
func (s *System) openMetrics(context.Context) error {
	s.Metrics = metrics.New(metrics.Config{
		Machines: s.Machines,
		Snapshots: func() (metrics.SnapshotUsage, error) {
			u, err := s.Machines.SnapshotUsage()
			return metrics.SnapshotUsage{Images: u.Images, Bytes: u.Bytes}, err
		},
		Volumes: s.volumeUsage,
		Images: func() (metrics.ImageUsage, error) {
			n, b, err := s.Images.Usage()
			return metrics.ImageUsage{Images: n, Bytes: b}, err
		},
		Warm: func() metrics.WarmUsage {
			w := s.Machines.WarmStats()
			return metrics.WarmUsage{Sandboxes: w.Sandboxes, MemoryBytes: w.MemoryBytes, BudgetBytes: w.BudgetBytes}
		},
		Runtime: s.Runtime.Name(), RuntimeVersion: s.Runtime.Version(),
		Logger: s.log.With("component", "metrics"),
	})
	s.cfg.Proxy.Observer = s.Metrics
	s.onClose(s.Machines.Subscribe(s.Metrics.Observe))
	return nil
}

// volumeUsage is every app's volumes, for the metrics.
func (s *System) volumeUsage() ([]metrics.VolumeUsage, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	apps, err := s.Machines.ListApps(ctx)
	if err != nil {
		return nil, err
	}
	var out []metrics.VolumeUsage
	for _, app := range apps {
		vs, err := s.Volumes.List(ctx, app.Name)
		if model.IsNotFound(err) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		for _, v := range vs {
			if v.State == model.VolumeDestroying || v.State == model.VolumeDestroyed {
				continue
			}
			out = append(out, metrics.VolumeUsage{App: v.App, SizeBytes: int64(v.SizeGB) << 30,
				UsedBytes: int64(v.Blocks-min(v.BlocksFree, v.Blocks)) * v.BlockSize})
		}
	}
	return out, nil
}

// openDashboard serves the web dashboard, whose calls go to the API handler.
func (s *System) openDashboard(context.Context) error {
	s.Dashboard = dashboard.New(dashboard.Config{
		Machines: s.Machines,
		Tokens:   auth.New(s.Store, nil),
		API:      http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.api.ServeHTTP(w, r) }),
		Logger:   s.log.With("component", "dashboard"),
	})
	s.onClose(s.Dashboard.Close)
	return nil
}

func (s *System) openAPI(context.Context) error {
	var m api.Machines = s.Machines
	cfg := api.Config{Tokens: auth.New(s.Store, nil), Images: s.Images, Volumes: s.Volumes, Metrics: s.Metrics,
		Dashboard: (*dashboardOpener)(s)}
	if s.Cluster != nil {
		m = s.Cluster.Machines()
		cfg.Tokens, cfg.Router, cfg.Hosts = s.Cluster.Tokens(), s.Cluster, s.Cluster
	}
	s.api = api.New(m, cfg, s.log)
	mux := http.NewServeMux()
	mux.Handle(dashboard.Prefix, s.Dashboard)
	mux.Handle("/ui", s.Dashboard)
	mux.Handle("/", s.api)
	var h http.Handler = mux
	if s.cfg.Pprof {
		h = withPprof(h)
	}
	s.API = h
	return nil
}

func (s *System) openProxy(context.Context) error {
	if s.cfg.NoProxy {
		return nil
	}
	var m proxy.Machines = s.Machines
	pcfg := s.cfg.Proxy
	pcfg.Budget = s.FDs.Tenant
	pcfg.Reserved = s.reserved
	pcfg.Health = s.Checks
	if s.Cluster != nil {
		m, pcfg.Remote = s.Cluster.Machines(), s.Cluster.Remote()
	}
	p := proxy.New(m, pcfg, s.log.With("component", "proxy"))
	s.Proxy = p
	if s.Cluster != nil {
		s.Cluster.AttachProxy(p)
	}
	// The proxy follows every committed change (new machines, states,
	// configs) at once: states before the operation returns, the rest at
	// its next reconcile.
	s.onClose(s.Machines.Subscribe(p.MachineChanged))
	return nil
}

// Run serves the API and runs the proxy until ctx ends, then shuts down
// gracefully.
func (s *System) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	checksDone := make(chan error, 1)
	go func() { checksDone <- s.Checks.Run(ctx) }()
	defer func() { cancel(); <-checksDone }()
	proxyDone := make(chan error, 1)
	if s.Proxy != nil {
		go func() { proxyDone <- s.Proxy.Run(ctx) }()
	} else {
		proxyDone <- nil
	}
	s.log.Info("torpor daemon ready", "socket", s.cfg.Socket, "tcp", s.cfg.ListenTCP,
		"runtime", s.Runtime.Name(), "runtime_version", s.Runtime.Version())
	peerDone := make(chan error, 1)
	if s.Cluster != nil {
		go func() { peerDone <- s.Cluster.Serve(ctx, s.API) }()
	} else {
		peerDone <- nil
	}
	err := s.serve(ctx)
	cancel()
	if perr := <-proxyDone; err == nil {
		err = perr
	}
	if perr := <-peerDone; err == nil {
		err = perr
	}
	return err
}

// serve serves the API on the listeners (and the metrics on their own
// listener) until ctx ends, then shuts down gracefully.
func (s *System) serve(ctx context.Context) error {
	idle := s.cfg.APIIdleTimeout
	if idle <= 0 {
		idle = DefaultAPIIdleTimeout
	}
	// Idle keep-alive connections are closed, slow headers dropped: a client
	// cannot hold connections it does not use (issue 17, F4). Responses are
	// not bounded: logs -f, wait and the dashboard's stream last as long as
	// they need.
	srv := &http.Server{Handler: s.API, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: idle,
		ConnContext: connContext(s.log)}
	metricsSrv := &http.Server{Handler: metricsOnly(s.Metrics.Handler()), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: idle}
	ls := s.listening()
	errc := make(chan error, len(ls)+1)
	for _, l := range ls {
		srv := srv
		if l == s.metricsLn {
			srv = metricsSrv
		}
		go func(l net.Listener) { errc <- srv.Serve(l) }(l)
	}
	s.local.start(errc)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.log.Info("shutting down")
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Open dashboard streams do not end by themselves.
	s.Dashboard.Close()
	metricsSrv.Shutdown(shutdown)
	s.local.shutdown(shutdown)
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// metricsOnly serves h at /metrics and nothing else (the --metrics-listen
// listener).
func metricsOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error":"this listener serves /metrics only"}` + "\n"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// joinCluster joins the cluster of cfg.Cluster, if any.
func (s *System) joinCluster(ctx context.Context) error {
	c := s.cfg.Cluster
	if len(c.Endpoints) == 0 {
		if c.HostID != "" || c.Advertise != "" || c.SnapshotStore != "" {
			return fmt.Errorf("--host-id, --advertise and --snapshot-store need --cluster-etcd")
		}
		return nil
	}
	wd, err := s.startWatchdog()
	if err != nil {
		return err
	}
	n, err := cluster.Join(ctx, cluster.Config{
		Endpoints: c.Endpoints, HostID: c.HostID, Advertise: c.Advertise, TLSDir: c.TLSDir, LeaseTTL: c.LeaseTTL,
		CPUs: c.CPUs, MemoryMB: c.MemoryMB, DataDir: s.cfg.DataDir, SnapshotStore: c.SnapshotStore,
		Runtime: s.Runtime.Name(), RuntimeVersion: s.Runtime.Version(), CPU: snapshot.HostID(), Logger: s.log,
		OnRenew: wd.Renewed,
	})
	if err != nil {
		return err
	}
	s.Cluster = n
	s.onClose(n.Close)
	return nil
}

// dataDirLock is the data directory's lock file (package hostlock).
const dataDirLock = "torpor.lock"

// startWatchdog starts the fencing watchdog of a cluster host (package
// fence): it freezes the sandboxes if this daemon dies or hangs without
// another taking over, before its lease can expire. A clean Close stops
// it, after the cluster node froze the machines itself.
func (s *System) startWatchdog() (*fence.Watchdog, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("fencing watchdog: %w", err)
	}
	dir, err := filepath.Abs(s.cfg.DataDir)
	if err != nil {
		return nil, err
	}
	ttl := s.cfg.Cluster.LeaseTTL
	if ttl == 0 {
		ttl = cluster.DefaultLeaseTTL
	}
	wd, err := fence.Start(dir, exe, "--data-dir", dir, "--runsc", s.cfg.RunscPath,
		"--lock", filepath.Join(dir, dataDirLock), "--daemon-pid", strconv.Itoa(os.Getpid()), "--lease-ttl", ttl.String())
	if err != nil {
		return nil, err
	}
	s.log.Info("started the fencing watchdog", "pid", wd.PID(), "log", filepath.Join(dir, fence.LogFile))
	s.onClose(wd.Stop)
	return wd, nil
}

// claimer is the machine manager's Claimer: the cluster, if any.
func (s *System) claimer() machine.Claimer {
	if s.Cluster == nil {
		return nil
	}
	return s.Cluster
}

// startCluster brings the recovered machines in line with the cluster and
// starts its background work.
func (s *System) startCluster(ctx context.Context) error {
	if s.Cluster == nil {
		return nil
	}
	return s.Cluster.Start(ctx)
}
