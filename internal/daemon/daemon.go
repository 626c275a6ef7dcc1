// Package daemon assembles and runs `torpor serve`: it opens the store,
// the gVisor runtime and the machine network, recovers every machine left by
// an earlier run, and serves the API until its context ends: on a local admin
// Unix socket (0600, trusted as admin) and optionally on TCP, where every
// request needs a bearer token (package auth). Sandboxes outlive the daemon: a restarted daemon
// adopts them.
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
	"sync/atomic"
	"syscall"
	"time"

	"github.com/torpor-dev/torpor/internal/api"
	"github.com/torpor-dev/torpor/internal/auth"
	"github.com/torpor-dev/torpor/internal/guestapi"
	"github.com/torpor-dev/torpor/internal/machine"
	"github.com/torpor-dev/torpor/internal/network"
	"github.com/torpor-dev/torpor/internal/proxy"
	"github.com/torpor-dev/torpor/internal/runtime/gvisor"
	"github.com/torpor-dev/torpor/internal/store"
)

// Config is the daemon's configuration (the flags of `torpor serve`).
type Config struct {
	DataDir              string // store, machines, runsc state
	ImagesDir            string // image names resolve here; default DataDir/images
	Socket               string // Unix socket of the API
	RunDir               string // short-lived files with short paths (in-machine API sockets)
	ListenTCP            string // optional host:port of the API
	RunscPath            string
	SuspendMemoryLimitMB int
	SyncSnapshots        bool   // flush snapshots before reporting suspended (machine.Config)
	BackgroundRestore    bool   // load a resumed machine's pages in the background (gvisor.Config)
	NetworkRange         string // private range for machine addresses; "" disables networking
	Proxy                proxy.Config
	NoProxy              bool // run without the proxy
	Pprof                bool // serve Go's runtime profiles at /debug/pprof/ on the API listeners
	Logger               *slog.Logger
	// Fault arms fault points for crash tests (TORPOR_FAULT, see fault.go);
	// never set in production.
	Fault string
}

// Run runs the daemon until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.ImagesDir == "" {
		cfg.ImagesDir = filepath.Join(cfg.DataDir, "images")
	}
	for _, dir := range []string{cfg.DataDir, cfg.ImagesDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	st, err := store.Open(filepath.Join(cfg.DataDir, "torpor.db"))
	if err != nil {
		return fmt.Errorf("%w (is another torpor daemon using %s?)", err, cfg.DataDir)
	}
	defer st.Close()
	rt, err := gvisor.New(gvisor.Config{RunscPath: cfg.RunscPath, RootDir: filepath.Join(cfg.DataDir, "runsc"),
		ExtraFlags: []string{guestapi.RunscFlag}, BackgroundRestore: cfg.BackgroundRestore})
	if err != nil {
		return err
	}
	faults, err := parseFaults(cfg.Fault)
	if err != nil {
		return err
	}
	defer func() {
		if err := rt.Close(); err != nil {
			log.Warn("closing the runtime", "err", err)
		}
	}()
	var px atomic.Pointer[proxy.Proxy]
	self := &machineRef{} // the in-machine API needs the manager it is given to
	gapi := guestapi.New(self, log.With("component", "guestapi"))
	defer gapi.CloseAll()
	mcfg := machine.Config{
		GuestAPI: gapi,
		RunDir:   cfg.RunDir,
		OnChange: func() {
			if p := px.Load(); p != nil {
				p.Refresh()
			}
		},
		DataDir:              cfg.DataDir,
		ImagesDir:            cfg.ImagesDir,
		SuspendMemoryLimitMB: cfg.SuspendMemoryLimitMB,
		SyncSnapshots:        cfg.SyncSnapshots,
		Logger:               log,
		Fault:                faultFunc(faults, killSandbox(rt), log),
	}
	if cfg.NetworkRange != "" {
		if mcfg.Network, err = newNetwork(cfg); err != nil {
			return err
		}
	}
	mgr, err := machine.New(mcfg, st, rt)
	if err != nil {
		return err
	}
	self.Manager = mgr
	defer mgr.Close()
	if err := mgr.Recover(ctx); err != nil {
		return fmt.Errorf("recover machines: %w", err)
	}
	proxyDone := make(chan error, 1)
	if !cfg.NoProxy {
		p := proxy.New(mgr, cfg.Proxy, log.With("component", "proxy"))
		px.Store(p)
		go func() { proxyDone <- p.Run(ctx) }()
	} else {
		proxyDone <- nil
	}
	log.Info("torpor daemon ready", "socket", cfg.Socket, "tcp", cfg.ListenTCP, "runtime", rt.Version())
	var h http.Handler = api.New(mgr, api.Config{Tokens: auth.New(st, nil)}, log)
	if cfg.Pprof {
		h = withPprof(h)
	}
	err = serve(ctx, cfg, h, log)
	if perr := <-proxyDone; err == nil {
		err = perr
	}
	return err
}

// serve serves h on the configured listeners until ctx ends, then shuts
// down gracefully.
func serve(ctx context.Context, cfg Config, h http.Handler, log *slog.Logger) error {
	listeners, err := listen(cfg)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ConnContext: connContext(log)}
	errc := make(chan error, len(listeners))
	for _, l := range listeners {
		go func(l net.Listener) { errc <- srv.Serve(l) }(l)
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// killSandbox returns a sandboxKiller for the gVisor runtime.
func killSandbox(rt *gvisor.Runtime) sandboxKiller {
	return func(ctx context.Context, machineID string) (int, error) {
		pid, err := rt.SandboxPID(ctx, machine.SandboxID(machineID))
		if err != nil || pid == 0 {
			return pid, err
		}
		return pid, syscall.Kill(pid, syscall.SIGKILL)
	}
}

// machineRef lets the in-machine API be built before the manager it uses.
type machineRef struct{ *machine.Manager }

// netAdapter gives package machine the view of package network it needs.
type netAdapter struct{ n *network.Manager }

func newNetwork(cfg Config) (machine.Network, error) {
	prefix, err := netip.ParsePrefix(cfg.NetworkRange)
	if err != nil {
		return nil, fmt.Errorf("network range %q: %w", cfg.NetworkRange, err)
	}
	n, err := network.New(network.Config{Range: prefix, StateDir: filepath.Join(cfg.DataDir, "network"),
		Isolate: true, Firewall: true})
	if err != nil {
		return nil, err
	}
	return netAdapter{n}, nil
}

func (a netAdapter) Attach(ctx context.Context, app, id string) (string, netip.Addr, error) {
	at, err := a.n.Attach(ctx, app, id)
	return at.NSPath, at.IP, err
}

func (a netAdapter) Detach(ctx context.Context, id string) error { return a.n.Detach(ctx, id) }

func (a netAdapter) DeleteApp(ctx context.Context, app string) error { return a.n.DeleteApp(ctx, app) }
