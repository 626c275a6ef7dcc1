package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/spf13/cobra"

	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/logs"
)

// logPage is how many records a non-following read asks for at a time.
const logPage = 1000

func (mc *machineCmds) logsCmd() *cobra.Command {
	var follow, raw bool
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
			print := mc.logPrinter(cmd, raw || !isTerminal(cmd.OutOrStdout()))
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
	f.BoolVar(&raw, "raw", false, "write the machine's bytes as they are, terminal control sequences included, even to a terminal (they are shown escaped there by default)")
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

// logPrinter prints records as the machine wrote them (raw) or with their
// control characters escaped (see displaySafe), or as JSON lines; lines lost
// to rotation are reported on stderr.
func (mc *machineCmds) logPrinter(cmd *cobra.Command, raw bool) func(logs.Record) error {
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
		line := r.Line
		if !raw {
			line = displaySafe(line)
		}
		_, err := fmt.Fprint(cmd.OutOrStdout(), line+end)
		return err
	}
}

// displaySafe makes a line a machine wrote safe to show on the operator's
// terminal (issue 17, F15: escape sequences in a machine's output could
// clear the screen, rewrite what the operator sees, retitle the window or,
// on some terminals, answer back as keyboard input). Control characters
// other than tab, DEL, the C1 controls and bytes that are not UTF-8 are
// written as Go escapes (\x1b, \r, \u009b); everything else is kept.
func displaySafe(s string) string {
	safe := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' || c >= 0x7f {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case r == '\r':
			b.WriteString("\\r")
		case r < 0x20 && r != '\t' || r == 0x7f:
			fmt.Fprintf(&b, "\\x%02x", r)
		case r >= 0x80 && r < 0xa0:
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
