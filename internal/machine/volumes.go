package machine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/runtime"
	"github.com/torpor-dev/torpor/internal/store"
	"github.com/torpor-dev/torpor/internal/volume"
)

// Volumes gives machines the volumes their config.mounts name; package
// volume's Manager implements it. Which machine holds which volume is
// recorded in the machine's own store transactions (volume.Attach and
// volume.Detach).
type Volumes interface {
	// Prepare readies a volume attached to the machine for a boot or
	// restore and returns the host directory to bind; an error names the
	// volume and why it cannot be used (its backing file missing, its
	// filesystem corrupt).
	Prepare(ctx context.Context, app, machineID, volumeID string) (string, error)
	// Sync writes what was written to the volume to disk.
	Sync(ctx context.Context, volumeID string) error
}

// CheckStatuses reports the latest results of machines' health checks;
// package checks' Runner implements it.
type CheckStatuses interface {
	Statuses(m model.Machine) []model.CheckStatus
}

// volumeMounts readies the machine's volumes and returns their mounts.
func (m *Manager) volumeMounts(ctx context.Context, mc model.Machine) ([]runtime.Mount, error) {
	if len(mc.Config.Mounts) == 0 {
		return nil, nil
	}
	if m.cfg.Volumes == nil {
		return nil, model.Errorf(model.KindUnavailable, "config.mounts: this daemon runs without volumes")
	}
	mounts := make([]runtime.Mount, 0, len(mc.Config.Mounts))
	for _, mt := range mc.Config.Mounts {
		path, err := m.cfg.Volumes.Prepare(ctx, mc.App, mc.ID, mt.Volume)
		if err != nil {
			return nil, err
		}
		mounts = append(mounts, runtime.Mount{Source: path, Destination: mt.Path})
	}
	return mounts, nil
}

// checkVolumes makes sure the machine's volumes can be mounted before a
// start changes anything: a start refused for a broken volume leaves the
// machine as it was (a suspended one keeps its snapshot for when the
// volume is repaired) and records why.
func (m *Manager) checkVolumes(ctx context.Context, mc model.Machine) error {
	_, err := m.volumeMounts(ctx, mc)
	if err == nil {
		return nil
	}
	msg := fmt.Sprintf("start failed (volumes): %v", err)
	m.commit(mc.ID, nil, event(model.EventStart, "failed", model.SourceOf(ctx),
		&model.StartDetails{BootGeneration: mc.BootGeneration, Error: msg}))
	return model.Wrap(model.KindOf(err), err, fmt.Sprintf("machine %s was not started (it stays %s)", mc.ID, mc.State))
}

// syncVolumes writes the machine's volumes to disk once its sandbox is
// gone (checkpointed, stopped or killed), so that nothing the app wrote
// before is lost to a crash of the host, and a snapshot never outlives
// the writes it remembers.
func (m *Manager) syncVolumes(ctx context.Context, mc model.Machine) (time.Duration, error) {
	if len(mc.Config.Mounts) == 0 || m.cfg.Volumes == nil {
		return 0, nil
	}
	begin := time.Now()
	var errs []error
	for _, mt := range mc.Config.Mounts {
		errs = append(errs, m.cfg.Volumes.Sync(ctx, mt.Volume))
	}
	return time.Since(begin), errors.Join(errs...)
}

// syncVolumesLogged is syncVolumes where a failure can only be reported.
func (m *Manager) syncVolumesLogged(ctx context.Context, mc model.Machine) {
	if _, err := m.syncVolumes(ctx, mc); err != nil {
		m.log.Warn("sync volumes", "machine", mc.ID, "err", err)
	}
}

// canAttach checks, before an update stops the machine, that it may take
// the volumes its new config mounts.
func (m *Manager) canAttach(app, id string, mounts []model.Mount) error {
	return m.store.View(func(tx *store.Tx) error { return volume.CanAttach(tx, app, id, mounts) })
}

// withChecks fills in the machine's health check results.
func (m *Manager) withChecks(mc model.Machine) model.Machine {
	if m.cfg.Checks != nil {
		mc.Checks = m.cfg.Checks.Statuses(mc)
	}
	return mc
}
