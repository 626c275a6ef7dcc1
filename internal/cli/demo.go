package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/torpor-dev/torpor/internal/demo"
)

func newDemoCmd(g *globals) *cobra.Command {
	cfg := demo.Config{}
	var rootfs, pushTo string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Create a machine, suspend and resume it, and print cold-start vs resume timings",
		Long: `Run the demonstration against a running daemon: create a machine running a small
Python HTTP app that builds in-memory state, suspend and resume it, check that
the state survived, and print timings measured from the API call to the app's
first HTTP 200. The machine and its app are destroyed afterwards.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if cfg.App == "" {
				cfg.App = fmt.Sprintf("demo-%d", os.Getpid())
			}
			if pushTo != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "building an OCI image of %s and pushing it to %s...\n", rootfs, pushTo)
				if cfg.Image, err = demo.PushRootFS(cmd.Context(), rootfs, pushTo); err != nil {
					return err
				}
			}
			return demo.Run(cmd.Context(), c, cfg, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Image, "image", "/var/cache/torpor/rootfs/bookworm-python", "image with python3: an OCI reference (pulled first) or a root filesystem directory")
	f.StringVar(&pushTo, "push-to", "", "build an OCI image of --rootfs, push it to this registry (HOST:PORT, plain HTTP) and run that")
	f.StringVar(&rootfs, "rootfs", "/var/cache/torpor/rootfs/bookworm-python", "root filesystem with python3 for --push-to")
	f.StringVar(&cfg.App, "app", "", "app to create for the demo (default demo-PID)")
	f.IntVar(&cfg.Rounds, "rounds", 5, "suspend/resume rounds")
	f.IntVar(&cfg.TableSize, "table-size", 2000000, "entries of the app's in-memory table")
	f.IntVar(&cfg.WarmupMS, "warmup-ms", 1000, "CPU milliseconds the app spends on start-up work")
	f.IntVar(&cfg.MemoryMB, "memory", 512, "guest memory_mb")
	return cmd
}
