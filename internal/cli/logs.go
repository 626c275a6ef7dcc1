package cli

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/logs"
)

// logPage is how many records a non-following read asks for at a time.
const logPage = 1000

func (mc *machineCmds) logsCmd() *cobra.Command {
	var follow bool
	var since string
	var fromSeq uint64
	cmd := &cobra.Command{
		Use:   "logs ID",
		Short: "Show a machine's console output (stdout and stderr), kept across suspend, resume and restarts",
		Args:  exactlyOne("machine ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, app, err := mc.target()
			if err != nil {
				return err
			}
			q := client.LogQuery{FromSeq: fromSeq, Follow: follow}
			if since != "" {
				if q.Since, err = logs.ParseSince(since, time.Now()); err != nil {
					return fmt.Errorf("--%w", err)
				}
			}
			print := mc.logPrinter(cmd)
			if follow {
				return c.Logs(cmd.Context(), app, args[0], q, print)
			}
			return readAllLogs(cmd, c, app, args[0], q, print)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new lines as they arrive")
	f.StringVar(&since, "since", "", "only lines from this time on: RFC 3339 or a duration back from now (5m)")
	f.Uint64Var(&fromSeq, "from-seq", 0, "start at this sequence number")
	return cmd
}

// readAllLogs reads the log page by page until it is exhausted.
func readAllLogs(cmd *cobra.Command, c *client.Client, app, id string, q client.LogQuery, fn func(logs.Record) error) error {
	q.Limit = logPage
	for {
		n := 0
		err := c.Logs(cmd.Context(), app, id, q, func(r logs.Record) error {
			n++
			q.FromSeq, q.Since = r.Seq+1, time.Time{}
			return fn(r)
		})
		if err != nil || n < logPage {
			return err
		}
	}
}

// logPrinter prints records as the machine wrote them, or as JSON lines;
// lines lost to rotation are reported on stderr.
func (mc *machineCmds) logPrinter(cmd *cobra.Command) func(logs.Record) error {
	enc := json.NewEncoder(cmd.OutOrStdout())
	return func(r logs.Record) error {
		if r.Dropped > 0 {
			fmt.Fprintf(cmd.ErrOrStderr(), "(%d earlier lines are no longer kept)\n", r.Dropped)
		}
		if mc.g.json {
			return enc.Encode(r)
		}
		end := "\n"
		if r.Partial {
			end = ""
		}
		_, err := fmt.Fprint(cmd.OutOrStdout(), r.Line+end)
		return err
	}
}
