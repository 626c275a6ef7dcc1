package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/torpor-dev/torpor/internal/appconfig"
	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/deploy"
	"github.com/torpor-dev/torpor/internal/identifiers"
	"github.com/torpor-dev/torpor/internal/model"
)

// The app workflow (docs/deploy.md): launch, deploy, status, scale and
// config, around a fly.toml.

// appFile is the flags every app command shares: the fly.toml and the app.
type appFile struct {
	path string
	app  string
}

func (f *appFile) flags(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.path, "config", "c", "fly.toml", "the app's fly.toml")
	cmd.Flags().StringVarP(&f.app, "app", "a", "", "the app (default: fly.toml's app)")
}

// load parses the fly.toml, printing its warnings.
func (f *appFile) load(cmd *cobra.Command) (*appconfig.App, error) {
	doc, err := os.ReadFile(f.path)
	if err != nil {
		return nil, err
	}
	a, warns, err := appconfig.Parse(doc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.path, err)
	}
	for _, w := range warns {
		fmt.Fprintf(cmd.ErrOrStderr(), "Warning: %s\n", strings.Replace(w.String(), "fly.toml", f.path, 1))
	}
	return a, nil
}

// appName is --app, else fly.toml's app.
func (f *appFile) appName(cmd *cobra.Command) (string, error) {
	if f.app != "" {
		return f.app, nil
	}
	a, err := f.load(cmd)
	if err != nil {
		return "", fmt.Errorf("no --app given and %w", err)
	}
	if a.Name == "" {
		return "", fmt.Errorf("no --app given and %s has no app", f.path)
	}
	return a.Name, nil
}

func newLaunchCmd(g *globals) *cobra.Command {
	var f appFile
	var image string
	var internalPort, port int
	var force bool
	cmd := &cobra.Command{
		Use:   "launch --image REF [--app NAME]",
		Short: "Create an app and write a starter fly.toml for it",
		Long: "launch creates the app (named after the image unless --app says) if it does not exist, and writes a fly.toml\n" +
			"that runs the image behind the proxy,\n" +
			"with its machines suspended when idle. Edit it, then run `torpor deploy`.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if image == "" {
				return errors.New("--image is required")
			}
			name := firstSet(f.app, appNameFromImage(image))
			if !identifiers.IsAppName(name) {
				return fmt.Errorf("cannot name the app after the image (%q): give --app NAME (%s)", name, identifiers.NameRule)
			}
			if _, err := os.Stat(f.path); err == nil && !force {
				return fmt.Errorf("%s exists: remove it or give --force to overwrite it", f.path)
			} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			doc, err := appconfig.Starter(name, image, internalPort, port)
			if err != nil {
				return err
			}
			if _, _, err := appconfig.Parse(doc); err != nil {
				return fmt.Errorf("the starter fly.toml for these flags is invalid: %w", err)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			app, err := c.CreateApp(cmd.Context(), name, "")
			var ae *client.APIError
			existed := errors.As(err, &ae) && ae.Status == 409
			if err != nil && !existed {
				return err
			}
			if err := os.WriteFile(f.path, doc, 0o644); err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd, map[string]any{"app": name, "existed": existed, "config": f.path})
			}
			if existed {
				say(cmd, "App %s exists already\n", name)
			} else {
				say(cmd, "Created app %s\n", app.Name)
			}
			say(cmd, "Wrote %s: edit it, then run `torpor deploy -c %s`\n", f.path, f.path)
			return nil
		},
	}
	f.flags(cmd)
	cmd.Flags().StringVar(&image, "image", "", "the image the app runs (an OCI reference)")
	cmd.Flags().IntVar(&internalPort, "internal-port", 8080, "the port the app listens on inside its machines")
	cmd.Flags().IntVar(&port, "port", appconfig.DefaultHTTPPort, "the host port the proxy publishes the app on")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite an existing fly.toml")
	return cmd
}

// appNameFromImage is the image's last path component without its tag or
// digest, lower case: "registry.example.com/team/shop:v1" gives "shop".
func appNameFromImage(image string) string {
	name := image
	if i := strings.IndexByte(name, '@'); i >= 0 {
		name = name[:i]
	}
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	if i := strings.IndexByte(name, ':'); i >= 0 {
		name = name[:i]
	}
	return strings.ToLower(name)
}

func newDeployCmd(g *globals) *cobra.Command {
	var f appFile
	var opts deploy.Options
	cmd := &cobra.Command{
		Use:   "deploy [-c fly.toml] [--image REF] [--strategy rolling|immediate|bluegreen|canary]",
		Short: "Deploy an app from its fly.toml",
		Long: "deploy brings the app's machines, per process group, to the fly.toml's config: it creates the first machine of\n" +
			"each group and updates the others with the strategy, waiting for their checks, and rolls the updated machines\n" +
			"back when one fails. Machines that were suspended (or stopped) are started on the new version, checked and\n" +
			"suspended again (prewarm; --no-prewarm leaves them stopped, as Fly does). See docs/deploy.md.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := f.load(cmd)
			if err != nil {
				return err
			}
			opts.App = f.app
			c, err := g.client()
			if err != nil {
				return err
			}
			out := newDeployOutput(cmd, g.json)
			opts.Progress = out.event
			res, err := deploy.Deploy(cmd.Context(), c, a, opts)
			return g.printResult(cmd, res, err, fmt.Sprintf("Deployed %s release %d (%s, %s)", res.App, res.Release, res.Image, res.Strategy))
		},
	}
	f.flags(cmd)
	cmd.Flags().StringVar(&opts.Image, "image", "", "the image to deploy (default: fly.toml's [build] image)")
	cmd.Flags().StringVar(&opts.Strategy, "strategy", "", "rolling, immediate, bluegreen or canary (default: fly.toml's [deploy] strategy, else rolling)")
	cmd.Flags().BoolVar(&opts.NoPrewarm, "no-prewarm", false, "leave machines that were suspended or stopped stopped on the new version (Fly's behaviour)")
	cmd.Flags().BoolVar(&opts.Wait, "wait", false, "wait for another deploy of the app to finish instead of failing")
	cmd.Flags().DurationVar(&opts.WaitTimeout, "wait-timeout", 0, "how long a machine's checks may take to pass (default: fly.toml's [deploy] wait_timeout, else 5m)")
	return cmd
}

// deployOutput shows a deploy's progress: one live line per machine on a
// terminal, plain lines elsewhere, JSON lines (on stderr, the result going
// to stdout) with --json.
type deployOutput struct {
	w     io.Writer
	json  bool
	tty   bool
	mu    sync.Mutex
	order []string          // machines (or groups, before a machine has an ID), in order
	lines map[string]string // their latest line
	drawn int               // lines drawn so far
}

func newDeployOutput(cmd *cobra.Command, asJSON bool) *deployOutput {
	w := cmd.ErrOrStderr()
	return &deployOutput{w: w, json: asJSON, tty: !asJSON && isTerminal(w), lines: map[string]string{}}
}

func (o *deployOutput) event(e deploy.Event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.json {
		b, _ := json.Marshal(e)
		fmt.Fprintf(o.w, "%s\n", b)
		return
	}
	if !o.tty {
		fmt.Fprintf(o.w, "%s %s\n", e.Time.Format("15:04:05.000"), e.Msg)
		return
	}
	key := e.Machine
	if key == "" {
		key = "group " + e.Group + " " + e.Phase
	}
	if _, ok := o.lines[key]; !ok {
		o.order = append(o.order, key)
	}
	o.lines[key] = e.Msg
	if o.drawn > 0 {
		fmt.Fprintf(o.w, "\033[%dA", o.drawn)
	}
	for _, k := range o.order {
		fmt.Fprintf(o.w, "\r\033[K  %s\n", o.lines[k])
	}
	o.drawn = len(o.order)
}

// printResult prints a deploy's or a scale's result (JSON with --json),
// then done if it succeeded, and returns its error.
func (g *globals) printResult(cmd *cobra.Command, res deploy.Result, err error, done string) error {
	if g.json {
		if perr := printJSON(cmd, res); perr != nil {
			return perr
		}
		return err
	}
	warn(cmd, res.Warnings)
	if len(res.Machines) > 0 {
		writeDeployResult(cmd.OutOrStdout(), res)
	}
	if err != nil {
		return err
	}
	say(cmd, "%s\n", done)
	return nil
}

func writeDeployResult(w io.Writer, res deploy.Result) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MACHINE\tGROUP\tACTION\tVERSION\tCHECKS\tSTATE")
	for _, m := range res.Machines {
		action := m.Action
		if m.Replaced != "" {
			action += " " + m.Replaced
		}
		if m.Prewarmed {
			action += ", prewarmed"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s → %s\t%s\t%s\n", m.ID, m.Group, action, dash(shortVer(m.OldVersion)), dash(shortVer(m.NewVersion)), m.Checks, m.State)
	}
	tw.Flush()
}

func shortVer(v string) string {
	if len(v) > 10 {
		return v[len(v)-10:]
	}
	return v
}

func newStatusCmd(g *globals) *cobra.Command {
	var f appFile
	cmd := &cobra.Command{
		Use:   "status [--app NAME | -c fly.toml]",
		Short: "Show an app's release and machines",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := f.appName(cmd)
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			st, err := deploy.AppStatus(cmd.Context(), c, name)
			if err != nil {
				return err
			}
			if g.json {
				st.Machines = nonNil(st.Machines)
				return printJSON(cmd, st)
			}
			say(cmd, "App      %s\nRelease  %d\nImage    %s\n\n", st.App, st.Release, dash(st.Image))
			if len(st.Machines) == 0 {
				say(cmd, "No machines\n")
				return nil
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MACHINE\tGROUP\tSTATE\tRELEASE\tVERSION\tCHECKS\tIMAGE")
			for _, m := range st.Machines {
				state := string(m.State)
				if m.Cordoned {
					state += " (cordoned)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", m.ID, dash(m.Group), state, m.Release, shortVer(m.Version), m.Checks, m.Image)
			}
			return tw.Flush()
		},
	}
	f.flags(cmd)
	return cmd
}

func newScaleCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "scale", Short: "Scale an app's process groups"}
	var f appFile
	var group string
	var opts deploy.Options
	count := &cobra.Command{
		Use:   "count N [--process-group G]",
		Short: "Run N machines of a process group (new ones copy the group's newest machine)",
		Args:  exactlyOne("count"),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 0 {
				return fmt.Errorf("count must be a whole number 0 or more, got %q", args[0])
			}
			name, err := f.appName(cmd)
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			out := newDeployOutput(cmd, g.json)
			opts.Progress = out.event
			res, err := deploy.Scale(cmd.Context(), c, name, group, n, opts)
			return g.printResult(cmd, res, err, fmt.Sprintf("Scaled %s group %s to %d machines", name, firstSet(group, appconfig.DefaultProcessGroup), n))
		},
	}
	f.flags(count)
	count.Flags().StringVarP(&group, "process-group", "g", "", "the process group (default "+appconfig.DefaultProcessGroup+")")
	count.Flags().BoolVar(&opts.Wait, "wait", false, "wait for a deploy of the app to finish instead of failing")
	count.Flags().DurationVar(&opts.WaitTimeout, "wait-timeout", 0, "how long a new machine's checks may take to pass (default 5m)")
	cmd.AddCommand(count)
	return cmd
}

func newConfigCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Inspect an app's fly.toml"}
	var f appFile
	show := &cobra.Command{
		Use:   "show [-c fly.toml]",
		Short: "Show the machine config each process group gets from fly.toml (warnings on stderr)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := f.load(cmd)
			if err != nil {
				return err
			}
			groups := map[string]model.MachineConfig{}
			for _, grp := range a.Groups() {
				if groups[grp], err = a.MachineConfig(grp); err != nil {
					return err
				}
			}
			var mounts []map[string]any
			for _, m := range a.Mounts {
				mounts = append(mounts, map[string]any{"source": m.Source, "destination": m.Destination, "initial_size_gb": m.InitialSizeGB, "processes": m.Processes})
			}
			return printJSON(cmd, map[string]any{
				"app": firstSet(f.app, a.Name), "primary_region": a.PrimaryRegion,
				"deploy": map[string]any{"strategy": a.Deploy.Strategy, "max_unavailable": a.Deploy.MaxUnavailable, "wait_timeout": a.Deploy.WaitTimeout.String()},
				"mounts": nonNil(mounts), "process_groups": groups,
			})
		},
	}
	f.flags(show)
	cmd.AddCommand(show)
	return cmd
}
