package machine

import (
	"context"
	"regexp"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/store"
)

var appNameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// CreateApp creates an app.
func (m *Manager) CreateApp(ctx context.Context, app model.App) (model.App, error) {
	if !appNameRe.MatchString(app.Name) {
		return app, invalid("app_name %q must be 1-63 lowercase letters, digits and dashes, starting with a letter or digit", app.Name)
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
		for _, mc := range ms {
			if err := tx.DeleteMachine(mc.ID); err != nil {
				return err
			}
		}
		return tx.DeleteApp(name)
	})
	if err != nil || m.cfg.Network == nil {
		return err
	}
	return m.cfg.Network.DeleteApp(ctx, name)
}
