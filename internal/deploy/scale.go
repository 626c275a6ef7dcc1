package deploy

import (
	"context"
	"fmt"
	"sort"
	"strconv"

	"github.com/torpor-dev/torpor/internal/appconfig"
	"github.com/torpor-dev/torpor/internal/model"
)

// Scale brings process group's machine count to n, under the app lease:
// new machines copy the config of the group's newest machine (with volumes
// of the same names, free or new) and pass their checks before the proxy
// routes to them; machines over the count go stopped ones first, then
// suspended, then started, newest first.
func Scale(ctx context.Context, api API, app, group string, n int, opts Options) (Result, error) {
	if n < 0 {
		return Result{}, model.Errorf(model.KindInvalid, "count must be 0 or more, got %d", n)
	}
	if group == "" {
		group = appconfig.DefaultProcessGroup
	}
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = appconfig.DefaultWaitTimeout
	}
	if opts.Drain <= 0 {
		opts.Drain = defaultDrain
	}
	d := &deployment{api: api, app: app, opts: opts, cfg: &appconfig.App{}, res: Result{App: app, Strategy: "scale"}}
	release, err := d.holdApp(ctx)
	if err != nil {
		return Result{}, err
	}
	defer release()
	groups, _, err := d.groups()
	if err != nil {
		return d.res, err
	}
	ms := groups[group]
	if len(ms) == 0 {
		return d.res, model.Errorf(model.KindInvalid, "process group %s of app %s has no machines: deploy it first", group, app)
	}
	tmpl := ms[len(ms)-1]
	d.image = pinned(tmpl.Config.Image, tmpl.ImageRef)
	d.res.Image = d.image
	d.res.Release, _ = strconv.Atoi(tmpl.Config.Metadata[appconfig.MetaReleaseVersion])
	for len(ms) < n {
		cfg := tmpl.Config
		var mounts []appconfig.Mount
		for _, mt := range cfg.Mounts {
			mounts = append(mounts, appconfig.Mount{Source: mt.Name, Destination: mt.Path, InitialSizeGB: max(1, mt.SizeGB)})
		}
		cfg, err := d.newVolumes(mounts, cfg)
		if err != nil {
			return d.res, err
		}
		c, err := d.createWith(group, cfg, true)
		if err != nil {
			if c.ID != "" {
				d.rollback([]change{{group: group, id: c.ID}})
			}
			return d.res, err
		}
		ms = append(ms, c.Machine)
		d.record(MachineResult{ID: c.ID, Group: group, Action: "created", NewVersion: c.Version, Checks: c.checks, State: c.State})
	}
	if len(ms) > n {
		sort.SliceStable(ms, func(i, j int) bool {
			ri, rj := removeRank(ms[i].State), removeRank(ms[j].State)
			if ri != rj {
				return ri < rj
			}
			return ms[i].CreatedAt.After(ms[j].CreatedAt)
		})
		for _, m := range ms[:len(ms)-n] {
			if err := d.destroy(group, m); err != nil {
				return d.res, err
			}
		}
	}
	return d.res, nil
}

// removeRank orders the machines a scale down removes first.
func removeRank(s model.State) int {
	switch s {
	case model.StateCreated, model.StateStopped:
		return 0
	case model.StateSuspended:
		return 1
	}
	return 2
}

// destroy removes machine m of group under its lease, draining it first
// if it serves.
func (d *deployment) destroy(group string, m model.Machine) error {
	ctx, unlease, err := d.leaseMachine(m.ID)
	if err != nil {
		return err
	}
	defer unlease()
	if m.State == model.StateStarted {
		if err := d.api.Cordon(ctx, d.app, m.ID, true); err == nil {
			sleep(ctx, d.opts.Drain)
		}
	}
	d.emit(m.ID, group, "destroy", "%s: destroying (%s)", m.ID, m.State)
	if err := d.api.Destroy(ctx, d.app, m.ID, true); err != nil {
		return fmt.Errorf("machine %s: destroy: %w", m.ID, err)
	}
	d.record(MachineResult{ID: m.ID, Group: group, Action: "destroyed", OldVersion: m.Version, Checks: "-", State: model.StateDestroyed})
	return nil
}
