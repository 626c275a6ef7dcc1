package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/torpor-dev/torpor/internal/model"
)

func (mc *machineCmds) createCmd() *cobra.Command {
	var cf configFlags
	var name, host string
	cmd := &cobra.Command{
		Use:   "create --image IMAGE [flags] [-- COMMAND ARGS...]",
		Short: "Create a machine (and start it unless --skip-launch)",
		Long: "Create a machine from an OCI image (pulled if the app does not have it yet) or, for the\n" +
			"admin, a root filesystem directory. Arguments after -- become config.init.cmd (without them\n" +
			"the image's own command runs). --config reads a machine config from a JSON file; flags override it.",
		Example: "  torpor machine create --app web --image registry.example.com/team/app:v42 --memory 256 -e PORT=8080\n" +
			"  torpor machine create --app web --image ./rootfs -- python3 -m http.server 8080",
		RunE: func(cmd *cobra.Command, args []string) error {
			c, app, err := mc.target()
			if err != nil {
				return err
			}
			cfg, err := cf.build(cmd, model.MachineConfig{}, args)
			if err != nil {
				return err
			}
			if cfg.Image == "" {
				return fmt.Errorf("no image given: use --image or set image in --config")
			}
			req := model.CreateMachineRequest{Name: name, Config: cfg, SkipLaunch: cf.skipLaunch, Host: host}
			what := "Creating and starting a machine in app " + app
			if cf.skipLaunch {
				what = "Creating a machine in app " + app
			}
			var m model.Machine
			err = mc.g.withProgress(cmd, what, func() (err error) {
				m, err = c.CreateMachine(cmd.Context(), app, req)
				return err
			})
			if err != nil {
				return err
			}
			warn(cmd, m.Warnings)
			if mc.g.json {
				return printJSON(cmd, m)
			}
			say(cmd, "Created machine %s (%s) in app %s, state %s\n", m.ID, dash(m.Name), m.App, m.State)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "machine name (default: chosen by the daemon)")
	cmd.Flags().StringVar(&host, "host", "", "in a cluster, the host to create the machine on (default: placed on a host with room)")
	cf.add(cmd)
	return cmd
}

func (mc *machineCmds) updateCmd() *cobra.Command {
	var cf configFlags
	cmd := &cobra.Command{
		Use:   "update ID [flags] [-- COMMAND ARGS...]",
		Short: "Change a machine's config (the machine restarts unless --skip-launch)",
		Long: "Update reads the machine's config, applies --config (which replaces it), then the\n" +
			"other flags, and sends the result. Arguments after -- replace config.init.cmd.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, command := args[0], args[1:]
			if !cf.changed(cmd, command) {
				return fmt.Errorf("nothing to update: give --image, --memory, --cpus, --env, --volume, --config or a command after --")
			}
			c, app, err := mc.target()
			if err != nil {
				return err
			}
			m, err := c.GetMachine(cmd.Context(), app, id)
			if err != nil {
				return err
			}
			cfg, err := cf.build(cmd, m.Config, command)
			if err != nil {
				return err
			}
			req := model.UpdateMachineRequest{Config: cfg, SkipLaunch: cf.skipLaunch}
			err = mc.g.withProgress(cmd, "Updating machine "+id, func() (err error) {
				m, err = c.UpdateMachine(cmd.Context(), app, id, req)
				return err
			})
			if err != nil {
				return err
			}
			warn(cmd, m.Warnings)
			if mc.g.json {
				return printJSON(cmd, m)
			}
			say(cmd, "Updated machine %s, state %s\n", m.ID, m.State)
			return nil
		},
	}
	cf.add(cmd)
	return cmd
}
