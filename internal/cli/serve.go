package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/torpor-dev/torpor/internal/daemon"
	"github.com/torpor-dev/torpor/internal/image"
	"github.com/torpor-dev/torpor/internal/machine"
)

// NewServe returns the `torpor serve` command, which runs the daemon.
func NewServe() *cobra.Command {
	cfg := daemon.Config{}
	var debug bool
	var warmMemory string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the torpor daemon (API, machines, suspend/resume)",
		Long: `Run the torpor daemon: it keeps machines and their state in DATA_DIR, runs them
under gVisor's runsc and serves the Fly Machines-compatible API on a Unix socket
(and optionally TCP). The socket is the local admin socket: mode 0600, no token
needed. TCP requests need a bearer token made with "torpor token create"
(see docs/security.md). Machines keep running when the daemon stops; a restarted
daemon adopts them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			if cmd.Flags().Changed("token") {
				return errors.New("torpor serve no longer takes --token: the TCP API accepts tokens made with " +
					"\"torpor token create\" over the admin socket (see docs/security.md)")
			}
			level := slog.LevelInfo
			if debug {
				level = slog.LevelDebug
			}
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			if os.Getenv("TORPOR_TOKEN") != "" {
				cfg.Logger.Warn("TORPOR_TOKEN is set but the daemon ignores it: make tokens with \"torpor token create\" (docs/security.md)")
			}
			if cfg.WarmSandboxesMemoryMB, err = parseMiB(warmMemory); err != nil {
				return fmt.Errorf("--warm-sandboxes-memory: %w", err)
			}
			cfg.Fault = os.Getenv("TORPOR_FAULT")
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return daemon.Run(ctx, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "/var/lib/torpor", "directory for the store, machines and snapshots")
	f.StringVar(&cfg.ImagesDir, "images-dir", "", "directory where names resolve to root filesystem directories, for the admin (default DATA_DIR/images); other names are OCI images")
	f.StringVar(&cfg.Socket, "socket", "/run/torpor/torpor.sock", "Unix socket to serve the API on (empty: none)")
	f.StringVar(&cfg.RunDir, "run-dir", "/run/torpor", "directory for in-machine API sockets (short paths)")
	f.StringVar(&cfg.ListenTCP, "listen", "", "also serve the API on this TCP address, e.g. 127.0.0.1:4280 (with /metrics and the dashboard at /ui/, both behind tokens)")
	f.StringVar(&cfg.MetricsListen, "metrics-listen", "", "also serve GET /metrics alone on this TCP address, without a token (for Prometheus on a private network), e.g. 127.0.0.1:9480")
	f.StringVar(&cfg.RunscPath, "runsc", filepath.Join("/var/cache/torpor/bin", "runsc"), "path of the runsc binary")
	f.BoolVar(&cfg.NoPagesReuse, "no-pages-reuse", false, "write each suspend's memory into a new file instead of over the file the machine was resumed from (which is kept until then: disk space the size of each resumed machine's memory); see docs/suspend-resume.md")
	f.BoolVar(&cfg.BackgroundRestore, "restore-background", false, "let runsc restore return before a machine's memory is loaded (runsc restore --background); slower on 2-core hosts, see docs/benchmarks.md")
	f.BoolVar(&cfg.HostHugePages, "host-huge-pages", true, "at start, set the host's shmem transparent huge page policy (/sys/kernel/mm/transparent_hugepage/shmem_enabled) from never to advise, and its defrag policy (.../defrag) from madvise or defer+madvise to defer, which runsc needs to use huge pages: faster suspend and resume (docs/suspend-resume.md#huge-pages); other values are left as they are")
	f.BoolVar(&cfg.SyncSnapshots, "sync-snapshots", false, "flush each snapshot to disk before reporting the machine suspended (default: right after; a host crash in between costs the snapshot, and the next start cold-starts)")
	f.BoolVar(&cfg.ClockGate, "clock-gate", false, "after each restore, read the machine's wall clock in a new process while the app is frozen and continue the app only once it is right (20-30 ms per resume; the clock is right without it, see docs/app-authors.md#the-clock)")
	f.DurationVar(&cfg.StoreBackupInterval, "store-backup-interval", daemon.DefaultStoreBackupInterval, "how often to refresh the verified backup of the store, DATA_DIR/torpor.db.backup (also written at start-up and shutdown; negative: only then)")
	f.BoolVar(&cfg.RestoreStoreBackup, "restore-store-backup", false, "set a damaged store aside (DATA_DIR/torpor.db.corrupt-TIME) and restore the verified backup before starting; machines the backup does not know are stopped and moved to DATA_DIR/forgotten (docs/reliability.md)")
	f.IntVar(&cfg.SuspendMemoryLimitMB, "suspend-memory-limit-mb", 2048, "largest guest memory_mb that may be suspended")
	f.StringVar(&warmMemory, "warm-sandboxes-memory", DefaultWarmSandboxesMemory, "memory budget (e.g. 256MiB, 1GiB; a bare number is MiB; 0 disables) of the sandboxes created ahead for the suspended machines most likely to wake, so that their resume skips creating one (docs/suspend-resume.md)")
	f.IntVar(&cfg.WarmSandboxCostMB, "warm-sandbox-cost-mb", machine.DefaultWarmSandboxCostMB, "what one warm sandbox is charged against --warm-sandboxes-memory, in MiB (gVisor's: ~54 MiB resident measured)")
	f.IntVar(&cfg.HostMemoryMB, "host-memory-mb", 0, "memory machines may take of this host together, in MB; a start past it is refused (0: the host's memory less a tenth, at least 512 MB, at most 4 GiB; -1: no limit)")
	f.IntVar(&cfg.HostCPUs, "host-cpus", 0, "most CPUs one machine may ask for (0: the host's CPUs; -1: no limit)")
	f.IntVar(&cfg.AppMemoryQuotaMB, "app-memory-quota-mb", 0, "memory one app's running machines may take together, in MB (0: no quota)")
	f.IntVar(&cfg.AppCPUQuota, "app-cpu-quota", 0, "CPUs one app's running machines may ask for together (0: no quota)")
	f.DurationVar(&cfg.RestartBackoff, "restart-backoff", machine.DefaultRestartBackoff, "how long the restart policy waits before a machine's first restart in a row; each next one waits twice as long")
	f.DurationVar(&cfg.RestartBackoffMax, "restart-backoff-max", machine.DefaultRestartBackoffMax, "longest wait of the restart policy between restarts")
	f.DurationVar(&cfg.RestartStableAfter, "restart-stable-after", machine.DefaultRestartStableAfter, "a run lasting this long ends a machine's series of restarts (the next exit starts counting restart.max_retries again)")
	f.StringVar(&cfg.NetworkRange, "network-range", "10.213.0.0/16", "private range for machine addresses (empty: machines get loopback only)")
	f.StringVar(&cfg.Proxy.ListenHost, "proxy-host", "127.0.0.1", "address the proxy publishes machines' service ports on")
	f.BoolVar(&cfg.NoProxy, "no-proxy", false, "run without the proxy")
	f.DurationVar(&cfg.Proxy.IdleTimeout, "proxy-idle-timeout", 5*time.Minute, "how long a machine must be idle before autostop stops or suspends it")
	f.DurationVar(&cfg.Proxy.CheckInterval, "proxy-check-interval", 15*time.Second, "how often the proxy looks for idle machines")
	f.DurationVar(&cfg.Proxy.WakeTimeout, "proxy-wake-timeout", 30*time.Second, "how long a request waits for a machine to wake before a 503")
	f.StringArrayVar(&cfg.Images.InsecureRegistries, "insecure-registry", nil, "HOST:PORT of a registry on loopback to pull from over plain HTTP (repeatable); every other registry needs HTTPS")
	f.BoolVar(&cfg.Images.ShareCredentials, "share-registry-credentials", false, "let app tokens' pulls use the registry credentials of the daemon's Docker config file (default: only the admin's pulls do; apps pull anonymously)")
	f.IntVar(&cfg.Images.Limits.MaxLayers, "image-max-layers", image.DefaultLimits.MaxLayers, "most layers an image may have")
	f.Int64Var(&cfg.Images.Limits.MaxBytes, "image-max-size", image.DefaultLimits.MaxBytes, "largest image, in bytes: its layers uncompressed (and a pull's or import's download)")
	f.IntVar(&cfg.Images.Limits.MaxEntries, "image-max-entries", image.DefaultLimits.MaxEntries, "most files (tar entries) the layers of an image may hold")
	f.DurationVar(&cfg.APIIdleTimeout, "api-idle-timeout", daemon.DefaultAPIIdleTimeout, "close an API connection that has had no request for this long")
	f.IntVar(&cfg.APIMaxConnsPerClient, "api-max-conns-per-client", daemon.DefaultAPIMaxConnsPerClient, "most TCP API connections one client address may hold open (-1: no cap)")
	f.IntVar(&cfg.Proxy.MaxConnsPerClient, "proxy-max-conns-per-client", 1024, "most connections one client address may hold open to the published ports (-1: no cap)")
	f.IntVar(&cfg.Proxy.MaxConnsPerApp, "proxy-max-conns-per-app", 4096, "most client connections to one app's published ports (-1: no cap)")
	f.DurationVar(&cfg.Proxy.HeaderTimeout, "proxy-header-timeout", 10*time.Second, "how long the proxy waits for an HTTP request's headers")
	f.DurationVar(&cfg.Proxy.HTTPIdleTimeout, "proxy-http-idle-timeout", time.Minute, "close a kept-alive HTTP connection to the proxy that has had no request for this long")
	f.DurationVar(&cfg.Proxy.TCPIdleTimeout, "proxy-tcp-idle-timeout", 10*time.Minute, "close a raw TCP connection through the proxy that has carried no byte either way for this long")
	f.BoolVar(&cfg.Pprof, "pprof", false, "serve Go's runtime profiles at /debug/pprof/ on the admin socket (for diagnosis)")
	f.StringSliceVar(&cfg.Cluster.Endpoints, "cluster-etcd", nil, "join a cluster on these etcd URLs (comma-separated; see docs/cluster.md); unset: a single host")
	f.StringVar(&cfg.Cluster.HostID, "host-id", "", "this host's ID in the cluster (a DNS label; its certificate's name)")
	f.StringVar(&cfg.Cluster.Advertise, "advertise", "", "host:port of this host's cluster peer listener (mutual TLS), where the other hosts reach it")
	f.StringVar(&cfg.Cluster.TLSDir, "cluster-tls", "", "directory with ca.crt, host.crt and host.key for the peer channel (torpor cluster certs)")
	f.DurationVar(&cfg.Cluster.LeaseTTL, "cluster-lease-ttl", 10*time.Second, "the host's etcd lease: a host that cannot renew it fences itself, and the others treat it as gone once it expires")
	f.IntVar(&cfg.Cluster.CPUs, "cluster-cpus", 0, "CPUs machines may reserve on this host (default: all)")
	f.IntVar(&cfg.Cluster.MemoryMB, "cluster-memory-mb", 0, "memory machines may reserve on this host, in MB (default: all)")
	f.StringVar(&cfg.Cluster.SnapshotStore, "snapshot-store", "", "keep every snapshot also in this S3 bucket: s3://BUCKET[/PREFIX]?endpoint=HOST:PORT[&secure=false] (credentials in AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)")
	f.BoolVar(&debug, "debug", false, "log at debug level")
	return cmd
}

// DefaultWarmSandboxesMemory is --warm-sandboxes-memory's default: four
// sandboxes at the default cost, for the machines behind the proxy and the
// last ones suspended. A resume into one skips creating the sandbox (~50 ms
// of a 64 MiB resume, docs/benchmarks.md). A suspended machine with one has
// a runsc container in state "created" (`runsc list`), ~54 MiB resident;
// warm sandboxes never take memory --host-memory-mb gives machines. 0
// turns them off.
const DefaultWarmSandboxesMemory = "256MiB"

// parseMiB parses a memory size into MiB: a number with a unit (KiB, MiB,
// GiB, or K, M, G, MB, GB taken as the binary ones) or a bare number of
// MiB. It must be a whole number of MiB, at least 0.
func parseMiB(s string) (int, error) {
	t := strings.TrimSpace(s)
	mult := int64(1 << 20)
	lower := strings.ToLower(t)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"kb", 1 << 10}, {"mb", 1 << 20}, {"gb", 1 << 30}, {"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}} {
		if strings.HasSuffix(lower, u.suffix) {
			t, mult = strings.TrimSpace(t[:len(t)-len(u.suffix)]), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size: want e.g. 256MiB, 1GiB or 0", s)
	}
	b := n * mult
	if b%(1<<20) != 0 || b/(1<<20) > 1<<30 {
		return 0, fmt.Errorf("%q must be a whole number of MiB", s)
	}
	return int(b >> 20), nil
}
