package machine

import (
	"context"
	"errors"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/store"
)

// Claimer is what a Manager asks of the cluster its host belongs to
// (package cluster implements it over etcd; nil on a single host). The
// Manager stays the source of truth for its own machines; the Claimer says
// whether this host may change one now, and takes the cluster-wide claims
// that no host's store can take alone.
type Claimer interface {
	// Own fails unless this host owns machine id and holds its cluster
	// lease, so that it may change the machine: a host that lost its lease
	// is fenced (KindUnavailable), and a machine another host owns now is
	// not this host's to touch (KindConflict).
	Own(ctx context.Context, machineID string) error
	// Admit records a new machine as this host's (reserving its CPUs and
	// memory) before the Manager commits it.
	Admit(ctx context.Context, mc model.Machine) error
	// ClaimSnapshot takes the cluster-wide claim of snapshot snap of mc
	// before it is restored: at most one claim of a snapshot ever succeeds,
	// on any host (DESIGN.md, invariant 2 at cluster scope). An error
	// wrapping ErrClaimedElsewhere means the snapshot must not be restored
	// (the machine cold-starts instead); any other error leaves the machine
	// as it is.
	ClaimSnapshot(ctx context.Context, mc model.Machine, snap model.Snapshot) error
}

// ErrClaimedElsewhere is the cause of a ClaimSnapshot refused because the
// snapshot was claimed before, here or on another host.
var ErrClaimedElsewhere = errors.New("snapshot already claimed in the cluster")

// own checks with the Claimer, if any, that this host may change machine id.
func (m *Manager) own(ctx context.Context, id string) error {
	if m.cfg.Claimer == nil {
		return nil
	}
	return m.cfg.Claimer.Own(ctx, id)
}

// claimInCluster takes the cluster-wide claim of the suspended machine's
// snapshot, if there is a Claimer and a sealed snapshot. It returns why to
// cold-start instead when the snapshot was claimed before (fallback), or an
// error that must leave the machine suspended (the cluster cannot be asked).
func (m *Manager) claimInCluster(ctx context.Context, mc model.Machine) (fallback, err error) {
	if m.cfg.Claimer == nil {
		return nil, nil
	}
	var snap model.Snapshot
	var ok bool
	if err := m.store.View(func(tx *store.Tx) (err error) {
		snap, ok, err = tx.Snapshot(mc.ID)
		return err
	}); err != nil || !ok || snap.State != model.SnapshotSealed {
		return nil, err // the local claim says what is wrong with it
	}
	err = m.cfg.Claimer.ClaimSnapshot(ctx, mc, snap)
	if errors.Is(err, ErrClaimedElsewhere) {
		return err, nil
	}
	return nil, err
}

// WithGuestDefaults returns g with the defaults a new machine gets for what
// it leaves unset (CPUs, memory), for placing a machine before it exists.
func WithGuestDefaults(g model.Guest) model.Guest {
	if g.CPUs == 0 {
		g.CPUs = defaultCPUs
	}
	if g.MemoryMB == 0 {
		g.MemoryMB = defaultMemoryMB
	}
	return g
}
