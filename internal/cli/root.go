// Package cli owns torpor's command line: the cobra command tree of the client
// subcommands (app, machine, image, volume, token; launch, deploy, status, scale
// and config around a fly.toml), their flags and their output (tables or JSON).
// Every command talks to the daemon through package client; the daemon's own
// `serve` command is built elsewhere and passed to NewRoot.
package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/torpor-dev/torpor/internal/client"
)

// DefaultAPI is the daemon's API address when neither --api nor TORPOR_API is set.
const DefaultAPI = "unix:///run/torpor/torpor.sock"

// globals holds the root's persistent flags.
type globals struct {
	api   string
	token string
	json  bool
}

// NewRoot returns the torpor command tree. serve, the daemon command, is added
// when non-nil; it inherits the persistent flags --api, --token and --json.
func NewRoot(serve *cobra.Command) *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "torpor",
		Short:         "Run machines that suspend and resume",
		Long:          "torpor runs Fly-Machines-like machines that can suspend to a snapshot and resume.\n`torpor serve` runs the daemon; every other command is a client of its API.",
		SilenceUsage:  true,
		SilenceErrors: false, // cobra prints "Error: <message>"
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return fmt.Errorf("%w\nRun '%s --help' for usage", err, cmd.CommandPath())
	})
	flags := root.PersistentFlags()
	flags.StringVar(&g.api, "api", "", "daemon API address: unix:///path, /path, http://host:port or host:port (env TORPOR_API; default "+DefaultAPI+")")
	flags.StringVar(&g.token, "token", "", "API bearer token for a TCP API address; not needed (nor sent) on the local admin socket (env TORPOR_TOKEN)")
	flags.BoolVar(&g.json, "json", false, "print JSON instead of tables")

	root.AddCommand(newAppCmd(g), newMachineCmd(g), newImageCmd(g), newVolumeCmd(g), newTokenCmd(g), newHostCmd(g), newClusterCmd(), newDemoCmd(g), newBenchCmd(g), newDashboardCmd(g),
		newLaunchCmd(g), newDeployCmd(g), newStatusCmd(g), newScaleCmd(g), newConfigCmd(g))
	if serve != nil {
		root.AddCommand(serve, newFenceWatchCmd())
	}
	return root
}

// client returns an API client from the flags, falling back to the environment.
func (g *globals) client() (*client.Client, error) {
	return client.New(g.apiAddr(), firstSet(g.token, os.Getenv("TORPOR_TOKEN")))
}

// apiAddr is the API address the commands use.
func (g *globals) apiAddr() string {
	return firstSet(g.api, os.Getenv("TORPOR_API"), DefaultAPI)
}

// firstSet returns the first non-empty value.
func firstSet(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

// exactlyOne is an Args validator for commands that take one argument.
func exactlyOne(what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != 1 {
			return fmt.Errorf("%s takes exactly one %s, got %d arguments\nUsage: %s", cmd.CommandPath(), what, len(args), cmd.UseLine())
		}
		return nil
	}
}
