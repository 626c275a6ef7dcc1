// Package daemon assembles and runs `torpor serve`: it opens the store,
// the gVisor runtime and the machine network, recovers every machine left by
// an earlier run, and serves the API until its context ends: on a local admin
// Unix socket (0600, trusted as admin) and optionally on TCP, where every
// request needs a bearer token (package auth). Sandboxes outlive the daemon: a restarted daemon
// adopts them.
package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/torpor-dev/torpor/internal/image"
	"github.com/torpor-dev/torpor/internal/machine"
	"github.com/torpor-dev/torpor/internal/network"
	"github.com/torpor-dev/torpor/internal/proxy"
)

// Config is the daemon's configuration (the flags of `torpor serve`).
type Config struct {
	DataDir   string // store, machines, runsc state
	ImagesDir string // image names resolve here; default DataDir/images
	Socket    string // Unix socket of the API
	RunDir    string // short-lived files with short paths (in-machine API sockets)
	// LockDir holds the host-wide locks of network ranges, which every
	// daemon on the host must look for in one place (default
	// DefaultLockDir).
	LockDir   string
	ListenTCP string // optional host:port of the API
	// MetricsListen is an optional host:port serving GET /metrics alone,
	// without a token (for a Prometheus on a private network).
	MetricsListen string
	// APIIdleTimeout closes an API connection (either listener) that has
	// had no request for that long (default DefaultAPIIdleTimeout).
	APIIdleTimeout time.Duration
	// APIMaxConnsPerClient caps the TCP API connections one client address
	// holds open (default DefaultAPIMaxConnsPerClient; -1: no cap).
	APIMaxConnsPerClient int
	// StoreBackupInterval is how often the verified backup of the store
	// (DATA_DIR/torpor.db.backup) is refreshed, besides at start-up and
	// shutdown (default DefaultStoreBackupInterval; negative: only then).
	StoreBackupInterval time.Duration
	// RestoreStoreBackup sets a damaged store aside and restores the
	// backup before opening it; machines the backup does not know are
	// stopped and their files moved to DATA_DIR/forgotten.
	RestoreStoreBackup bool
	// Runtime names the sandbox driver (see runtimes); default "gvisor".
	Runtime              string
	RunscPath            string
	SuspendMemoryLimitMB int
	// HostMemoryMB and HostCPUs are what machines may take of this host
	// (--host-memory-mb, --host-cpus; 0: the host's, less a reserve for
	// memory; -1: no limit). AppMemoryQuotaMB and AppCPUQuota bound one
	// app's running machines together (--app-memory-quota-mb,
	// --app-cpu-quota; 0: no quota). See machine/admission.go.
	HostMemoryMB     int
	HostCPUs         int
	AppMemoryQuotaMB int
	AppCPUQuota      int
	// Restart policy timing (machine.Config): --restart-backoff,
	// --restart-backoff-max, --restart-stable-after.
	RestartBackoff     time.Duration
	RestartBackoffMax  time.Duration
	RestartStableAfter time.Duration
	// WarmSandboxesMemoryMB is the memory budget of the sandboxes created
	// ahead of resumes (--warm-sandboxes-memory; 0: none, the zero value
	// so that embedders and tests opt in), WarmSandboxCostMB what each is
	// charged (0: machine.DefaultWarmSandboxCostMB). See machine/warm.go.
	WarmSandboxesMemoryMB int
	WarmSandboxCostMB     int
	SyncSnapshots         bool // flush snapshots before reporting suspended (machine.Config)
	ClockGate             bool // check a resumed machine's clock before continuing it (machine.Config)
	BackgroundRestore     bool // load a resumed machine's pages in the background (gvisor.Config)
	// NoPagesReuse makes each suspend write its memory into a new file
	// rather than over the one the machine was resumed from
	// (gvisor.Config.NoPagesReuse, runtime/gvisor/reuse.go).
	NoPagesReuse bool
	// HostHugePages sets the host's shmem huge page policy from "never" to
	// "advise" and its defrag policy from "madvise" (or "defer+madvise") to
	// "defer" at start, so that runsc backs machine memory with huge pages
	// (gvisor.EnableShmemHugePages, gvisor.EnableHugePageDefrag;
	// --host-huge-pages).
	HostHugePages bool
	NetworkRange  string // private range for machine addresses; "" disables networking
	Proxy         proxy.Config
	// Images configures pulls and unpacking of OCI images (--insecure-registry,
	// --image-max-*, --share-registry-credentials).
	Images  ImagesConfig
	NoProxy bool // run without the proxy
	Pprof   bool // serve Go's runtime profiles at /debug/pprof/ on the API listeners
	Logger  *slog.Logger
	// Cluster, when its Endpoints are set, joins this host to a cluster
	// (docs/cluster.md); unset, the daemon is a single host as before.
	Cluster ClusterConfig
	// Fault arms fault points for crash tests (TORPOR_FAULT, see fault.go).
	// Only a test build (-tags faults) accepts it; a release build refuses
	// to start with it set.
	Fault string
}

// ClusterConfig is the cluster part of the daemon's configuration.
type ClusterConfig struct {
	Endpoints     []string      // --cluster-etcd
	HostID        string        // --host-id
	Advertise     string        // --advertise
	TLSDir        string        // --cluster-tls
	LeaseTTL      time.Duration // --cluster-lease-ttl
	CPUs          int           // --cluster-cpus
	MemoryMB      int           // --cluster-memory-mb
	SnapshotStore string        // --snapshot-store
}

// ImagesConfig configures the daemon's OCI images (image.Config).
type ImagesConfig struct {
	InsecureRegistries []string
	ShareCredentials   bool
	Limits             image.Limits
}

// Defaults of Config.
const (
	DefaultAPIIdleTimeout       = time.Minute
	DefaultAPIMaxConnsPerClient = 16
	DefaultLockDir              = "/run/lock/torpor"
)

// Run runs the daemon until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	s, err := New(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Run(ctx)
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
		Isolate: true, Firewall: true, Instance: cfg.Cluster.HostID})
	if err != nil {
		return nil, err
	}
	return netAdapter{n}, nil
}

func (a netAdapter) Attach(ctx context.Context, app, id string) (string, netip.Addr, error) {
	at, err := a.n.Attach(ctx, app, id)
	return at.NSPath, at.IP, err
}

func (a netAdapter) Adopt(ctx context.Context, app, id string) error {
	_, err := a.n.Adopt(ctx, app, id)
	return err
}

func (a netAdapter) Detach(ctx context.Context, id string) error { return a.n.Detach(ctx, id) }

func (a netAdapter) DeleteApp(ctx context.Context, app string) error { return a.n.DeleteApp(ctx, app) }
