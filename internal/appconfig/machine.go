package appconfig

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"text/template"

	"github.com/torpor-dev/torpor/internal/model"
)

// Metadata keys a deploy sets on the machines it makes (Fly's names).
const (
	MetaProcessGroup = "fly_process_group"
	// MetaReleaseVersion is the app's release: the number of the deploy
	// that last updated the machine.
	MetaReleaseVersion = "fly_release_version"
)

// applies reports whether an entry with processes list groups applies to
// group: an empty list applies to every group.
func applies(groups []string, group string) bool {
	return len(groups) == 0 || slices.Contains(groups, group)
}

// MachineConfig returns the config of the machines of process group group,
// without mounts (their volumes are chosen by the deploy: MountsFor).
func (a *App) MachineConfig(group string) (model.MachineConfig, error) {
	if !slices.Contains(a.Groups(), group) {
		return model.MachineConfig{}, model.Errorf(model.KindInvalid, "process group %q is not in fly.toml (groups: %v)", group, a.Groups())
	}
	cfg := model.MachineConfig{
		Image:      a.Image,
		Env:        maps.Clone(a.Env),
		StopConfig: a.StopConfig,
		SwapSizeMB: a.SwapSizeMB,
		Hooks:      a.Hooks,
		Metadata:   map[string]string{MetaProcessGroup: group},
	}
	if cmd, ok := a.Processes[group]; ok {
		cfg.Init.Cmd = slices.Clone(cmd)
	}
	for _, s := range a.Services {
		if applies(s.Processes, group) {
			cfg.Services = append(cfg.Services, s.Service)
		}
	}
	for name, c := range a.Checks {
		if applies(c.Processes, group) {
			if cfg.Checks == nil {
				cfg.Checks = map[string]model.Check{}
			}
			cfg.Checks[name] = c.Check
		}
	}
	for _, v := range a.VMs {
		if applies(v.Processes, group) {
			cfg.Size, cfg.Guest = v.Size, v.Guest
			break
		}
	}
	for _, r := range a.Restarts {
		if applies(r.Processes, group) {
			rp := r.Policy
			cfg.Restart = &rp
			break
		}
	}
	return cfg, nil
}

// MountsFor returns the mounts of group's machines.
func (a *App) MountsFor(group string) []Mount {
	var out []Mount
	for _, m := range a.Mounts {
		if applies(m.Processes, group) {
			out = append(out, m)
		}
	}
	return out
}

// AutostopSuspend reports whether cfg has a service that suspends idle
// machines: the machines a deploy leaves warm (prewarm).
func AutostopSuspend(cfg model.MachineConfig) bool {
	for _, s := range cfg.Services {
		if s.Autostop != nil && *s.Autostop == model.AutostopSuspend {
			return true
		}
	}
	return false
}

var starter = template.Must(template.New("fly.toml").Parse(`# fly.toml for {{.App}}, written by torpor launch. See docs/deploy.md.
app = {{printf "%q" .App}}

[build]
  image = {{printf "%q" .Image}}

[env]

[http_service]
  internal_port = {{.InternalPort}}
  # port is torpor's: the host port the proxy publishes the app on.
  port = {{.Port}}
  auto_stop_machines = "suspend"
  auto_start_machines = true
  min_machines_running = 0

  [[http_service.checks]]
    interval = "10s"
    timeout = "2s"
    grace_period = "5s"
    method = "GET"
    path = "/"

[deploy]
  strategy = "rolling"

[[vm]]
  memory = "256mb"
  cpus = 1
`))

// Starter returns a starter fly.toml for an app serving HTTP on
// internalPort, published by the proxy on port.
func Starter(app, image string, internalPort, port int) ([]byte, error) {
	var b bytes.Buffer
	err := starter.Execute(&b, map[string]any{"App": app, "Image": image, "InternalPort": internalPort, "Port": port})
	if err != nil {
		return nil, fmt.Errorf("write fly.toml: %w", err)
	}
	return b.Bytes(), nil
}
