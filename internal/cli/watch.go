package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/torpor-dev/torpor/internal/client"
)

// watchList lists the app's machines every interval until the command's
// context ends (Ctrl-C). On a terminal it redraws the screen with the
// time of the listing; elsewhere it prints the table (or, with --json, one
// JSON array per line) only when it changed, each time under a line with
// the time. A failed listing is shown and the watch goes on.
func (mc *machineCmds) watchList(cmd *cobra.Command, c *client.Client, app string, interval time.Duration) error {
	out := cmd.OutOrStdout()
	tty := !mc.g.json && isTerminal(out)
	last := ""
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		list, err := c.ListMachines(cmd.Context(), app)
		if cmd.Context().Err() != nil {
			return nil
		}
		var buf bytes.Buffer
		switch {
		case err != nil:
			fmt.Fprintf(&buf, "listing the machines failed: %v\n", err)
		case mc.g.json:
			data, _ := json.Marshal(nonNil(list))
			buf.Write(append(data, '\n'))
		case len(list) == 0:
			fmt.Fprintf(&buf, "No machines in app %s\n", app)
		default:
			writeMachineTable(&buf, list, tty)
		}
		now := time.Now().Format("15:04:05")
		switch {
		case tty:
			fmt.Fprintf(out, "\033[H\033[2J%s  every %s, machines of app %s (Ctrl-C ends)\n\n%s", now, interval, app, buf.String())
		case buf.String() != last && mc.g.json:
			out.Write(buf.Bytes())
		case buf.String() != last:
			fmt.Fprintf(out, "--- %s\n%s", now, buf.String())
		}
		last = buf.String()
		select {
		case <-cmd.Context().Done():
			return nil
		case <-tick.C:
		}
	}
}
