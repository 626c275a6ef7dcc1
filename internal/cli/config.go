package cli

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/torpor-dev/torpor/internal/model"
)

// configFlags are the flags that build a machine config, shared by create
// and update.
type configFlags struct {
	file       string
	image      string
	memoryMB   int
	cpus       int
	env        []string
	volumes    []string
	skipLaunch bool
}

// add registers the flags on cmd.
func (f *configFlags) add(cmd *cobra.Command) {
	flags := cmd.Flags()
	flags.StringVar(&f.file, "config", "", "JSON file holding a machine config (Fly's \"config\" object); the other flags override it")
	flags.StringVar(&f.image, "image", "", "OCI image reference (name[:tag][@digest]), or for the admin a root filesystem directory")
	flags.IntVar(&f.memoryMB, "memory", 0, "memory in MB")
	flags.IntVar(&f.cpus, "cpus", 0, "number of CPUs")
	flags.StringArrayVarP(&f.env, "env", "e", nil, "environment variable KEY=VALUE (repeatable)")
	flags.StringArrayVarP(&f.volumes, "volume", "v", nil, "mount a volume: VOLUME_ID:/path (repeatable; replaces config.mounts)")
	flags.BoolVar(&f.skipLaunch, "skip-launch", false, "do not start the machine")
}

// changed reports whether any config flag or a command was given.
func (f *configFlags) changed(cmd *cobra.Command, args []string) bool {
	for _, name := range []string{"config", "image", "memory", "cpus", "env", "volume"} {
		if cmd.Flags().Changed(name) {
			return true
		}
	}
	return len(args) > 0
}

// build returns base, or the config in --config when given, with the flags and
// the command (args) applied.
func (f *configFlags) build(cmd *cobra.Command, base model.MachineConfig, args []string) (model.MachineConfig, error) {
	cfg := base
	if f.file != "" {
		var err error
		if cfg, err = readConfig(f.file); err != nil {
			return cfg, err
		}
	}
	if cmd.Flags().Changed("image") {
		image, err := imageRef(f.image)
		if err != nil {
			return cfg, err
		}
		cfg.Image = image
	}
	if cmd.Flags().Changed("memory") {
		if f.memoryMB <= 0 {
			return cfg, fmt.Errorf("invalid --memory %d: must be a positive number of MB", f.memoryMB)
		}
		cfg.Guest.MemoryMB = f.memoryMB
	}
	if cmd.Flags().Changed("cpus") {
		if f.cpus <= 0 {
			return cfg, fmt.Errorf("invalid --cpus %d: must be a positive number", f.cpus)
		}
		cfg.Guest.CPUs = f.cpus
	}
	if err := applyEnv(&cfg, f.env); err != nil {
		return cfg, err
	}
	if cmd.Flags().Changed("volume") {
		mounts, err := parseMounts(f.volumes)
		if err != nil {
			return cfg, err
		}
		cfg.Mounts = mounts
	}
	if len(args) > 0 {
		cfg.Init.Cmd = args
	}
	return cfg, nil
}

// readConfig reads a machine config from a JSON file, rejecting unknown fields.
func readConfig(path string) (model.MachineConfig, error) {
	var cfg model.MachineConfig
	data, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("reading --config: %w", err)
	}
	if err := model.DecodeJSON(bytes.NewReader(data), &cfg); err != nil {
		return cfg, fmt.Errorf("invalid --config %s: %w", path, err)
	}
	return cfg, nil
}

// imageRef returns image, made absolute when it names a local directory or
// looks like a relative path, since the daemon does not share our working
// directory. Anything else is sent as it is: an absolute path, a name under
// the daemon's images directory or an OCI image reference (to mean the
// image "app" while ./app is a directory, write it in full, e.g.
// docker.io/library/app).
func imageRef(image string) (string, error) {
	if image == "" {
		return "", fmt.Errorf("invalid --image: must not be empty")
	}
	isPath := strings.HasPrefix(image, "./") || strings.HasPrefix(image, "../") || image == "." || image == ".."
	if st, err := os.Stat(image); err == nil && st.IsDir() {
		isPath = true
	}
	if !isPath || filepath.IsAbs(image) {
		return image, nil
	}
	return filepath.Abs(image)
}

// applyEnv sets the KEY=VALUE pairs in cfg.Env.
func applyEnv(cfg *model.MachineConfig, pairs []string) error {
	for _, pair := range pairs {
		k, v, ok := strings.Cut(pair, "=")
		if !ok || k == "" {
			return fmt.Errorf("invalid --env %q: want KEY=VALUE", pair)
		}
		if cfg.Env == nil {
			cfg.Env = map[string]string{}
		}
		cfg.Env[k] = v
	}
	return nil
}

// parseMounts reads --volume values, VOLUME_ID:/path.
func parseMounts(values []string) ([]model.Mount, error) {
	mounts := make([]model.Mount, 0, len(values))
	for _, v := range values {
		id, path, ok := strings.Cut(v, ":")
		if !ok || id == "" || !strings.HasPrefix(path, "/") {
			return nil, fmt.Errorf("invalid --volume %q: want VOLUME_ID:/path, e.g. vol_0123456789abcdef:/data", v)
		}
		mounts = append(mounts, model.Mount{Volume: id, Path: path})
	}
	return mounts, nil
}
