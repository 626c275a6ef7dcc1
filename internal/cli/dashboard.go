package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newDashboardCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "dashboard",
		Short: "Print a one-time link to the web dashboard (on the daemon's host)",
		Long: `Ask the daemon, over its local admin socket, to serve the web dashboard on a
loopback port, and print a one-time link that logs a browser on this host in
as the admin. The link works once and expires after a few minutes; the port
stays open until the daemon stops. From another host, log in at
http://HOST:PORT/ui/ of "torpor serve --listen" with a token instead
(see docs/dashboard.md).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !strings.HasPrefix(g.apiAddr(), "unix://") && !strings.HasPrefix(g.apiAddr(), "/") {
				return fmt.Errorf("torpor dashboard talks to the daemon's local admin socket, not %s: run it on the daemon's host (or log in at /ui/ of the TCP listener with a token)", g.apiAddr())
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			link, err := c.DashboardLink(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd, link)
			}
			say(cmd, "Open this link in a browser on this host (it works once, until %s):\n\n  %s\n",
				link.ExpiresAt.Local().Format(time.Kitchen), link.URL)
			return nil
		},
	}
}
