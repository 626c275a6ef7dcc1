package machine

import (
	"context"
	"regexp"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/store"
)

var machineNameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// Create records a new machine and, unless req.SkipLaunch, cold-starts it.
func (m *Manager) Create(ctx context.Context, app string, req model.CreateMachineRequest) (model.Machine, error) {
	if err := checkCreate(&req); err != nil {
		return model.Machine{}, err
	}
	cfg := req.Config
	if err := m.normalize(&cfg); err != nil {
		return model.Machine{}, err
	}
	id := newID(7)
	name := req.Name
	if name == "" {
		name = "machine-" + id[:6]
	}
	now := time.Now().UTC()
	mc := model.Machine{
		ID: id, Name: name, App: app, State: model.StateCreated, Region: m.cfg.Region,
		Config: cfg, ImageRef: model.ImageRef{Repository: cfg.Image}, Version: newID(6),
		CreatedAt: now, UpdatedAt: now, SandboxID: sandboxID(id),
	}
	err := m.store.Update(func(tx *store.Tx) error {
		if _, err := tx.App(app); err != nil {
			return err
		}
		if err := uniqueName(tx, app, name, ""); err != nil {
			return err
		}
		if err := tx.PutMachine(mc); err != nil {
			return err
		}
		if err := tx.PutConfig(id, mc.Version, cfg); err != nil {
			return err
		}
		_, err := tx.AppendEvent(id, event("launch", "created", model.SourceUser, nil))
		return err
	})
	if err != nil || req.SkipLaunch {
		return mc, err
	}
	unlock, err := m.lock(ctx, id)
	if err != nil {
		return mc, err
	}
	defer unlock()
	ctx, cancel := detach(ctx)
	defer cancel()
	return m.coldStart(ctx, mc, "")
}

func uniqueName(tx *store.Tx, app, name, exceptID string) error {
	ms, err := tx.Machines(app)
	if err != nil {
		return err
	}
	for _, other := range ms {
		if other.Name == name && other.ID != exceptID && other.State != model.StateDestroyed {
			return model.Errorf(model.KindConflict, "name %q is already used by machine %s in app %q", name, other.ID, app)
		}
	}
	return nil
}

// Update replaces a machine's config. A started or suspended machine is
// cold-started with the new config (a suspended machine's snapshot is
// discarded first: it belongs to the old config); a stopped one stays stopped.
func (m *Manager) Update(ctx context.Context, app, id string, req model.UpdateMachineRequest) (model.Machine, error) {
	if err := checkName(req.Name); err != nil {
		return model.Machine{}, err
	}
	cfg := req.Config
	if err := m.normalize(&cfg); err != nil {
		return model.Machine{}, err
	}
	ctx, mc, end, err := m.begin(ctx, app, id)
	if err != nil {
		return mc, err
	}
	defer end()
	prev := mc.State
	switch prev {
	case model.StateStarted:
		if err := m.stopRunning(ctx, mc, model.StopRequest{}); err != nil {
			return mc, err
		}
	case model.StateSuspended:
		if err := m.discardSuspended(ctx, mc, model.StateStopped, "update"); err != nil {
			return mc, err
		}
	case model.StateCreated, model.StateStopped:
	default:
		return mc, model.Errorf(model.KindConflict, "machine %s is %s and cannot be updated now", id, prev)
	}
	m.fault("update/after-stop", id)
	version := newID(6)
	mc, err = m.commit(id, func(tx *store.Tx, rec *model.Machine) error {
		if req.Name != "" && req.Name != rec.Name {
			if err := uniqueName(tx, app, req.Name, id); err != nil {
				return err
			}
			rec.Name = req.Name
		}
		rec.Config, rec.Version, rec.ImageRef = cfg, version, model.ImageRef{Repository: cfg.Image}
		return tx.PutConfig(id, version, cfg)
	}, event("update", "updated", model.SourceUser, map[string]any{"version": version, "previous_state": string(prev)}))
	if err != nil || req.SkipLaunch || (prev != model.StateStarted && prev != model.StateSuspended) {
		return mc, err
	}
	m.fault("update/after-commit-config", id)
	return m.coldStart(ctx, mc, "")
}

// Get returns a machine with its recent events.
func (m *Manager) Get(ctx context.Context, app, id string) (model.Machine, error) {
	mc, err := m.machine(app, id)
	if err != nil {
		return mc, err
	}
	mc.Events, err = m.events(id, 10)
	return mc, err
}

// List returns the app's machines, destroyed ones excepted.
func (m *Manager) List(ctx context.Context, app string) ([]model.Machine, error) {
	var out []model.Machine
	err := m.store.View(func(tx *store.Tx) error {
		if _, err := tx.App(app); err != nil {
			return err
		}
		ms, err := tx.Machines(app)
		for _, mc := range ms {
			if mc.State != model.StateDestroyed {
				out = append(out, mc)
			}
		}
		return err
	})
	return out, err
}

// Events returns the machine's events, newest first.
func (m *Manager) Events(ctx context.Context, app, id string) ([]model.Event, error) {
	if _, err := m.machine(app, id); err != nil {
		return nil, err
	}
	return m.events(id, 0)
}

func (m *Manager) events(id string, limit int) ([]model.Event, error) {
	var evs []model.Event
	err := m.store.View(func(tx *store.Tx) error {
		var err error
		evs, err = tx.Events(id, limit)
		return err
	})
	return evs, err
}

// Wait blocks until the machine is in one of states, or ctx ends (a
// KindTimeout error when its deadline passed).
func (m *Manager) Wait(ctx context.Context, app, id string, states []model.State) (model.Machine, error) {
	for {
		changed := m.changes(id)
		mc, err := m.machine(app, id)
		if err != nil {
			return mc, err
		}
		for _, s := range states {
			if mc.State == s {
				return mc, nil
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return mc, model.Errorf(model.KindTimeout, "timed out waiting for machine %s to be %v; it is %s", id, states, mc.State)
		}
	}
}

// Cordon marks a machine as (not) taking traffic from the proxy.
func (m *Manager) Cordon(ctx context.Context, app, id string, cordoned bool) error {
	if _, err := m.machine(app, id); err != nil {
		return err
	}
	typ := "uncordon"
	if cordoned {
		typ = "cordon"
	}
	_, err := m.commit(id, func(_ *store.Tx, rec *model.Machine) error {
		rec.Cordoned = cordoned
		return nil
	}, event(typ, typ+"ed", model.SourceUser, nil))
	return err
}
