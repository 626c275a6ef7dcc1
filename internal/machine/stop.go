package machine

import (
	"context"
	"os"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/store"
	"github.com/torpor-dev/torpor/internal/volume"
)

// Stop stops a machine. A started machine gets the stop signal and is killed
// if it has not exited within the timeout; a suspended machine's snapshot is
// discarded (invariant 3). Stopping a stopped machine succeeds.
func (m *Manager) Stop(ctx context.Context, app, id string, req model.StopRequest) error {
	if err := checkStopRequest(&req); err != nil {
		return err
	}
	ctx, mc, end, err := m.begin(ctx, app, id)
	if err != nil {
		return err
	}
	defer end()
	m.endRestarts(id) // the user's word overrides the restart policy's
	switch mc.State {
	case model.StateStarted:
		return m.stopRunning(ctx, mc, req)
	case model.StateSuspended:
		return m.discardSuspended(ctx, mc, model.EventStop)
	case model.StateStopped, model.StateCreated:
		return nil
	}
	return model.Errorf(model.KindConflict, "machine %s is %s and cannot be stopped", id, mc.State)
}

// stopRunning signals the sandbox, waits for it to exit, kills it if it does
// not, and leaves the machine stopped.
func (m *Manager) stopRunning(ctx context.Context, mc model.Machine, req model.StopRequest) error {
	signal, timeout := m.stopParams(mc.Config, req)
	if _, err := m.enter(mc.ID, model.StateStopping, nil); err != nil {
		return err
	}
	m.fault("stop/after-commit-stopping", mc.ID)
	r := m.currentRun(mc.ID)
	m.endRun(mc.ID)
	exited := false
	if r != nil && m.rt.Signal(ctx, sandboxID(mc.ID), signal) == nil {
		select {
		case <-r.done:
			exited = true
		case <-time.After(timeout):
		case <-ctx.Done():
		}
	}
	m.fault("stop/after-signal", mc.ID)
	if err := m.rt.Kill(context.Background(), sandboxID(mc.ID)); err != nil {
		m.log.Warn("kill", "machine", mc.ID, "err", err)
	}
	m.fault("stop/after-kill", mc.ID)
	details := &model.StopDetails{Signal: signal, ExitedAfterSignal: exited}
	if exited {
		details.ExitCode = &r.status.Code
	}
	if _, err := m.syncVolumes(ctx, mc); err != nil {
		details.Warnings = append(details.Warnings, "sync volumes: "+err.Error())
	}
	_, err := m.enter(mc.ID, model.StateStopped, nil, event(model.EventStop, "stopped", model.SourceOf(ctx), details))
	if err == nil {
		m.fault("stop/after-commit-stopped", mc.ID)
	}
	return err
}

func (m *Manager) stopParams(cfg model.MachineConfig, req model.StopRequest) (string, time.Duration) {
	signal, timeout := "SIGINT", m.cfg.StopTimeout
	if sc := cfg.StopConfig; sc != nil {
		if sc.Signal != nil && *sc.Signal != "" {
			signal = *sc.Signal
		}
		if sc.Timeout != nil && sc.Timeout.Duration > 0 {
			timeout = sc.Timeout.Duration
		}
	}
	if req.Signal != "" {
		signal = req.Signal
	}
	if req.Timeout.Duration > 0 {
		timeout = req.Timeout.Duration
	}
	return signal, timeout
}

// discardSuspended throws a suspended machine's snapshot away — the record
// first, then the image — and leaves the machine stopped. op is the
// operation that discards it: model.EventStop or model.EventUpdate.
func (m *Manager) discardSuspended(ctx context.Context, mc model.Machine, op string) error {
	var details model.EventDetails = &model.StopDetails{SnapshotDiscarded: true}
	if op == model.EventUpdate {
		details = &model.UpdateDetails{SnapshotDiscarded: true, PreviousState: mc.State}
	}
	_, err := m.enter(mc.ID, model.StateStopped, deleteSnapshot, event(op, string(model.StateStopped), model.SourceOf(ctx), details))
	if err != nil {
		return err
	}
	m.fault("discard/after-commit", mc.ID)
	// A sandbox precreated for the resume (warm.go) goes with the snapshot.
	if err := m.rt.Kill(ctx, sandboxID(mc.ID)); err != nil {
		return err
	}
	if err := m.discardSnapshotDirs(mc.ID); err != nil {
		return err
	}
	m.fault("discard/after-remove", mc.ID)
	return nil
}

// Destroy removes a machine and everything it has on disk. A started machine
// is only destroyed with force.
func (m *Manager) Destroy(ctx context.Context, app, id string, force bool) error {
	ctx, mc, end, err := m.begin(ctx, app, id)
	if err != nil {
		return err
	}
	defer end()
	m.endRestarts(id) // the user's word overrides the restart policy's
	switch {
	case mc.State == model.StateDestroyed:
		return nil
	case mc.State == model.StateStarted && !force:
		return model.Errorf(model.KindConflict, "machine %s is started; stop it first or destroy with force=true", id)
	}
	return m.destroy(ctx, mc)
}

func (m *Manager) destroy(ctx context.Context, mc model.Machine) error {
	_, err := m.enter(mc.ID, model.StateDestroying, deleteSnapshot)
	if err != nil {
		return err
	}
	m.fault("destroy/after-commit-destroying", mc.ID)
	m.endRun(mc.ID)
	if err := m.rt.Kill(ctx, sandboxID(mc.ID)); err != nil {
		return err
	}
	m.fault("destroy/after-kill", mc.ID)
	m.syncVolumesLogged(ctx, mc)
	m.closeConsole(mc.ID)
	m.closeLog(mc.ID)
	if m.cfg.GuestAPI != nil {
		m.cfg.GuestAPI.Close(mc.ID)
		if err := os.RemoveAll(m.guestAPIDir(mc.ID)); err != nil {
			return err
		}
	}
	if m.cfg.Network != nil {
		if err := m.cfg.Network.Detach(ctx, mc.ID); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(m.machineDir(mc.ID)); err != nil {
		return err
	}
	m.fault("destroy/after-remove", mc.ID)
	// Its volumes are released (their data kept) and its ports let go with
	// its destruction, once its sandbox is gone.
	_, err = m.enter(mc.ID, model.StateDestroyed, func(tx *store.Tx, rec *model.Machine) error {
		rec.PrivateIP = ""
		if err := tx.DeleteLease(rec.ID); err != nil { // a destroyed machine has no lease to honour
			return err
		}
		if err := releasePorts(tx, rec.App, rec.ID, nil); err != nil {
			return err
		}
		return volume.Detach(tx, rec.App, rec.ID)
	}, event(model.EventDestroy, "destroyed", model.SourceOf(ctx), nil))
	if err == nil {
		m.fault("destroy/after-commit-destroyed", mc.ID)
	}
	return err
}
