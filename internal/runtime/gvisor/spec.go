package gvisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/torpor-dev/torpor/internal/runtime"
)

const (
	defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	cpuPeriodUS = 100_000 // CFS period for the CPU quota, in microseconds
	nofileLimit = 65536
)

// idPattern is what runsc accepts as a container ID (and what is safe in
// file names and cgroup paths).
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// defaultCaps is the capability set of the sandbox's init process (Docker's
// default set). They are capabilities inside gVisor's kernel, not the host's.
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// validateSpec checks the parts of spec the driver relies on.
func validateSpec(spec runtime.Spec) error {
	switch {
	case !idPattern.MatchString(spec.ID):
		return fmt.Errorf("gvisor: invalid sandbox ID %q", spec.ID)
	case !filepath.IsAbs(spec.Bundle):
		return fmt.Errorf("gvisor: bundle %q must be an absolute path", spec.Bundle)
	case !filepath.IsAbs(spec.RootFS):
		return fmt.Errorf("gvisor: rootfs %q must be an absolute path", spec.RootFS)
	case len(spec.Args) == 0:
		return errors.New("gvisor: spec has no process args")
	case spec.NetNS != "" && !filepath.IsAbs(spec.NetNS):
		return fmt.Errorf("gvisor: network namespace %q must be an absolute path", spec.NetNS)
	case spec.CPUs < 0 || spec.MemoryMB < 0:
		return errors.New("gvisor: negative CPUs or MemoryMB")
	}
	return nil
}

// ociSpec translates a torpor spec into the OCI runtime spec runsc reads from
// config.json. It is deterministic: restore must present the same spec as
// the boot that produced the checkpoint (runsc validates it).
func ociSpec(spec runtime.Spec) *specs.Spec {
	hostname := spec.Hostname
	if hostname == "" {
		hostname = spec.ID
	}
	return &specs.Spec{
		Version: specs.Version,
		// Not read-only: runsc disables the rootfs overlay for a read-only
		// root (and then every write fails). The host directory is still
		// served read-only, because overlayFlag covers it with a memory overlay.
		Root:     &specs.Root{Path: spec.RootFS, Readonly: false},
		Process:  ociProcess(spec),
		Hostname: hostname,
		Mounts:   append(ociMounts(), bindMounts(spec.Mounts)...),
		Linux: &specs.Linux{
			Namespaces:  ociNamespaces(spec.NetNS),
			Resources:   ociResources(spec.CPUs, spec.MemoryMB),
			CgroupsPath: "/torpor/" + spec.ID,
		},
	}
}

// ociProcess describes the sandbox's init process: the spec's user (root
// by default), no terminal (stdio goes to the console), the spec's args,
// env (with a default PATH) and working directory.
func ociProcess(spec runtime.Spec) *specs.Process {
	cwd := spec.Cwd
	if cwd == "" {
		cwd = "/"
	}
	return &specs.Process{
		Terminal: false,
		User:     specs.User{UID: spec.User.UID, GID: spec.User.GID, AdditionalGids: spec.User.AdditionalGIDs},
		Args:     append([]string(nil), spec.Args...),
		Env:      withDefaultPath(spec.Env),
		Cwd:      cwd,
		Capabilities: &specs.LinuxCapabilities{
			Bounding:  defaultCaps,
			Effective: defaultCaps,
			Permitted: defaultCaps,
		},
		Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: nofileLimit, Soft: nofileLimit}},
	}
}

// withDefaultPath returns env with a standard PATH added if it has none.
func withDefaultPath(env []string) []string {
	out := append([]string(nil), env...)
	for _, kv := range env {
		if strings.HasPrefix(kv, "PATH=") {
			return out
		}
	}
	return append(out, defaultPath)
}

// ociMounts returns the usual pseudo-filesystems (all provided by gVisor's
// kernel, none backed by the host).
func ociMounts() []specs.Mount {
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
	}
}

// bindMounts turns the spec's host mounts into OCI bind mounts.
func bindMounts(ms []runtime.Mount) []specs.Mount {
	out := make([]specs.Mount, 0, len(ms))
	for _, m := range ms {
		opts := []string{"rbind"}
		if m.ReadOnly {
			opts = append(opts, "ro")
		}
		out = append(out, specs.Mount{Destination: m.Destination, Type: "bind", Source: m.Source, Options: opts})
	}
	return out
}

// ociNamespaces lists the sandbox's namespaces. The network namespace is
// the prepared one at netns, or (netns == "") a new one, which runsc creates
// empty (see networkFlag).
func ociNamespaces(netns string) []specs.LinuxNamespace {
	return []specs.LinuxNamespace{
		{Type: specs.PIDNamespace},
		{Type: specs.IPCNamespace},
		{Type: specs.UTSNamespace},
		{Type: specs.MountNamespace},
		{Type: specs.NetworkNamespace, Path: netns},
	}
}

// ociResources sets the memory limit and CPU quota (zero means unlimited).
// runsc applies them to the sandbox's cgroup and sizes the sandbox from
// them (total memory, number of CPUs from the quota).
func ociResources(cpus, memoryMB int) *specs.LinuxResources {
	res := &specs.LinuxResources{}
	if memoryMB > 0 {
		limit := int64(memoryMB) << 20
		res.Memory = &specs.LinuxMemory{Limit: &limit}
	}
	if cpus > 0 {
		quota, period := int64(cpus)*cpuPeriodUS, uint64(cpuPeriodUS)
		res.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}
	return res
}

// networkFlag selects runsc's network mode for a spec: with a prepared
// namespace the sandbox joins it and gVisor's netstack takes over its
// interfaces; without one, "none" gives a fresh empty namespace (never the
// host's) and a loopback-only netstack.
func networkFlag(netns string) string {
	if netns != "" {
		return "--network=sandbox"
	}
	return "--network=none"
}

// writeConfig writes spec's config.json into its bundle (created if needed),
// atomically.
func writeConfig(spec runtime.Spec) error {
	if err := os.MkdirAll(spec.Bundle, 0o700); err != nil {
		return fmt.Errorf("gvisor: creating bundle: %w", err)
	}
	data, err := json.MarshalIndent(ociSpec(spec), "", "  ")
	if err != nil {
		return fmt.Errorf("gvisor: encoding config.json: %w", err)
	}
	path := filepath.Join(spec.Bundle, configFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("gvisor: writing config.json: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("gvisor: writing config.json: %w", err)
	}
	return nil
}
