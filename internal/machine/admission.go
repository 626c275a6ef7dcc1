package machine

import (
	"errors"
	"fmt"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/store"
)

// Sizes and admission (issue 17's F5: an app token's `memory_mb: 65536,
// cpus: 64` was accepted on a 23 GiB, 2-CPU host). Two checks:
//
//   - at submit (create, update), a config whose guest.memory_mb or
//     guest.cpus is more than the host has (Config.HostMemoryMB,
//     HostCPUs) or more than one app may use (Config.AppMemoryQuotaMB,
//     AppCPUQuota) is refused with a KindQuota error naming the field and
//     the limit: it could never run;
//   - at start (cold start or resume), admission control adds the memory
//     of every machine that holds some (starting, started, suspending,
//     stopping) and refuses a start the host cannot hold, or that would
//     take the app's machines past its quota, with a KindConflict error:
//     it may run once another machine stops or suspends. The check runs in
//     the store transaction that moves the machine to starting, so
//     concurrent starts are admitted one after the other and never
//     together past the limit.
//
// CPUs are shared between machines (a machine's cpus is a quota of CPU
// time), so the host's CPUs bound each machine's cpus only; an app's CPU
// quota bounds the sum of its running machines'.

// errAdmission marks a start that admission control refused.
var errAdmission = errors.New("not admitted")

// checkSize refuses a config that asks for more than the host has or more
// than an app may use.
func (m *Manager) checkSize(cfg *model.MachineConfig) error {
	g, c := cfg.Guest, &m.cfg
	quota := func(format string, args ...any) error { return model.Errorf(model.KindQuota, format, args...) }
	switch {
	case c.HostCPUs > 0 && g.CPUs > c.HostCPUs:
		return quota("config.guest.cpus is %d, more than this host's %d CPUs (--host-cpus)", g.CPUs, c.HostCPUs)
	case c.HostMemoryMB > 0 && g.MemoryMB > c.HostMemoryMB:
		return quota("config.guest.memory_mb is %d, more than this host can give machines: %d MB (--host-memory-mb)", g.MemoryMB, c.HostMemoryMB)
	case c.AppCPUQuota > 0 && g.CPUs > c.AppCPUQuota:
		return quota("config.guest.cpus is %d, over the app's quota of %d CPUs (--app-cpu-quota)", g.CPUs, c.AppCPUQuota)
	case c.AppMemoryQuotaMB > 0 && g.MemoryMB > c.AppMemoryQuotaMB:
		return quota("config.guest.memory_mb is %d, over the app's quota of %d MB (--app-memory-quota-mb)", g.MemoryMB, c.AppMemoryQuotaMB)
	}
	return nil
}

// holdsResources reports whether a machine in state s has (or is about to
// have) a sandbox that takes its memory.
func holdsResources(s model.State) bool {
	switch s {
	case model.StateStarting, model.StateStarted, model.StateSuspending, model.StateStopping:
		return true
	}
	return false
}

// admit is admission control for a start of mc, inside the transaction
// that moves it to starting: it refuses the start when the machines that
// hold memory, with mc, would take more than the host can give or take the
// app past its quota.
func (m *Manager) admit(tx *store.Tx, mc *model.Machine) error {
	c := &m.cfg
	if c.HostMemoryMB <= 0 && c.AppMemoryQuotaMB <= 0 && c.AppCPUQuota <= 0 {
		return nil
	}
	ms, err := tx.Machines("")
	if err != nil {
		return err
	}
	var hostMB, appMB, appCPUs int
	for _, o := range ms {
		if o.ID == mc.ID || !holdsResources(o.State) {
			continue
		}
		hostMB += o.Config.Guest.MemoryMB
		if o.App == mc.App {
			appMB += o.Config.Guest.MemoryMB
			appCPUs += o.Config.Guest.CPUs
		}
	}
	g := mc.Config.Guest
	refuse := func(format string, args ...any) error {
		return &model.Error{Kind: model.KindConflict, Err: errAdmission,
			Msg: fmt.Sprintf("machine %s cannot start now: %s; stop or suspend another machine first", mc.ID, fmt.Sprintf(format, args...))}
	}
	switch {
	case c.HostMemoryMB > 0 && hostMB+g.MemoryMB > c.HostMemoryMB:
		return refuse("it needs %d MB and the host has %d of its %d MB for machines free (--host-memory-mb)",
			g.MemoryMB, max(0, c.HostMemoryMB-hostMB), c.HostMemoryMB)
	case c.AppMemoryQuotaMB > 0 && appMB+g.MemoryMB > c.AppMemoryQuotaMB:
		return refuse("it needs %d MB and app %q's running machines already use %d of its %d MB quota (--app-memory-quota-mb)",
			g.MemoryMB, mc.App, appMB, c.AppMemoryQuotaMB)
	case c.AppCPUQuota > 0 && appCPUs+g.CPUs > c.AppCPUQuota:
		return refuse("it needs %d CPUs and app %q's running machines already use %d of its %d CPU quota (--app-cpu-quota)",
			g.CPUs, mc.App, appCPUs, c.AppCPUQuota)
	}
	return nil
}
