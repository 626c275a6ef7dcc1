package machine

import (
	"context"
	"fmt"
	"time"

	"github.com/torpor-dev/torpor/internal/identifiers"
	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/store"
	"github.com/torpor-dev/torpor/internal/volume"
)

// Create records a new machine and, unless req.SkipLaunch, cold-starts it.
// The answer carries the warnings of what torpor accepted without acting on
// it and, with req.LeaseTTL, the nonce of the lease the caller now holds.
func (m *Manager) Create(ctx context.Context, app string, req model.CreateMachineRequest) (model.Machine, error) {
	if err := checkCreate(&req); err != nil {
		return model.Machine{}, err
	}
	cfg := req.Config
	if err := m.checkTenantImage(ctx, &cfg); err != nil {
		return model.Machine{}, err
	}
	if err := m.normalize(&cfg); err != nil {
		return model.Machine{}, err
	}
	if err := m.store.View(func(tx *store.Tx) error { _, err := tx.App(app); return err }); err != nil {
		return model.Machine{}, err
	}
	// The image is resolved (and pulled if the app does not have it) before
	// anything is recorded: a failed pull creates nothing.
	img, err := m.resolveImage(ctx, app, &cfg)
	if err != nil {
		return model.Machine{}, err
	}
	defer img.release()
	id := identifiers.NewMachineID()
	name := req.Name
	if name == "" {
		name = identifiers.DefaultMachineName(id)
	}
	now := time.Now().UTC()
	version := identifiers.NewVersion()
	mc := model.Machine{
		ID: id, Name: name, App: app, State: model.StateCreated, Region: m.cfg.Region,
		Config: cfg, ImageRef: img.ref, Version: version, InstanceID: version,
		CreatedAt: now, UpdatedAt: now, SandboxID: sandboxID(id), Cordoned: req.SkipServiceRegistration,
	}
	warnings := m.warnings(req.NotActedOn, req.Region)
	if m.cfg.Claimer != nil {
		if err := m.cfg.Claimer.Admit(ctx, mc); err != nil {
			return model.Machine{}, err
		}
	}
	var created []model.Event
	var lease model.Lease
	err = m.store.Update(func(tx *store.Tx) error {
		created = created[:0]
		if _, err := tx.App(app); err != nil {
			return err
		}
		if err := uniqueName(tx, app, name, ""); err != nil {
			return err
		}
		if err := m.claimPorts(tx, app, id, &cfg); err != nil {
			return err
		}
		// The machine takes its volumes in the transaction that creates it.
		if err := volume.Attach(tx, app, id, mc.Config.Mounts); err != nil {
			return err
		}
		if err := tx.PutMachine(mc); err != nil {
			return err
		}
		if err := tx.PutConfig(id, mc.Version, cfg, mc.ImageRef); err != nil {
			return err
		}
		if req.LeaseTTL > 0 {
			var err error
			if lease, err = m.putLease(ctx, tx, mc, req.LeaseTTL); err != nil {
				return err
			}
		}
		launch, err := tx.AppendEvent(id, event(model.EventLaunch, "created", model.SourceOf(ctx),
			&model.LaunchDetails{Version: version, Warnings: warnings, ImageDigest: img.ref.Digest, ImageNote: img.note}))
		created = append(created, launch)
		return err
	})
	if err != nil {
		return mc, err
	}
	m.publish(model.Change{Machine: mc, Events: created, At: now, Source: model.SourceOf(ctx)})
	answer := func(mc model.Machine, err error) (model.Machine, error) {
		mc.Nonce, mc.Warnings = lease.Nonce, warnings
		return mc, err
	}
	if req.SkipLaunch {
		return answer(mc, nil)
	}
	unlock, err := m.lock(ctx, id)
	if err != nil {
		return answer(mc, err)
	}
	defer unlock()
	ctx, cancel := detach(ctx)
	defer cancel()
	return answer(m.coldStart(ctx, mc, nil))
}

// warnings are the warnings of a create or update: the Fly-only names it
// gave, and a region other than this host's.
func (m *Manager) warnings(names []model.NotActedOn, region string) []string {
	if region != "" && region != m.cfg.Region {
		names = append(names, model.NotActedOn{Path: "region",
			Reason: fmt.Sprintf("every machine runs on this host, in region %q", m.cfg.Region)})
	}
	return model.Warnings(names)
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
// The torpor extensions the request's config does not give are kept from
// the current config (MachineConfig.KeepExtensions), so that a client that
// only knows Fly's fields loses none of them. The new version is the
// machine's instance_id too.
func (m *Manager) Update(ctx context.Context, app, id string, req model.UpdateMachineRequest) (model.Machine, error) {
	if err := checkUpdate(&req); err != nil {
		return model.Machine{}, err
	}
	ctx, mc, end, err := m.begin(ctx, app, id)
	if err != nil {
		return mc, err
	}
	defer end()
	if req.CurrentVersion != "" && req.CurrentVersion != mc.Version {
		return mc, model.Errorf(model.KindConflict, "machine %s is at version %s, not current_version %s: it was updated meanwhile", id, mc.Version, req.CurrentVersion)
	}
	cfg := req.Config
	cfg.KeepExtensions(mc.Config, req.Given)
	if err := m.checkTenantImage(ctx, &cfg); err != nil {
		return mc, err
	}
	if err := m.normalize(&cfg); err != nil {
		return mc, err
	}
	// Refuse a port the app may not have, or a volume another machine
	// holds, before stopping anything.
	if err := m.store.View(func(tx *store.Tx) error { return m.checkPorts(tx, app, &cfg) }); err != nil {
		return mc, err
	}
	if err := m.canAttach(app, id, cfg.Mounts); err != nil {
		return mc, err
	}
	// So is the image (an update with the same tag resolves it again: a
	// deploy); a failed pull leaves the machine as it was.
	img, err := m.resolveImage(ctx, app, &cfg)
	if err != nil {
		return mc, err
	}
	defer img.release()
	m.endRestarts(id) // a new config starts a new series
	prev := mc.State
	switch prev {
	case model.StateStarted:
		if err := m.stopRunning(ctx, mc, model.StopRequest{}); err != nil {
			return mc, err
		}
	case model.StateSuspended:
		if err := m.discardSuspended(ctx, mc, model.EventUpdate); err != nil {
			return mc, err
		}
	case model.StateCreated, model.StateStopped:
	default:
		return mc, model.Errorf(model.KindConflict, "machine %s is %s and cannot be updated now", id, prev)
	}
	m.fault("update/after-stop", id)
	version := identifiers.NewVersion()
	warnings := m.warnings(req.NotActedOn, req.Region)
	var lease model.Lease
	mc, err = m.commit(id, func(tx *store.Tx, rec *model.Machine) error {
		if req.Name != "" && req.Name != rec.Name {
			if err := uniqueName(tx, app, req.Name, id); err != nil {
				return err
			}
			rec.Name = req.Name
		}
		if err := m.claimPorts(tx, app, id, &cfg); err != nil {
			return err
		}
		if err := releasePorts(tx, app, id, &cfg); err != nil {
			return err
		}
		if err := volume.Attach(tx, app, id, cfg.Mounts); err != nil {
			return err
		}
		rec.Config, rec.Version, rec.InstanceID, rec.ImageRef = cfg, version, version, img.ref
		if req.SkipServiceRegistration {
			rec.Cordoned = true
		}
		if req.LeaseTTL > 0 {
			var err error
			if lease, err = m.putLease(ctx, tx, *rec, req.LeaseTTL); err != nil {
				return err
			}
		}
		return tx.PutConfig(id, version, cfg, rec.ImageRef)
	}, event(model.EventUpdate, "updated", model.SourceOf(ctx), &model.UpdateDetails{Version: version, PreviousState: prev,
		Warnings: warnings, ImageDigest: img.ref.Digest, ImageNote: img.note}))
	answer := func(mc model.Machine, err error) (model.Machine, error) {
		mc.Nonce, mc.Warnings = lease.Nonce, warnings
		return mc, err
	}
	if err != nil || req.SkipLaunch || (prev != model.StateStarted && prev != model.StateSuspended) {
		return answer(mc, err)
	}
	m.fault("update/after-commit-config", id)
	return answer(m.coldStart(ctx, mc, nil))
}

// Get returns a machine with its recent events.
func (m *Manager) Get(ctx context.Context, app, id string) (model.Machine, error) {
	mc, err := m.machine(app, id)
	if err != nil {
		return mc, err
	}
	mc.Events, err = m.events(id, 10)
	return m.withChecks(mc), err
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
	for i := range out {
		out[i] = m.withChecks(out[i])
	}
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
	names := make([]string, len(states))
	for i, st := range states {
		names[i] = string(st)
	}
	return m.WaitFor(ctx, app, id, model.WaitOptions{States: names})
}

// Cordon marks a machine as (not) taking traffic from the proxy.
func (m *Manager) Cordon(ctx context.Context, app, id string, cordoned bool) error {
	ctx, _, end, err := m.begin(ctx, app, id)
	if err != nil {
		return err
	}
	defer end()
	typ := "uncordon"
	if cordoned {
		typ = "cordon"
	}
	if err := m.own(ctx, id); err != nil {
		return err
	}
	_, err = m.commit(id, func(_ *store.Tx, rec *model.Machine) error {
		rec.Cordoned = cordoned
		return nil
	}, event(typ, typ+"ed", model.SourceOf(ctx), nil))
	return err
}
