package machine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/runtime"
	"github.com/torpor-dev/torpor/internal/store"
)

// A run is one supervised life of a machine's sandbox, from boot or restore
// until its process exits.
type run struct {
	done    chan struct{} // closed when the sandbox's process has exited
	status  runtime.ExitStatus
	err     error
	started time.Time // when supervision began (boot, restore or adoption)
}

// supervise watches the machine's sandbox until it exits. An exit that no
// operation caused (the process ended on its own) stops the machine and
// applies its restart policy. A Wait that fails while the sandbox may still
// run (runsc missing or failing for a moment) is not an exit: it is retried,
// with backoff, for as long as the run is current and the sandbox is not
// known to have stopped (issue 17's F8).
func (m *Manager) supervise(id string) *run {
	r := &run{done: make(chan struct{}), started: time.Now()}
	m.mu.Lock()
	if !m.closed {
		m.runs[id] = r
	}
	m.mu.Unlock()
	go func() {
		backoff := waitRetryMin
		for {
			r.status, r.err = m.rt.Wait(context.Background(), sandboxID(id))
			if r.err == nil || errors.Is(r.err, runtime.ErrClosed) || errors.Is(r.err, runtime.ErrNotFound) || m.currentRun(id) != r {
				break
			}
			if alive, known := m.sandboxAlive(context.Background(), id); known && !alive {
				break
			}
			m.log.Warn("waiting on the sandbox failed, but it may still run: retrying", "machine", id, "err", r.err, "in", backoff)
			time.Sleep(backoff)
			backoff = min(2*backoff, waitRetryMax)
		}
		close(r.done)
		if errors.Is(r.err, runtime.ErrClosed) {
			return // the daemon is stopping; the sandbox runs on, to be adopted
		}
		m.onExit(id, r)
	}()
	return r
}

// Bounds of the backoff between retries of a failed Wait.
const (
	waitRetryMin = 100 * time.Millisecond
	waitRetryMax = 5 * time.Second
)

// sandboxAlive reports whether machine id's sandbox runs, and whether that
// is known: the runtime's State, else its Checker (which can tell when the
// runtime's tools cannot).
func (m *Manager) sandboxAlive(ctx context.Context, id string) (alive, known bool) {
	if st, err := m.rt.State(ctx, sandboxID(id)); err == nil {
		return st == runtime.StatusRunning, true
	}
	if c, ok := m.rt.(runtime.Checker); ok {
		if running, err := c.Running(ctx, sandboxID(id)); err == nil {
			return running, true
		}
	}
	return false, false
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
	unlock, err := m.lock(model.WithSource(context.Background(), model.SourceFlyd), id)
	if err != nil {
		return
	}
	defer unlock()
	if m.currentRun(id) != r {
		return // an operation (stop, suspend, destroy) ended this run itself
	}
	m.endRun(id)
	rec, err := m.machineByID(id)
	if err != nil {
		m.log.Warn("sandbox exited", "machine", id, "err", err)
		return
	}
	plan := m.planRestart(rec, r, time.Since(r.started))
	mc, err := m.enter(id, model.StateStopped, func(_ *store.Tx, mc *model.Machine) error {
		if mc.State != model.StateStarted {
			return fmt.Errorf("machine %s is %s, not started", id, mc.State)
		}
		return nil
	}, event(model.EventExit, "stopped", model.SourceFlyd, exitDetails(r, plan.restart && !plan.giveUp)))
	if err != nil {
		m.endRestarts(id)
		m.log.Warn("sandbox exited", "machine", id, "err", err)
		return
	}
	m.rt.Kill(context.Background(), sandboxID(id))
	m.syncVolumesLogged(context.Background(), mc)
	ctx := model.WithSource(context.Background(), model.SourceFlyd)
	if plan.restart && !plan.giveUp && m.own(ctx, id) == nil {
		m.scheduleRestart(mc, plan)
		return
	}
	m.endRestarts(id)
	if plan.giveUp {
		m.scheduleRestart(mc, plan) // records that the series gave up
	}
	if mc.Config.AutoDestroy {
		// config.auto_destroy: a machine whose process is done destroys itself.
		if err := m.destroy(ctx, mc); err != nil {
			m.log.Warn("auto-destroy failed", "machine", id, "err", err)
		}
	}
}

func exitDetails(r *run, restarting bool) *model.ExitDetails {
	d := &model.ExitDetails{ExitCode: r.status.Code, Signal: r.status.Signal, OOMKilled: r.status.OOMKilled}
	if r.err != nil {
		d.Error = r.err.Error()
	}
	d.ExitEvent = &model.FlyExitEvent{ExitCode: r.status.Code, Restarting: restarting, OOMKilled: r.status.OOMKilled,
		ExitedAt: time.Now().UTC().Format(time.RFC3339Nano)}
	if r.status.Signal != "" {
		d.ExitEvent.Signal = int(unix.SignalNum(r.status.Signal))
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

// machineByID reads machine id, whatever its app.
func (m *Manager) machineByID(id string) (model.Machine, error) {
	var mc model.Machine
	err := m.store.View(func(tx *store.Tx) (err error) {
		mc, err = tx.Machine(id)
		return err
	})
	return mc, err
}
