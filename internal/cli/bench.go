package cli

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/torpor-dev/torpor/internal/bench"
)

// benchInits are the init costs --init can name.
var benchInits = map[string]bench.Init{
	"light": {Name: "light", Target: "~0.1 s"},
	"heavy": {Name: "heavy"},
}

func newBenchCmd(g *globals) *cobra.Command {
	cfg := bench.Config{}
	var inits []string
	var heavyInit time.Duration
	var quick bool
	var from string
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure cold start vs suspend and resume on the real runtime",
		Long: `Measure, on the real runtime, a Python HTTP app's cold start to its first HTTP
byte, its suspend (time and snapshot size on disk) and its resume to the first
byte, for apps with a light (~0.1 s) or heavy (~2 s) init and 64, 256 or
1024 MiB resident. Each metric is reported as p50 / p95 over --runs runs, with
the cold/resume ratio and the resume's own breakdown, as a Markdown table on
stdout and, under --out, <UTC time>.md, latest.md, the raw samples as JSON and
a chart, latest.png.

By default it runs its own daemon in-process (root, runsc, a network range not
used by another daemon) in a temporary directory; with --socket it drives a
running daemon instead. Everything it creates is removed when it ends. It takes
several minutes for the whole matrix; --quick measures one small scenario twice.

Given a root filesystem directory as --image, the in-process benchmark starts a
local registry (docker-registry), pushes an OCI image of the directory, runs the
matrix from that image, and then measures the image itself: pull + unpack and
cold start fresh and cached, against the directory, and resume of both.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Out, cfg.Progress = cmd.OutOrStdout(), cmd.ErrOrStderr()
			if from != "" {
				return bench.Rerender(cfg, from)
			}
			if quick {
				inits, cfg.ResidentMB, cfg.Runs, cfg.ImageRuns, cfg.MemoryProbeMiB = []string{"light"}, []int{64}, 2, 1, 0
			}
			var err error
			if cfg.Inits, err = parseInits(inits, heavyInit); err != nil {
				return err
			}
			if cfg.API != "" {
				cfg.Token = firstSet(g.token, os.Getenv("TORPOR_TOKEN"))
			}
			if cfg.App == "" {
				cfg.App = fmt.Sprintf("bench-%d", os.Getpid())
			}
			// A reader that goes away (torpor bench | head) must not kill
			// the benchmark before it removes its machines and daemon: with
			// SIGPIPE caught, the write fails instead, and the benchmark
			// stops and cleans up as on Ctrl-C.
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGPIPE)
			defer stop()
			_, err = bench.Run(ctx, cfg)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.API, "socket", "", "drive the daemon at this API address (a Unix socket path or an --api address) instead of running one in-process")
	f.StringVar(&cfg.DataDir, "data-dir", "", "with --socket: that daemon's data dir, to measure snapshot files (default: the size its suspend event reports)")
	f.StringVar(&cfg.RunscPath, "runsc", filepath.Join("/var/cache/torpor/bin", "runsc"), "path of the runsc binary (in-process daemon; its version is reported)")
	f.StringVar(&cfg.NetworkRange, "network-range", "10.212.0.0/16", "private range for the in-process daemon's machines (keep it apart from other daemons')")
	f.StringVar(&cfg.Image, "image", "/var/cache/torpor/rootfs/bookworm-python", "image with python3: a root filesystem directory (the in-process benchmark pushes an OCI image of it to a local registry and runs that) or an OCI reference")
	f.IntVar(&cfg.ImageRuns, "image-runs", 5, "rounds of the image benchmark (pull and cold start, fresh and cached, vs the directory; resume of both); 0 skips it")
	f.StringVar(&cfg.App, "app", "", "app to create for the benchmark (default bench-PID)")
	f.StringSliceVar(&inits, "init", []string{"light", "heavy"}, "init costs to measure: light (~0.1 s), heavy (~2 s)")
	f.DurationVar(&heavyInit, "heavy-init", 2*time.Second, "how long the heavy app's init (imports, loading and indexing data) runs")
	f.IntSliceVar(&cfg.ResidentMB, "memory", []int{64, 256, 1024}, "resident memory sizes to measure, MiB")
	f.IntVar(&cfg.GuestSlackMB, "guest-slack", 256, "guest.memory_mb is the resident size plus this")
	f.IntVar(&cfg.CPUs, "cpus", 1, "guest.cpus of the machines")
	f.IntVar(&cfg.Runs, "runs", 10, "runs per scenario")
	f.DurationVar(&cfg.PollInterval, "poll-interval", bench.DefaultPollInterval, "how often to retry the app until it answers")
	f.BoolVar(&cfg.Raw, "raw", true, "in each run, also restore the snapshot with runsc alone (needs the data dir and runsc): torpor's own share of a resume")
	f.BoolVar(&cfg.Warm, "warm", true, "in each run, also resume the machine into a sandbox created ahead (the in-process daemon's warm sandboxes, off for the plain resume): what --warm-sandboxes-memory buys")
	f.BoolVar(&cfg.ProxyWake, "proxy-wake", true, "in each run, also wake the machine by a request through the daemon's proxy (127.0.0.1; with --socket the daemon must run its proxy)")
	f.BoolVar(&cfg.KeepHugePagePolicies, "keep-huge-page-policies", false, "run the in-process daemon with --host-huge-pages=false (the host's huge page policies left as they are; the report's header says whether runsc then uses huge pages)")
	f.BoolVar(&cfg.NoPagesReuse, "no-pages-reuse", false, "run the in-process daemon with --no-pages-reuse (each suspend writes a new pages file)")
	f.BoolVar(&cfg.ClockGate, "clock-gate", false, "run the in-process daemon with --clock-gate (each resume reads the machine's clock before the app continues)")
	f.BoolVar(&cfg.SyncSnapshots, "sync-snapshots", false, "run the in-process daemon with --sync-snapshots (each snapshot flushed to disk before the suspend returns)")
	f.IntVar(&cfg.MemoryProbeMiB, "memory-probe", 4096, "before the scenarios, time the first touch of up to this much fresh memory, MiB (0 skips it): the host's ceiling for writing and loading snapshots")
	f.StringVar(&cfg.OutDir, "out", filepath.Join("bench", "results"), "directory for the result files (empty: print only)")
	f.StringVar(&from, "from", "", "measure nothing: print the report of a saved result (a .json under --out) and write its files again")
	f.BoolVar(&quick, "quick", false, "measure one scenario (light, 64 MiB) twice: proves the benchmark works, measures little")
	return cmd
}

// parseInits maps --init names to init costs.
func parseInits(names []string, heavyInit time.Duration) ([]bench.Init, error) {
	if heavyInit < 100*time.Millisecond {
		return nil, fmt.Errorf("--heavy-init must be at least 100ms, got %s", heavyInit)
	}
	var out []bench.Init
	for _, n := range names {
		in, ok := benchInits[strings.TrimSpace(n)]
		if !ok {
			return nil, fmt.Errorf("--init: unknown init cost %q (want light or heavy)", n)
		}
		if in.Name == "heavy" {
			in.Seconds = heavyInit.Seconds()
			in.Target = fmt.Sprintf("~%g s", in.Seconds)
		}
		out = append(out, in)
	}
	return out, nil
}
