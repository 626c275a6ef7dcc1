package cli

import (
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/torpor-dev/torpor/internal/daemon"
)

// NewServe returns the `torpor serve` command, which runs the daemon.
func NewServe() *cobra.Command {
	cfg := daemon.Config{}
	var debug bool
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
		RunE: func(cmd *cobra.Command, _ []string) error {
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
			cfg.Fault = os.Getenv("TORPOR_FAULT")
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return daemon.Run(ctx, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "/var/lib/torpor", "directory for the store, machines and snapshots")
	f.StringVar(&cfg.ImagesDir, "images-dir", "", "directory where image names resolve to root filesystems (default DATA_DIR/images)")
	f.StringVar(&cfg.Socket, "socket", "/run/torpor/torpor.sock", "Unix socket to serve the API on (empty: none)")
	f.StringVar(&cfg.RunDir, "run-dir", "/run/torpor", "directory for in-machine API sockets (short paths)")
	f.StringVar(&cfg.ListenTCP, "listen", "", "also serve the API on this TCP address, e.g. 127.0.0.1:4280")
	f.StringVar(&cfg.RunscPath, "runsc", filepath.Join("/var/cache/torpor/bin", "runsc"), "path of the runsc binary")
	f.BoolVar(&cfg.BackgroundRestore, "restore-background", false, "let runsc restore return before a machine's memory is loaded (runsc restore --background); slower on 2-core hosts, see docs/benchmarks.md")
	f.BoolVar(&cfg.SyncSnapshots, "sync-snapshots", false, "flush each snapshot to disk before reporting the machine suspended (default: right after; a host crash in between costs the snapshot, and the next start cold-starts)")
	f.IntVar(&cfg.SuspendMemoryLimitMB, "suspend-memory-limit-mb", 2048, "largest guest memory_mb that may be suspended")
	f.StringVar(&cfg.NetworkRange, "network-range", "10.213.0.0/16", "private range for machine addresses (empty: machines get loopback only)")
	f.StringVar(&cfg.Proxy.ListenHost, "proxy-host", "127.0.0.1", "address the proxy publishes machines' service ports on")
	f.BoolVar(&cfg.NoProxy, "no-proxy", false, "run without the proxy")
	f.DurationVar(&cfg.Proxy.IdleTimeout, "proxy-idle-timeout", 5*time.Minute, "how long a machine must be idle before autostop stops or suspends it")
	f.DurationVar(&cfg.Proxy.CheckInterval, "proxy-check-interval", 15*time.Second, "how often the proxy looks for idle machines")
	f.DurationVar(&cfg.Proxy.WakeTimeout, "proxy-wake-timeout", 30*time.Second, "how long a request waits for a machine to wake before a 503")
	f.BoolVar(&cfg.Pprof, "pprof", false, "serve Go's runtime profiles at /debug/pprof/ on the admin socket (for diagnosis)")
	f.BoolVar(&debug, "debug", false, "log at debug level")
	return cmd
}
