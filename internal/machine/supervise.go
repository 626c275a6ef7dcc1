package machine

import (
	"context"
	"fmt"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/runtime"
	"github.com/torpor-dev/torpor/internal/store"
)

// A run is one supervised life of a machine's sandbox, from boot or restore
// until its process exits.
type run struct {
	done   chan struct{} // closed when the sandbox's process has exited
	status runtime.ExitStatus
	err    error
}

// supervise watches the machine's sandbox until it exits. An exit that no
// operation caused (the process ended on its own) stops the machine and
// applies its restart policy.
func (m *Manager) supervise(id string) *run {
	r := &run{done: make(chan struct{})}
	m.mu.Lock()
	if !m.closed {
		m.runs[id] = r
	}
	m.mu.Unlock()
	go func() {
		r.status, r.err = m.rt.Wait(context.Background(), sandboxID(id))
		close(r.done)
		m.onExit(id, r)
	}()
	return r
}

// currentRun returns the machine's supervised run, if any.
func (m *Manager) currentRun(id string) *run {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.runs[id]
}

// endRun forgets the machine's run; later exits of it are not acted on.
func (m *Manager) endRun(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.runs, id)
}

// onExit handles a sandbox exit nobody asked for.
func (m *Manager) onExit(id string, r *run) {
	unlock, err := m.lock(context.Background(), id)
	if err != nil {
		return
	}
	defer unlock()
	if m.currentRun(id) != r {
		return // an operation (stop, suspend, destroy) ended this run itself
	}
	m.endRun(id)
	mc, err := m.commit(id, func(_ *store.Tx, mc *model.Machine) error {
		if mc.State != model.StateStarted {
			return fmt.Errorf("machine %s is %s, not started", id, mc.State)
		}
		mc.State = model.StateStopped
		return nil
	}, event("exit", "stopped", model.SourceFlyd, exitDetails(r)))
	if err != nil {
		m.log.Warn("sandbox exited", "machine", id, "err", err)
		return
	}
	m.rt.Kill(context.Background(), sandboxID(id))
	if m.shouldRestart(mc, r) {
		m.commit(id, nil, event("restart", "starting", model.SourceFlyd, map[string]any{"policy": restartPolicy(mc.Config)}))
		if _, err := m.coldStart(model.WithSource(context.Background(), model.SourceFlyd), mc, ""); err != nil {
			m.log.Warn("restart failed", "machine", id, "err", err)
		}
	}
}

func exitDetails(r *run) map[string]any {
	d := map[string]any{"exit_code": r.status.Code}
	if r.status.Signal != "" {
		d["signal"] = r.status.Signal
	}
	if r.err != nil {
		d["error"] = r.err.Error()
	}
	return d
}

func restartPolicy(cfg model.MachineConfig) string {
	if cfg.Restart == nil || cfg.Restart.Policy == "" {
		return "no"
	}
	return cfg.Restart.Policy
}

// shouldRestart applies the restart policy to an exit.
func (m *Manager) shouldRestart(mc model.Machine, r *run) bool {
	switch restartPolicy(mc.Config) {
	case "always":
		return true
	case "on-failure":
		return r.err != nil || r.status.Code != 0
	}
	return false
}
