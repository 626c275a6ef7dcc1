package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/torpor-dev/torpor/internal/fence"
	"github.com/torpor-dev/torpor/internal/hostlock"
	"github.com/torpor-dev/torpor/internal/runtime/gvisor"
)

// newFenceWatchCmd is the hidden `torpor fence-watch`: the fencing watchdog
// a cluster daemon starts (package fence), never run by hand.
func newFenceWatchCmd() *cobra.Command {
	var dataDir, runsc, lock string
	var pid int
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:    fence.Subcommand,
		Short:  "The fencing watchdog a cluster daemon starts (internal)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataDir == "" || runsc == "" || lock == "" || pid <= 0 || ttl <= 0 {
				return fmt.Errorf("%s needs --data-dir, --runsc, --lock, --daemon-pid and --lease-ttl", fence.Subcommand)
			}
			signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGPIPE)
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
			defer stop()
			root := filepath.Join(dataDir, "runsc")
			in := os.NewFile(3, "daemon pipe")
			fmt.Fprintf(os.Stderr, "%s watching daemon pid %d of %s (lease TTL %s, fence after %s)\n",
				time.Now().UTC().Format(time.RFC3339Nano), pid, dataDir, ttl, ttl-fence.Margin(ttl))
			return fence.Watch(ctx, fence.Config{
				DataDir: dataDir, TTL: ttl, In: in, Log: os.Stderr,
				LockHeld: func() bool { return hostlock.HeldByOther(lock, pid) },
				List:     func(ctx context.Context) ([]string, error) { return gvisor.Sandboxes(ctx, runsc, root) },
				Freeze:   func(ctx context.Context, id string) error { return gvisor.Freeze(ctx, runsc, root, id) },
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "", "the daemon's data directory")
	f.StringVar(&runsc, "runsc", "", "path of the runsc binary")
	f.StringVar(&lock, "lock", "", "the data directory's lock file")
	f.IntVar(&pid, "daemon-pid", 0, "the daemon's pid")
	f.DurationVar(&ttl, "lease-ttl", 0, "the daemon's cluster lease TTL")
	return cmd
}
