package machine

import (
	"time"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/store"
)

// change edits a machine record inside a store transaction.
type change func(tx *store.Tx, mc *model.Machine) error

// commit applies ch to the stored machine and appends evs, all in one
// transaction, then wakes waiters. It returns the machine as committed.
func (m *Manager) commit(id string, ch change, evs ...model.Event) (model.Machine, error) {
	var mc model.Machine
	err := m.store.Update(func(tx *store.Tx) error {
		var err error
		if mc, err = tx.Machine(id); err != nil {
			return err
		}
		if ch != nil {
			if err := ch(tx, &mc); err != nil {
				return err
			}
		}
		mc.UpdatedAt = time.Now().UTC()
		if err := tx.PutMachine(mc); err != nil {
			return err
		}
		for _, ev := range evs {
			if _, err := tx.AppendEvent(id, ev); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		m.notify(id)
		if m.cfg.OnChange != nil {
			m.cfg.OnChange()
		}
	}
	return mc, err
}

// setState is a change that only moves the machine to state s.
func setState(s model.State) change {
	return func(_ *store.Tx, mc *model.Machine) error {
		mc.State = s
		return nil
	}
}

// event builds an event; request carries the details (reasons, timings).
func event(typ, status, source string, request map[string]any) model.Event {
	return model.Event{Type: typ, Status: status, Source: source, Timestamp: nowMillis(), Request: request}
}

// machine reads a machine of app, hiding machines of other apps.
func (m *Manager) machine(app, id string) (model.Machine, error) {
	var mc model.Machine
	err := m.store.View(func(tx *store.Tx) error {
		var err error
		mc, err = tx.Machine(id)
		return err
	})
	if err == nil && mc.App != app {
		err = model.Errorf(model.KindNotFound, "machine %q not found in app %q", id, app)
	}
	return mc, err
}
