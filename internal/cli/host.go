package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/torpor-dev/torpor/internal/cluster"
)

// newHostCmd is `torpor host`: the hosts of a cluster (docs/cluster.md).
func newHostCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "host",
		Aliases: []string{"hosts"},
		Short:   "List, cordon and drain the hosts of a cluster (admin only)",
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the hosts of the cluster, their capacity and what their machines reserve",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			hosts, err := c.ListHosts(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd, nonNil(hosts))
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATUS\tCORDONED\tMACHINES\tCPUS\tMEMORY MB\tADVERTISE\tRUNTIME")
			for _, h := range hosts {
				fmt.Fprintf(tw, "%s\t%s\t%v\t%d\t%d/%d\t%d/%d\t%s\t%s\n", h.ID, h.Status, h.Cordoned, h.Machines,
					h.ReservedCPUs, h.CPUs, h.ReservedMemoryMB, h.MemoryMB, h.Advertise, truncate(h.RuntimeVersion, 24))
			}
			return tw.Flush()
		},
	}
	cordon := func(use string, on bool, short string) *cobra.Command {
		return &cobra.Command{
			Use:   use + " HOST",
			Short: short,
			Args:  exactlyOne("host ID"),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := g.client()
				if err != nil {
					return err
				}
				if err := c.CordonHost(cmd.Context(), args[0], on); err != nil {
					return err
				}
				say(cmd, "Host %s %sed\n", args[0], use)
				return nil
			},
		}
	}
	drain := &cobra.Command{
		Use:   "drain HOST",
		Short: "Cordon a host and move every machine off it (suspended ones keep their memory)",
		Long: `Drain cordons HOST and moves each of its machines to another host with room:
a suspended machine moves with its snapshot and resumes there where it left off;
a started one is suspended, moved and resumed (or, if it cannot be suspended,
stopped, moved and started). A host that is down is drained from the snapshot
store (--snapshot-store); without one, its suspended machines cold-start on
their next start, and the event says why.`,
		Args: exactlyOne("host ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			r, err := c.DrainHost(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd, r)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MACHINE\tAPP\tTO\tSTATE\tSNAPSHOT\tNOTE")
			for _, m := range r.Moves {
				note := m.Reason
				if m.Error != "" {
					note = "error: " + m.Error
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Machine, m.App, dash(m.To), dash(string(m.State)), dash(m.Snapshot), note)
			}
			return tw.Flush()
		},
	}
	cmd.AddCommand(list, cordon("cordon", true, "Give a host no new machines (it keeps those it has)"),
		cordon("uncordon", false, "Let a host take new machines again"), drain)
	return cmd
}

// newClusterCmd is `torpor cluster`: setting a cluster up.
func newClusterCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Set up a torpor cluster (see docs/cluster.md)"}
	var dir string
	certs := &cobra.Command{
		Use:   "certs --dir DIR HOST...",
		Short: "Make the cluster CA (once) and a certificate for each host",
		Long: `Make the cluster's CA in DIR (ca.crt, ca.key; kept if they exist) and, for each
HOST, DIR/HOST/ with ca.crt, host.crt and host.key: copy that directory to the host
and give it to torpor serve --cluster-tls. Keep ca.key off the hosts.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, hosts []string) error {
			if dir == "" {
				return fmt.Errorf("--dir is required")
			}
			if err := cluster.IssueCerts(dir, hosts...); err != nil {
				return err
			}
			say(cmd, "Issued certificates for %v in %s\n", hosts, dir)
			return nil
		},
	}
	certs.Flags().StringVar(&dir, "dir", "", "directory of the cluster CA and the hosts' files")
	cmd.AddCommand(certs)
	return cmd
}
