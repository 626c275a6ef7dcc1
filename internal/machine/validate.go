package machine

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/torpor-dev/torpor/internal/checks"
	"github.com/torpor-dev/torpor/internal/identifiers"
	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/volume"
)

// Defaults and bounds of a machine's size.
const (
	defaultCPUs     = 1
	defaultMemoryMB = 256
	minMemoryMB     = 64
	maxMemoryMB     = 65536
	maxCPUs         = 64
	maxGPUs         = 16
	maxSwapMB       = 65536
	maxRetries      = 1000
	maxStopTimeout  = 24 * time.Hour
)

var (
	envKeyRe    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,255}$`)
	imageNameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9._-]+)?$`)
)

func invalid(format string, args ...any) error {
	return model.Errorf(model.KindInvalid, format, args...)
}

// normalize fills in defaults and checks cfg, naming the field and the rule on error.
func (m *Manager) normalize(cfg *model.MachineConfig) error {
	if err := applySize(cfg); err != nil {
		return err
	}
	if err := canonicalSwap(cfg); err != nil {
		return err
	}
	if cfg.Guest.CPUs == 0 {
		cfg.Guest.CPUs = defaultCPUs
	}
	if cfg.Guest.MemoryMB == 0 {
		cfg.Guest.MemoryMB = defaultMemoryMB
	}
	if cfg.Guest.CPUKind == "" {
		cfg.Guest.CPUKind = "shared"
	}
	canonical(cfg)
	checks := []func(*model.MachineConfig) error{
		checkGuest, checkInit, checkEnv, checkRestart, checkSchedule, checkServices, checks.Normalize, checkMounts,
		checkStopConfig, checkHooks, checkGPUSuspend, m.checkImage, m.checkAutosuspend, checkConfigBytes, m.checkSize,
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
	case g.GPUs < 0 || g.GPUs > maxGPUs:
		return invalid("config.guest.gpus must be between 0 and %d, got %d", maxGPUs, g.GPUs)
	case swapMB(cfg) < 0 || swapMB(cfg) > maxSwapMB:
		return invalid("config.init.swap_size_mb must be between 0 and %d, got %d", maxSwapMB, swapMB(cfg))
	case g.CPUKind != "shared" && g.CPUKind != "performance":
		return invalid("config.guest.cpu_kind must be \"shared\" or \"performance\", got %q", g.CPUKind)
	case len(g.GPUKind) > 64 || !printable(g.GPUKind):
		return invalid("config.guest.gpu_kind must be at most 64 printable characters, got %q", g.GPUKind)
	}
	return nil
}

// checkInit checks init's fields; whether the machine has a command at all
// depends on its image (checkCommand, once the image is resolved).
func checkInit(cfg *model.MachineConfig) error {
	if cmd := processArgs(cfg, nil); len(cmd) > 0 && cmd[0] == "" {
		return invalid("config.init: the command's first word (the program) must not be empty")
	}
	for _, f := range []struct {
		name string
		args []string
	}{{"exec", cfg.Init.Exec}, {"entrypoint", cfg.Init.Entrypoint}, {"cmd", cfg.Init.Cmd}} {
		if err := checkArgs("config.init."+f.name, f.args); err != nil {
			return err
		}
	}
	if w := cfg.Init.Workdir; w != "" && (!filepath.IsAbs(w) || strings.ContainsRune(w, 0)) {
		return invalid("config.init.workdir must be an absolute path without NUL bytes, got %q", w)
	}
	return nil
}

// checkArgs refuses arguments a process cannot be given: NUL bytes.
func checkArgs(field string, args []string) error {
	for i, a := range args {
		if strings.ContainsRune(a, 0) {
			return invalid("%s[%d] must not contain NUL bytes", field, i)
		}
	}
	return nil
}

// printable reports whether s has no control characters.
func printable(s string) bool {
	return !strings.ContainsFunc(s, func(c rune) bool { return c < 0x20 || c == 0x7f })
}

func checkEnv(cfg *model.MachineConfig) error {
	for k, v := range cfg.Env {
		if !envKeyRe.MatchString(k) {
			return invalid("config.env: %q is not a valid variable name (1-256 letters, digits and _, not starting with a digit)", k)
		}
		if strings.ContainsRune(v, 0) {
			return invalid("config.env.%s must not contain NUL bytes", k)
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
	if n := cfg.Restart.MaxRetries; n < 0 || n > maxRetries {
		return invalid("config.restart.max_retries must be between 0 and %d, got %d", maxRetries, n)
	}
	return nil
}

// checkSchedule checks config.schedule against Fly's schedules.
func checkSchedule(cfg *model.MachineConfig) error {
	switch cfg.Schedule {
	case "", "hourly", "daily", "weekly", "monthly":
		return nil
	}
	return invalid("config.schedule must be \"hourly\", \"daily\", \"weekly\", \"monthly\" or unset, got %q", cfg.Schedule)
}

// checkStopConfig checks config.stop_config and canonicalizes its signal
// name ("term" becomes "SIGTERM").
func checkStopConfig(cfg *model.MachineConfig) error {
	sc := cfg.StopConfig
	if sc == nil {
		return nil
	}
	if sc.Timeout != nil {
		if err := checkStopTimeout("config.stop_config.timeout", sc.Timeout.Duration); err != nil {
			return err
		}
	}
	if sc.Signal != nil && *sc.Signal != "" {
		sig, err := stopSignal(*sc.Signal)
		if err != nil {
			return invalid("config.stop_config.signal: %v", err)
		}
		sc.Signal = &sig
	}
	return nil
}

// checkStopTimeout checks a stop grace period (0 means the default).
func checkStopTimeout(field string, d time.Duration) error {
	if d < 0 || d > maxStopTimeout {
		return invalid("%s must be between 0s and %s, got %s", field, maxStopTimeout, d)
	}
	return nil
}

// checkStopRequest checks the body of a stop and canonicalizes its signal.
func checkStopRequest(req *model.StopRequest) error {
	if err := checkStopTimeout("timeout", req.Timeout.Duration); err != nil {
		return err
	}
	if req.Signal == "" {
		return nil
	}
	sig, err := stopSignal(req.Signal)
	if err != nil {
		return invalid("signal: %v", err)
	}
	req.Signal = sig
	return nil
}

// stopSignal returns the canonical name of a stop signal: any signal.
func stopSignal(s string) (string, error) {
	name := canonicalSignal(s)
	if unix.SignalNum(name) == 0 {
		return "", fmt.Errorf("unknown signal %q (use a name such as \"SIGTERM\")", s)
	}
	return name, nil
}

// canonicalSignal spells a signal name the way unix.SignalNum knows it.
func canonicalSignal(s string) string {
	name := strings.ToUpper(strings.TrimSpace(s))
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	return name
}

// checkMounts checks config.mounts on their own; whether the volumes exist
// and are free is checked when the machine takes them (volume.Attach).
func checkMounts(cfg *model.MachineConfig) error { return volume.CheckMounts(cfg.Mounts) }

func checkServices(cfg *model.MachineConfig) error {
	if len(cfg.Services) > maxServices {
		return invalid("config.services may have at most %d entries, got %d", maxServices, len(cfg.Services))
	}
	if n := len(cfg.HostPorts()); n > maxHostPorts {
		return invalid("config.services may publish at most %d host ports, got %d", maxHostPorts, n)
	}
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
			if err := checkPort(fmt.Sprintf("%s.ports[%d]", field, j), p); err != nil {
				return err
			}
		}
		if s.MinMachinesRunning != nil && (*s.MinMachinesRunning < 0 || *s.MinMachinesRunning > maxMinRunning) {
			return invalid("%s.min_machines_running must be between 0 and %d, got %d", field, maxMinRunning, *s.MinMachinesRunning)
		}
		if err := checkConcurrency(field+".concurrency", s.Concurrency); err != nil {
			return err
		}
	}
	return nil
}

// maxMinRunning bounds services[].min_machines_running.
const maxMinRunning = 1000

// Bounds on what one config makes the proxy publish (issue 17, F12: one
// machine with 1,000 services bound 1,000 host ports). An app's machines
// together are bounded by Config.MaxPortsPerApp (ports.go).
const (
	maxServices  = 32
	maxHostPorts = 16
)

// handlers are the port handlers Fly knows; the proxy acts on "http".
var handlers = []string{"http", "tls", "pg_tls", "proxy_proto", "edge_http"}

func checkPort(field string, p model.Port) error {
	if p.Port != nil && (*p.Port < 1 || *p.Port > 65535) {
		return invalid("%s.port must be between 1 and 65535, got %d", field, *p.Port)
	}
	for k, h := range p.Handlers {
		if !slices.Contains(handlers, h) {
			return invalid("%s.handlers[%d] must be one of %s, got %q", field, k, strings.Join(handlers, ", "), h)
		}
	}
	return nil
}

func checkConcurrency(field string, c *model.Concurrency) error {
	switch {
	case c == nil:
		return nil
	case c.Type != "" && c.Type != "connections" && c.Type != "requests":
		return invalid("%s.type must be \"connections\" or \"requests\", got %q", field, c.Type)
	case c.SoftLimit < 0 || c.HardLimit < 0:
		return invalid("%s.soft_limit and hard_limit must not be negative, got %d and %d", field, c.SoftLimit, c.HardLimit)
	case c.HardLimit > 0 && c.SoftLimit > c.HardLimit:
		return invalid("%s.soft_limit (%d) must not exceed hard_limit (%d)", field, c.SoftLimit, c.HardLimit)
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
	if err := checkArgs(field+".cmd", h.Cmd); err != nil {
		return err
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
	name := canonicalSignal(s)
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

// rootfs resolves an image to a root filesystem directory. A name is looked
// up under ImagesDir and must stay there once symlinks are followed. An
// absolute path is used as is, but it may not expose the daemon's own state:
// it may not be the data or run directory, lie inside one (images under
// ImagesDir excepted) or contain one (as "/" does).
func (m *Manager) rootfs(image string) (string, error) {
	if image == "" {
		return "", invalid("config.image is required: an image reference (name[:tag][@digest]), or for the admin a root filesystem directory")
	}
	if strings.ContainsRune(image, 0) || len(image) > 4096 {
		return "", invalid("config.image must be at most 4096 bytes without NUL bytes")
	}
	if !filepath.IsAbs(image) {
		return m.imageByName(image)
	}
	if slices.Contains(strings.Split(image, "/"), "..") {
		return "", invalid("config.image %q must not contain \"..\" segments", image)
	}
	dir, err := existingDir(image)
	if err != nil {
		return "", invalid("config.image %q not found: %v", image, err)
	}
	if err := m.checkImagePath(dir); err != nil {
		return "", invalid("config.image %q (%s): %v", image, dir, err)
	}
	return dir, nil
}

// imageByName resolves an image name under ImagesDir.
func (m *Manager) imageByName(image string) (string, error) {
	if !imageNameRe.MatchString(image) || slices.Contains(strings.Split(image, "/"), "..") {
		return "", invalid("config.image %q is not a valid image name: lowercase letters, digits, '.', '_', '-' and '/', "+
			"starting with a letter or digit, no \"..\" segments, optionally \":tag\"; or give an absolute path", image)
	}
	path := filepath.Join(m.cfg.ImagesDir, strings.ReplaceAll(image, ":", "_"))
	dir, err := existingDir(path)
	if err != nil {
		return "", invalid("config.image %q not found: torpor runs root filesystem directories; give an absolute path or put it at %s", image, path)
	}
	base, err := filepath.EvalSymlinks(m.cfg.ImagesDir)
	if err != nil || !within(dir, base) {
		return "", invalid("config.image %q resolves to %s, outside the images directory %s (a symlink escapes it)", image, dir, m.cfg.ImagesDir)
	}
	return dir, nil
}

// existingDir follows path's symlinks and returns the directory it names.
func existingDir(path string) (string, error) {
	dir, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", fmt.Errorf("no such directory")
	}
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() {
		return "", fmt.Errorf("not a directory")
	}
	return filepath.Abs(dir)
}

// checkImagePath refuses a root filesystem that would show a machine the
// daemon's own files (other machines' snapshots, the store, sockets).
func (m *Manager) checkImagePath(dir string) error {
	images := realPath(m.cfg.ImagesDir)
	for _, own := range []string{m.cfg.DataDir, m.cfg.RunDir} {
		own = realPath(own)
		switch {
		case within(own, dir) || own == dir:
			return fmt.Errorf("contains the daemon's directory %s", own)
		case within(dir, own) && !within(dir, images):
			return fmt.Errorf("is inside the daemon's directory %s", own)
		}
	}
	return nil
}

// realPath is path absolute, with its symlinks followed where it exists.
func realPath(path string) string {
	if p, err := filepath.EvalSymlinks(path); err == nil {
		path = p
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return filepath.Clean(path)
	}
	return abs
}

// within reports whether path lies strictly inside dir (both clean and absolute).
func within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel)
}

// checkCreate checks what a create request has besides its config.
func checkCreate(req *model.CreateMachineRequest) error {
	if err := identifiers.Region("region", req.Region); err != nil {
		return err
	}
	if err := checkLeaseTTL("lease_ttl", req.LeaseTTL); err != nil {
		return err
	}
	return checkName(req.Name)
}

// checkUpdate checks what an update request has besides its config.
func checkUpdate(req *model.UpdateMachineRequest) error {
	if err := identifiers.Region("region", req.Region); err != nil {
		return err
	}
	if err := checkLeaseTTL("lease_ttl", req.LeaseTTL); err != nil {
		return err
	}
	if req.CurrentVersion != "" {
		if err := identifiers.Version("current_version", req.CurrentVersion); err != nil {
			return err
		}
	}
	return checkName(req.Name)
}

// checkName checks a machine name ("" means generated or unchanged).
func checkName(name string) error { return identifiers.MachineName("name", name) }

// canonical drops empty lists and maps, which JSON cannot tell from absent
// ones, so that a stored config reads back equal to itself.
func canonical(cfg *model.MachineConfig) {
	cfg.Init.Exec = nilIfEmpty(cfg.Init.Exec)
	cfg.Init.Entrypoint = nilIfEmpty(cfg.Init.Entrypoint)
	cfg.Init.Cmd = nilIfEmpty(cfg.Init.Cmd)
	if len(cfg.Env) == 0 {
		cfg.Env = nil
	}
	if len(cfg.Metadata) == 0 {
		cfg.Metadata = nil
	}
	cfg.Services = nilIfEmpty(cfg.Services)
	cfg.Mounts = nilIfEmpty(cfg.Mounts)
	for i := range cfg.Services {
		s := &cfg.Services[i]
		s.Ports = nilIfEmpty(s.Ports)
		for j := range s.Ports {
			s.Ports[j].Handlers = nilIfEmpty(s.Ports[j].Handlers)
		}
	}
}

func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}

// suspendIneligible says why a config cannot be suspended, or "" if it can.
func (m *Manager) suspendIneligible(cfg *model.MachineConfig) string {
	switch {
	case cfg.Guest.MemoryMB > m.cfg.SuspendMemoryLimitMB:
		return fmt.Sprintf("guest.memory_mb is %d, over the suspend limit of %d MB", cfg.Guest.MemoryMB, m.cfg.SuspendMemoryLimitMB)
	case swapMB(cfg) > 0:
		return fmt.Sprintf("init.swap_size_mb is %d; machines with swap cannot be suspended", swapMB(cfg))
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

// sizePresets are Fly's machine sizes (config.size, guest presets): CPU
// kind, CPUs and memory, and GPUs for the GPU sizes.
var sizePresets = func() map[string]model.Guest {
	p := map[string]model.Guest{}
	for _, n := range []int{1, 2, 4, 6, 8} {
		p[fmt.Sprintf("shared-cpu-%dx", n)] = model.Guest{CPUKind: "shared", CPUs: n, MemoryMB: 256 * n}
	}
	for _, n := range []int{1, 2, 4, 6, 8, 10, 12, 14, 16} {
		p[fmt.Sprintf("performance-%dx", n)] = model.Guest{CPUKind: "performance", CPUs: n, MemoryMB: 2048 * n}
	}
	for size, kind := range map[string]string{"a100-40gb": "a100-pcie-40gb", "a100-80gb": "a100-sxm4-80gb", "l40s": "l40s", "a10": "a10"} {
		p[size] = model.Guest{CPUKind: "performance", CPUs: 8, MemoryMB: 32768, GPUs: 1, GPUKind: kind}
	}
	return p
}()

// applySize fills in the guest fields cfg leaves unset from config.size,
// Fly's deprecated preset name.
func applySize(cfg *model.MachineConfig) error {
	if cfg.Size == "" {
		return nil
	}
	p, ok := sizePresets[cfg.Size]
	if !ok {
		names := make([]string, 0, len(sizePresets))
		for n := range sizePresets {
			names = append(names, n)
		}
		slices.Sort(names)
		return invalid("config.size %q is not one of Fly's sizes: %s", cfg.Size, strings.Join(names, ", "))
	}
	g := &cfg.Guest
	if g.CPUKind == "" {
		g.CPUKind = p.CPUKind
	}
	if g.CPUs == 0 {
		g.CPUs = p.CPUs
	}
	if g.MemoryMB == 0 {
		g.MemoryMB = p.MemoryMB
	}
	if g.GPUs == 0 && g.GPUKind == "" {
		g.GPUs, g.GPUKind = p.GPUs, p.GPUKind
	}
	return nil
}

// canonicalSwap moves torpor's config.swap_size_mb to Fly's
// init.swap_size_mb, where the config keeps it.
func canonicalSwap(cfg *model.MachineConfig) error {
	top := cfg.SwapSizeMB
	if top < 0 || top > maxSwapMB {
		return invalid("config.swap_size_mb must be between 0 and %d, got %d", maxSwapMB, top)
	}
	cfg.SwapSizeMB = 0
	switch init := cfg.Init.SwapSizeMB; {
	case top == 0:
	case init == nil:
		cfg.Init.SwapSizeMB = &top
	case *init != top:
		return invalid("config.swap_size_mb (%d) and config.init.swap_size_mb (%d) differ: give one", top, *init)
	}
	if p := cfg.Init.SwapSizeMB; p != nil && *p == 0 {
		cfg.Init.SwapSizeMB = nil
	}
	return nil
}

// swapMB is the machine's swap size.
func swapMB(cfg *model.MachineConfig) int {
	if cfg.Init.SwapSizeMB == nil {
		return 0
	}
	return *cfg.Init.SwapSizeMB
}
