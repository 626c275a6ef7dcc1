package machine

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/torpor-dev/torpor/internal/model"
)

// Defaults and bounds of a machine's size.
const (
	defaultCPUs     = 1
	defaultMemoryMB = 256
	minMemoryMB     = 64
	maxMemoryMB     = 65536
	maxCPUs         = 64
)

var (
	envKeyRe    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	imageNameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9._-]+)?$`)
)

func invalid(format string, args ...any) error {
	return model.Errorf(model.KindInvalid, format, args...)
}

// normalize fills in defaults and checks cfg, naming the field and the rule on error.
func (m *Manager) normalize(cfg *model.MachineConfig) error {
	if cfg.Guest.CPUs == 0 {
		cfg.Guest.CPUs = defaultCPUs
	}
	if cfg.Guest.MemoryMB == 0 {
		cfg.Guest.MemoryMB = defaultMemoryMB
	}
	if cfg.Guest.CPUKind == "" {
		cfg.Guest.CPUKind = "shared"
	}
	checks := []func(*model.MachineConfig) error{
		checkGuest, checkInit, checkEnv, checkRestart, checkServices, checkHooks, checkGPUSuspend, m.checkImage, m.checkAutosuspend,
	}
	for _, check := range checks {
		if err := check(cfg); err != nil {
			return err
		}
	}
	return nil
}

func checkGuest(cfg *model.MachineConfig) error {
	g := cfg.Guest
	switch {
	case g.CPUs < 1 || g.CPUs > maxCPUs:
		return invalid("config.guest.cpus must be between 1 and %d, got %d", maxCPUs, g.CPUs)
	case g.MemoryMB < minMemoryMB || g.MemoryMB > maxMemoryMB:
		return invalid("config.guest.memory_mb must be between %d and %d, got %d", minMemoryMB, maxMemoryMB, g.MemoryMB)
	case g.GPUs < 0:
		return invalid("config.guest.gpus must not be negative, got %d", g.GPUs)
	case cfg.SwapSizeMB < 0:
		return invalid("config.swap_size_mb must not be negative, got %d", cfg.SwapSizeMB)
	case g.CPUKind != "shared" && g.CPUKind != "performance":
		return invalid("config.guest.cpu_kind must be \"shared\" or \"performance\", got %q", g.CPUKind)
	}
	return nil
}

func checkInit(cfg *model.MachineConfig) error {
	if len(command(cfg)) == 0 {
		return invalid("config.init: set exec, or entrypoint and/or cmd (a root filesystem directory has no default command)")
	}
	if w := cfg.Init.Workdir; w != "" && !filepath.IsAbs(w) {
		return invalid("config.init.workdir must be an absolute path, got %q", w)
	}
	return nil
}

// command is the process a config runs: init.exec, else entrypoint + cmd.
func command(cfg *model.MachineConfig) []string {
	if len(cfg.Init.Exec) > 0 {
		return cfg.Init.Exec
	}
	return append(append([]string{}, cfg.Init.Entrypoint...), cfg.Init.Cmd...)
}

func checkEnv(cfg *model.MachineConfig) error {
	for k := range cfg.Env {
		if !envKeyRe.MatchString(k) {
			return invalid("config.env: %q is not a valid variable name (letters, digits and _, not starting with a digit)", k)
		}
	}
	return nil
}

func checkRestart(cfg *model.MachineConfig) error {
	if cfg.Restart == nil {
		return nil
	}
	switch cfg.Restart.Policy {
	case "", "no", "always", "on-failure":
	default:
		return invalid("config.restart.policy must be \"no\", \"always\" or \"on-failure\", got %q", cfg.Restart.Policy)
	}
	if cfg.Restart.MaxRetries < 0 {
		return invalid("config.restart.max_retries must not be negative")
	}
	return nil
}

func checkServices(cfg *model.MachineConfig) error {
	for i, s := range cfg.Services {
		field := fmt.Sprintf("config.services[%d]", i)
		if s.InternalPort < 1 || s.InternalPort > 65535 {
			return invalid("%s.internal_port must be between 1 and 65535, got %d", field, s.InternalPort)
		}
		switch s.Protocol {
		case "", "tcp", "http":
		default:
			return invalid("%s.protocol must be \"tcp\" or \"http\", got %q", field, s.Protocol)
		}
		for j, p := range s.Ports {
			if p.Port != nil && (*p.Port < 1 || *p.Port > 65535) {
				return invalid("%s.ports[%d].port must be between 1 and 65535, got %d", field, j, *p.Port)
			}
		}
		if s.MinMachinesRunning != nil && *s.MinMachinesRunning < 0 {
			return invalid("%s.min_machines_running must not be negative", field)
		}
		if c := s.Concurrency; c != nil && c.HardLimit > 0 && c.SoftLimit > c.HardLimit {
			return invalid("%s.concurrency.soft_limit (%d) must not exceed hard_limit (%d)", field, c.SoftLimit, c.HardLimit)
		}
	}
	return nil
}

// Bounds and default of a hook's timeout.
const (
	minHookTimeout     = time.Second
	maxHookTimeout     = 5 * time.Minute
	defaultHookTimeout = 10 * time.Second
)

// checkHooks checks config.hooks and fills in the hooks' default timeout
// and the signal's canonical name ("usr2" becomes "SIGUSR2").
func checkHooks(cfg *model.MachineConfig) error {
	h := cfg.Hooks
	if h == nil {
		return nil
	}
	if err := checkHook("config.hooks.pre_suspend", h.PreSuspend); err != nil {
		return err
	}
	if err := checkHook("config.hooks.post_resume", h.PostResume); err != nil {
		return err
	}
	if h.ResumeSignal == "" {
		return nil
	}
	sig, err := signalName(h.ResumeSignal)
	if err != nil {
		return invalid("config.hooks.resume_signal: %v", err)
	}
	h.ResumeSignal = sig
	return nil
}

func checkHook(field string, h *model.Hook) error {
	if h == nil {
		return nil
	}
	if len(h.Cmd) == 0 || h.Cmd[0] == "" {
		return invalid("%s.cmd must not be empty (the command and its arguments, e.g. [\"/app/hook.sh\"])", field)
	}
	if h.Timeout.Duration == 0 {
		h.Timeout.Duration = defaultHookTimeout
	}
	if d := h.Timeout.Duration; d < minHookTimeout || d > maxHookTimeout {
		return invalid("%s.timeout must be between %s and %s, got %s", field, minHookTimeout, maxHookTimeout, d)
	}
	return nil
}

// signalName returns the canonical name of a signal that may be sent to a
// running app: not SIGKILL or SIGSTOP, which no app can handle.
func signalName(s string) (string, error) {
	name := strings.ToUpper(strings.TrimSpace(s))
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if unix.SignalNum(name) == 0 {
		return "", fmt.Errorf("unknown signal %q (use a name such as \"SIGUSR2\")", s)
	}
	if name == "SIGKILL" || name == "SIGSTOP" {
		return "", fmt.Errorf("%s cannot be handled by the app; use e.g. SIGUSR1, SIGUSR2 or SIGHUP", name)
	}
	return name, nil
}

// checkGPUSuspend checks config.guest.gpu_suspend. Host-memory mode is a
// promise by the app that its hooks move device state out before the
// checkpoint and back after the restore, so it requires both hooks. It is
// accepted with gpus = 0 too, so that one config serves hosts with and
// without GPUs (and the CPU stand-in of examples/gpu-host-memory).
func checkGPUSuspend(cfg *model.MachineConfig) error {
	switch cfg.Guest.GPUSuspend {
	case "":
		return nil
	case model.GPUSuspendHostMemory:
	default:
		return invalid("config.guest.gpu_suspend must be %q or unset, got %q", model.GPUSuspendHostMemory, cfg.Guest.GPUSuspend)
	}
	h := hooksOf(*cfg)
	var missing []string
	if h.PreSuspend == nil {
		missing = append(missing, "config.hooks.pre_suspend")
	}
	if h.PostResume == nil {
		missing = append(missing, "config.hooks.post_resume")
	}
	if len(missing) > 0 {
		return invalid("config.guest.gpu_suspend %q requires both config.hooks.pre_suspend and config.hooks.post_resume "+
			"(the app moves its device state to host memory before the checkpoint and back after the restore); missing %s",
			model.GPUSuspendHostMemory, strings.Join(missing, " and "))
	}
	return nil
}

// checkImage resolves the image to a root filesystem directory.
func (m *Manager) checkImage(cfg *model.MachineConfig) error {
	_, err := m.rootfs(cfg.Image)
	return err
}

// rootfs resolves an image to a root filesystem directory: an absolute path
// is used as is, a name is looked up under ImagesDir.
func (m *Manager) rootfs(image string) (string, error) {
	if image == "" {
		return "", invalid("config.image is required (a root filesystem directory or an image name under the images directory)")
	}
	path := image
	if !filepath.IsAbs(image) {
		if !imageNameRe.MatchString(image) || strings.Contains(image, "..") {
			return "", invalid("config.image %q is not a valid image name", image)
		}
		path = filepath.Join(m.cfg.ImagesDir, strings.ReplaceAll(image, ":", "_"))
	}
	fi, err := os.Stat(path)
	if err != nil || !fi.IsDir() {
		return "", invalid("config.image %q not found: torpor runs root filesystem directories; give an absolute path or put it at %s", image, path)
	}
	return filepath.Clean(path), nil
}

// suspendIneligible says why a config cannot be suspended, or "" if it can.
func (m *Manager) suspendIneligible(cfg *model.MachineConfig) string {
	switch {
	case cfg.Guest.MemoryMB > m.cfg.SuspendMemoryLimitMB:
		return fmt.Sprintf("guest.memory_mb is %d, over the suspend limit of %d MB", cfg.Guest.MemoryMB, m.cfg.SuspendMemoryLimitMB)
	case cfg.SwapSizeMB > 0:
		return fmt.Sprintf("swap_size_mb is %d; machines with swap cannot be suspended", cfg.SwapSizeMB)
	case cfg.Schedule != "":
		return fmt.Sprintf("schedule is %q; scheduled machines cannot be suspended", cfg.Schedule)
	case cfg.Guest.GPUs > 0 && cfg.Guest.GPUSuspend != model.GPUSuspendHostMemory:
		return fmt.Sprintf("guest.gpus is %d; GPU state cannot be snapshotted (unless the app keeps it in host memory "+
			"across the suspend: guest.gpu_suspend %q with pre_suspend and post_resume hooks, see docs/gpu.md)",
			cfg.Guest.GPUs, model.GPUSuspendHostMemory)
	}
	return ""
}

// checkAutosuspend rejects autostop "suspend" on a machine that cannot be suspended.
func (m *Manager) checkAutosuspend(cfg *model.MachineConfig) error {
	for i, s := range cfg.Services {
		if s.Autostop == nil || *s.Autostop != model.AutostopSuspend {
			continue
		}
		if why := m.suspendIneligible(cfg); why != "" {
			return invalid("config.services[%d].autostop is \"suspend\" but this machine cannot be suspended: %s", i, why)
		}
	}
	return nil
}
