// Command torpor is torpor's single binary: `torpor serve` runs the daemon and
// every other subcommand is a client of its API (package cli).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/torpor-dev/torpor/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.NewRoot(cli.NewServe()).ExecuteContext(ctx)
	stop()
	if err != nil {
		os.Exit(1) // cobra has printed "Error: <message>"
	}
}
