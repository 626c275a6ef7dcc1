package cli

import (
	"fmt"
	"os"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/model"
)

// volumeCmds holds what every volume command shares.
type volumeCmds struct {
	g   *globals
	app string
}

func newVolumeCmd(g *globals) *cobra.Command {
	vc := &volumeCmds{g: g}
	cmd := &cobra.Command{
		Use:     "volume",
		Aliases: []string{"volumes", "vol"},
		Short:   "Manage volumes (persistent storage a machine mounts)",
		Long: "A volume is an ext4 filesystem of a fixed size, kept in the daemon's data directory; a machine\n" +
			"mounts it with config.mounts (torpor machine create --volume ID:/path). See docs/volumes.md.",
	}
	cmd.PersistentFlags().StringVarP(&vc.app, "app", "a", "", "app of the volume (env TORPOR_APP)")
	cmd.AddCommand(vc.createCmd(), vc.listCmd(), vc.showCmd(), vc.extendCmd(), vc.destroyCmd())
	return cmd
}

func (vc *volumeCmds) target() (*client.Client, string, error) {
	app := firstSet(vc.app, os.Getenv("TORPOR_APP"))
	if app == "" {
		return nil, "", fmt.Errorf("no app given: use --app NAME or set TORPOR_APP")
	}
	c, err := vc.g.client()
	return c, app, err
}

func (vc *volumeCmds) createCmd() *cobra.Command {
	var size int
	var fork string
	cmd := &cobra.Command{
		Use:     "create NAME",
		Short:   "Create a volume",
		Args:    exactlyOne("volume name"),
		Example: "  torpor volume create pg_data --app db --size 10",
		RunE: func(cmd *cobra.Command, args []string) error {
			c, app, err := vc.target()
			if err != nil {
				return err
			}
			req := model.CreateVolumeRequest{Name: args[0], SourceVolumeID: fork}
			if cmd.Flags().Changed("size") {
				req.SizeGB = &size
			}
			v, err := c.CreateVolume(cmd.Context(), app, req)
			if err != nil {
				return err
			}
			if vc.g.json {
				return printJSON(cmd, v)
			}
			say(cmd, "Created volume %s (%s, %d GB) in app %s\n", v.ID, v.Name, v.SizeGB, app)
			return nil
		},
	}
	cmd.Flags().IntVarP(&size, "size", "s", 1, "size in GB")
	cmd.Flags().StringVar(&fork, "fork", "", "ID of a volume of the app to copy")
	return cmd
}

func (vc *volumeCmds) listCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List an app's volumes",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, app, err := vc.target()
			if err != nil {
				return err
			}
			list, err := c.ListVolumes(cmd.Context(), app)
			if err != nil {
				return err
			}
			if vc.g.json {
				return printJSON(cmd, nonNil(list))
			}
			if len(list) == 0 {
				say(cmd, "No volumes in app %s\n", app)
				return nil
			}
			return writeVolumes(cmd, list)
		},
	}
}

func (vc *volumeCmds) showCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "show ID",
		Aliases: []string{"status"},
		Short:   "Show a volume, its usage and the machine it is attached to",
		Args:    exactlyOne("volume ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, app, err := vc.target()
			if err != nil {
				return err
			}
			v, err := c.GetVolume(cmd.Context(), app, args[0])
			if err != nil {
				return err
			}
			if vc.g.json {
				return printJSON(cmd, v)
			}
			return writeVolume(cmd, v)
		},
	}
}

func (vc *volumeCmds) extendCmd() *cobra.Command {
	var size int
	cmd := &cobra.Command{
		Use:   "extend ID --size GB",
		Short: "Grow a volume (volumes never shrink)",
		Args:  exactlyOne("volume ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("size") {
				return fmt.Errorf("give the new size with --size GB")
			}
			c, app, err := vc.target()
			if err != nil {
				return err
			}
			resp, err := c.ExtendVolume(cmd.Context(), app, args[0], size)
			if err != nil {
				return err
			}
			if vc.g.json {
				return printJSON(cmd, resp)
			}
			say(cmd, "Extended volume %s to %d GB\n", resp.Volume.ID, resp.Volume.SizeGB)
			if resp.NeedsRestart {
				say(cmd, "Its filesystem grows when machine %s next starts or resumes (it is at %d GB until then)\n",
					dash(deref(resp.Volume.AttachedMachineID)), resp.Volume.FSSizeGB)
			}
			return nil
		},
	}
	cmd.Flags().IntVarP(&size, "size", "s", 0, "new size in GB")
	return cmd
}

func (vc *volumeCmds) destroyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "destroy ID",
		Short: "Destroy a volume and its data (refused while a machine is attached)",
		Args:  exactlyOne("volume ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, app, err := vc.target()
			if err != nil {
				return err
			}
			v, err := c.DestroyVolume(cmd.Context(), app, args[0])
			if err != nil {
				return err
			}
			if vc.g.json {
				return printJSON(cmd, v)
			}
			say(cmd, "Destroyed volume %s (%s)\n", v.ID, v.Name)
			return nil
		},
	}
}

// writeVolumes prints volumes as a table.
func writeVolumes(cmd *cobra.Command, vs []model.Volume) error {
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSTATE\tSIZE\tUSED\tATTACHED TO\tSTATUS\tCREATED")
	for _, v := range vs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d GB\t%s\t%s\t%s\t%s\n", v.ID, v.Name, v.State, v.SizeGB, used(v),
			dash(deref(v.AttachedMachineID)), dash(v.HostStatus), formatTime(v.CreatedAt))
	}
	return tw.Flush()
}

// writeVolume prints one volume.
func writeVolume(cmd *cobra.Command, v model.Volume) error {
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	row := func(k, val string) { fmt.Fprintf(tw, "%s:\t%s\n", k, val) }
	row("ID", v.ID)
	row("Name", v.Name)
	row("App", v.App)
	row("State", string(v.State))
	size := strconv.Itoa(v.SizeGB) + " GB"
	if v.FSSizeGB < v.SizeGB {
		size += fmt.Sprintf(" (filesystem at %d GB until its machine restarts)", v.FSSizeGB)
	}
	row("Size", size)
	row("Used", used(v))
	row("Filesystem", v.FSType)
	row("Region / zone", v.Region+" / "+v.Zone)
	row("Attached to", dash(deref(v.AttachedMachineID)))
	row("Host status", dash(v.HostStatus))
	if v.Error != "" {
		row("Error", v.Error)
	}
	row("Encrypted", strconv.FormatBool(v.Encrypted))
	row("Created", formatTime(v.CreatedAt))
	return tw.Flush()
}

// used renders a volume's usage, "-" when it is not mounted.
func used(v model.Volume) string {
	if v.Blocks == 0 || v.BlockSize == 0 {
		return "-"
	}
	total := float64(v.Blocks) * float64(v.BlockSize)
	usedBytes := float64(v.Blocks-v.BlocksFree) * float64(v.BlockSize)
	return fmt.Sprintf("%.1f%% of %.1f GiB", 100*usedBytes/total, total/float64(1<<30))
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
