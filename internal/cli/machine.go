package cli

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/model"
)

// machineCmds holds what every machine command shares.
type machineCmds struct {
	g   *globals
	app string
}

func newMachineCmd(g *globals) *cobra.Command {
	mc := &machineCmds{g: g}
	cmd := &cobra.Command{
		Use:     "machine",
		Aliases: []string{"machines", "m"},
		Short:   "Manage machines",
	}
	cmd.PersistentFlags().StringVarP(&mc.app, "app", "a", "", "app of the machine (env TORPOR_APP)")
	cmd.AddCommand(
		mc.createCmd(), mc.listCmd(), mc.statusCmd(), mc.startCmd(), mc.stopCmd(),
		mc.suspendCmd(), mc.destroyCmd(), mc.waitCmd(), mc.eventsCmd(), mc.logsCmd(), mc.updateCmd(),
		mc.cordonCmd(true), mc.cordonCmd(false),
	)
	return cmd
}

// target returns the client and the app the command works on.
func (mc *machineCmds) target() (*client.Client, string, error) {
	app := firstSet(mc.app, os.Getenv("TORPOR_APP"))
	if app == "" {
		return nil, "", fmt.Errorf("no app given: use --app NAME or set TORPOR_APP")
	}
	c, err := mc.g.client()
	return c, app, err
}

func (mc *machineCmds) listCmd() *cobra.Command {
	var watch bool
	var interval time.Duration
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List an app's machines",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, app, err := mc.target()
			if err != nil {
				return err
			}
			if watch {
				if interval < 100*time.Millisecond {
					return fmt.Errorf("invalid --interval %s: must be at least 100ms", interval)
				}
				return mc.watchList(cmd, c, app, interval)
			}
			list, err := c.ListMachines(cmd.Context(), app)
			if err != nil {
				return err
			}
			if mc.g.json {
				return printJSON(cmd, nonNil(list))
			}
			if len(list) == 0 {
				say(cmd, "No machines in app %s\n", app)
				return nil
			}
			return writeMachines(cmd, list)
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "keep listing: redraw the table on a terminal, else print it again whenever it changes (Ctrl-C ends)")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "how often --watch lists the machines")
	return cmd
}

func (mc *machineCmds) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "status ID",
		Aliases: []string{"show"},
		Short:   "Show a machine's state, config and recent events",
		Args:    exactlyOne("machine ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, app, err := mc.target()
			if err != nil {
				return err
			}
			m, err := c.GetMachine(cmd.Context(), app, args[0])
			if err != nil {
				return err
			}
			if mc.g.json {
				return printJSON(cmd, m)
			}
			// All events: the last resume may be older than the few the
			// machine's record carries.
			events, err := c.Events(cmd.Context(), app, m.ID)
			if err != nil {
				events = m.Events // best effort: status is shown anyway
			}
			return writeStatus(cmd, m, events)
		},
	}
}

func (mc *machineCmds) startCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "start ID",
		Short: "Start a machine, resuming its snapshot if it is suspended",
		Args:  exactlyOne("machine ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, app, err := mc.target()
			if err != nil {
				return err
			}
			began := time.Now()
			var resp model.StartResponse
			err = mc.g.withProgress(cmd, "Starting machine "+args[0], func() (err error) {
				resp, err = c.Start(cmd.Context(), app, args[0])
				return err
			})
			if err != nil {
				return err
			}
			took := time.Since(began)
			if mc.g.json {
				return printJSON(cmd, resp)
			}
			say(cmd, "%s\n", startSummary(args[0], resp, took))
			return nil
		},
	}
}

// startSummary says how a machine started and how long the call took.
func startSummary(id string, resp model.StartResponse, took time.Duration) string {
	tookText := formatDuration(took)
	was := ""
	if resp.PreviousState != "" {
		was = fmt.Sprintf(" (was %s)", resp.PreviousState)
	}
	if resp.FromSnapshot {
		return fmt.Sprintf("Machine %s resumed from snapshot%s in %s", id, was, tookText)
	}
	if resp.PreviousState == model.StateSuspended {
		return fmt.Sprintf("Machine %s cold-started%s in %s: its snapshot could not be used (see `torpor machine events %s`)", id, was, tookText, id)
	}
	return fmt.Sprintf("Machine %s cold-started%s in %s", id, was, tookText)
}

// formatDuration renders a call's duration: "183ms", "1.25s", "<1ms".
func formatDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return "<1ms"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(10 * time.Millisecond).String()
}

func (mc *machineCmds) stopCmd() *cobra.Command {
	var req model.StopRequest
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "stop ID",
		Short: "Stop a machine (a suspended machine's snapshot is discarded)",
		Args:  exactlyOne("machine ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout < 0 {
				return fmt.Errorf("invalid --timeout %s: must not be negative", timeout)
			}
			req.Timeout = model.Duration{Duration: timeout}
			return mc.operate(cmd, args[0], "stop", func(ctx context.Context, c *client.Client, app string) error {
				return c.Stop(ctx, app, args[0], req)
			})
		},
	}
	cmd.Flags().StringVar(&req.Signal, "signal", "", "signal to send (default: the machine's stop_config, else SIGINT)")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "grace period before the machine is killed (default: the machine's stop_config)")
	return cmd
}

func (mc *machineCmds) suspendCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "suspend ID",
		Short: "Suspend a started machine to a snapshot",
		Args:  exactlyOne("machine ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return mc.operate(cmd, args[0], "suspend", func(ctx context.Context, c *client.Client, app string) error {
				return c.Suspend(ctx, app, args[0])
			})
		},
	}
}

func (mc *machineCmds) destroyCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "destroy ID",
		Aliases: []string{"rm"},
		Short:   "Destroy a machine",
		Args:    exactlyOne("machine ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return mc.operate(cmd, args[0], "destroy", func(ctx context.Context, c *client.Client, app string) error {
				return c.Destroy(ctx, app, args[0], force)
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "destroy the machine even if it is running")
	return cmd
}

func (mc *machineCmds) cordonCmd(cordoned bool) *cobra.Command {
	name, short := "cordon", "Make the proxy skip a machine"
	if !cordoned {
		name, short = "uncordon", "Let the proxy route to a machine again"
	}
	return &cobra.Command{
		Use:   name + " ID",
		Short: short,
		Args:  exactlyOne("machine ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return mc.operate(cmd, args[0], name, func(ctx context.Context, c *client.Client, app string) error {
				return c.Cordon(ctx, app, args[0], cordoned)
			})
		},
	}
}

// operate runs an operation that answers {"ok": true} and reports it with the
// machine's state afterwards (when the machine can still be read).
func (mc *machineCmds) operate(cmd *cobra.Command, id, op string, call func(context.Context, *client.Client, string) error) error {
	c, app, err := mc.target()
	if err != nil {
		return err
	}
	if err := mc.g.withProgress(cmd, progressText(op, id), func() error { return call(cmd.Context(), c, app) }); err != nil {
		return err
	}
	if mc.g.json {
		return printJSON(cmd, okJSON{OK: true})
	}
	m, err := c.GetMachine(cmd.Context(), app, id)
	if err != nil {
		say(cmd, "Machine %s: %s ok\n", id, op)
		return nil
	}
	say(cmd, "Machine %s: %s ok, state %s\n", id, op, m.State)
	return nil
}

// progressText says what an operation is doing, for its spinner.
func progressText(op, id string) string {
	verbs := map[string]string{"stop": "Stopping", "suspend": "Suspending", "destroy": "Destroying",
		"cordon": "Cordoning", "uncordon": "Uncordoning"}
	if v, ok := verbs[op]; ok {
		return v + " machine " + id
	}
	return op + " machine " + id
}

func (mc *machineCmds) waitCmd() *cobra.Command {
	var states []string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "wait ID",
		Short: "Wait until a machine reaches one of the given states",
		Args:  exactlyOne("machine ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, app, err := mc.target()
			if err != nil {
				return err
			}
			if timeout <= 0 || timeout > maxWait {
				return fmt.Errorf("invalid --timeout %s: must be more than 0 and at most %s", timeout, maxWait)
			}
			want := make([]model.State, len(states))
			for i, s := range states {
				want[i] = model.State(s)
			}
			state, err := c.Wait(cmd.Context(), app, args[0], want, timeout)
			if err != nil {
				return err
			}
			if mc.g.json {
				return printJSON(cmd, waitJSON{OK: true, State: state})
			}
			say(cmd, "Machine %s is %s\n", args[0], state)
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&states, "state", []string{string(model.StateStarted)}, "states to wait for, comma-separated or repeated")
	cmd.Flags().DurationVar(&timeout, "timeout", 60*time.Second, "how long to wait (whole seconds, at most 600s)")
	return cmd
}

// maxWait is the longest wait the API allows.
const maxWait = 600 * time.Second

// waitJSON is the JSON printed by wait, as the API answers it.
type waitJSON struct {
	OK    bool        `json:"ok"`
	State model.State `json:"state"`
}

func (mc *machineCmds) eventsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "events ID",
		Short: "Show a machine's events, oldest first",
		Args:  exactlyOne("machine ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, app, err := mc.target()
			if err != nil {
				return err
			}
			events, err := c.Events(cmd.Context(), app, args[0])
			if err != nil {
				return err
			}
			if mc.g.json {
				return printJSON(cmd, nonNil(events))
			}
			if len(events) == 0 {
				say(cmd, "No events for machine %s\n", args[0])
				return nil
			}
			return writeEvents(cmd, events)
		},
	}
}
