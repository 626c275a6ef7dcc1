package machine

import (
	"context"
	"time"

	"github.com/torpor-dev/torpor/internal/identifiers"
	"github.com/torpor-dev/torpor/internal/image"
	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/store"
	"github.com/torpor-dev/torpor/internal/volume"
)

// CreateApp creates an app.
func (m *Manager) CreateApp(ctx context.Context, app model.App) (model.App, error) {
	if err := identifiers.AppName("app_name", app.Name); err != nil {
		return app, err
	}
	if app.Org == "" {
		app.Org = "personal"
	}
	app.CreatedAt = time.Now().UTC()
	return app, m.store.Update(func(tx *store.Tx) error { return tx.CreateApp(app) })
}

// GetApp returns an app.
func (m *Manager) GetApp(ctx context.Context, name string) (model.App, error) {
	var app model.App
	err := m.store.View(func(tx *store.Tx) error {
		var err error
		app, err = tx.App(name)
		return err
	})
	return app, err
}

// ListApps returns every app.
func (m *Manager) ListApps(ctx context.Context) ([]model.App, error) {
	var apps []model.App
	err := m.store.View(func(tx *store.Tx) error {
		var err error
		apps, err = tx.Apps()
		return err
	})
	return apps, err
}

// DeleteApp deletes an app that has no machines left but destroyed ones,
// forgetting those too.
func (m *Manager) DeleteApp(ctx context.Context, name string) error {
	err := m.store.Update(func(tx *store.Tx) error {
		if _, err := tx.App(name); err != nil {
			return err
		}
		ms, err := tx.Machines(name)
		if err != nil {
			return err
		}
		for _, mc := range ms {
			if mc.State != model.StateDestroyed {
				return model.Errorf(model.KindConflict, "app %q still has machine %s (%s); destroy its machines first", name, mc.ID, mc.State)
			}
		}
		if err := volume.HasVolumes(tx, name); err != nil {
			return err
		}
		for _, mc := range ms {
			if err := tx.DeleteMachine(mc.ID); err != nil {
				return err
			}
		}
		if err := releasePorts(tx, name, "", nil); err != nil {
			return err
		}
		// The app's image references go with it (an app made again under
		// the name starts with none).
		if err := tx.DeleteImageTags(name); err != nil {
			return err
		}
		if err := tx.DeleteAppLease(name); err != nil {
			return err
		}
		return tx.DeleteApp(name)
	})
	if err != nil {
		return err
	}
	if m.cfg.Images != nil {
		if _, err := m.cfg.Images.Prune(ctx, image.Scope{Admin: true}, false); err != nil {
			m.log.Warn("collecting the deleted app's images", "app", name, "err", err)
		}
	}
	if m.cfg.Network == nil {
		return nil
	}
	return m.cfg.Network.DeleteApp(ctx, name)
}
