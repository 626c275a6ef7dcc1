package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/torpor-dev/torpor/internal/model"
)

func newAppCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "app",
		Aliases: []string{"apps"},
		Short:   "Manage apps (named groups of machines)",
	}
	cmd.AddCommand(newAppCreateCmd(g), newAppListCmd(g), newAppDestroyCmd(g))
	return cmd
}

func newAppCreateCmd(g *globals) *cobra.Command {
	var org string
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an app",
		Args:  exactlyOne("app name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			app, err := c.CreateApp(cmd.Context(), args[0], org)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd, app)
			}
			say(cmd, "Created app %s\n", app.Name)
			return nil
		},
	}
	cmd.Flags().StringVar(&org, "org", "", "organization slug")
	return cmd
}

func newAppListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List apps",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			apps, err := c.ListApps(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd, appList{TotalApps: len(apps), Apps: nonNil(apps)})
			}
			if len(apps) == 0 {
				say(cmd, "No apps\n")
				return nil
			}
			return writeApps(cmd, apps)
		},
	}
}

// appList is the JSON shape of GET /v1/apps.
type appList struct {
	TotalApps int         `json:"total_apps"`
	Apps      []model.App `json:"apps"`
}

// writeApps prints apps as a table.
func writeApps(cmd *cobra.Command, apps []model.App) error {
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tORG\tCREATED")
	for _, a := range apps {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", a.Name, dash(a.Org), formatTime(a.CreatedAt))
	}
	return tw.Flush()
}

func newAppDestroyCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "destroy NAME",
		Aliases: []string{"delete", "rm"},
		Short:   "Destroy an app",
		Args:    exactlyOne("app name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := c.DeleteApp(cmd.Context(), args[0]); err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd, okJSON{OK: true})
			}
			say(cmd, "Destroyed app %s\n", args[0])
			return nil
		},
	}
}
