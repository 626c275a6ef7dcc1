package machine

import (
	"sync"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/store"
)

// Every change of a machine record goes through write, in one store
// transaction with the events it appends: enter when the machine moves to
// another state (checked against model's transition table, so that an
// illegal transition is refused as an internal error and nothing is
// committed), commit when it does not. After the transaction, waiters are
// woken and subscribers get the change.

// change edits a machine record inside a store transaction. It must not
// change the machine's state: that is enter's.
type change func(tx *store.Tx, mc *model.Machine) error

// enter moves machine id to state to, applying ch and appending evs, all in
// one transaction. It returns the machine as committed.
func (m *Manager) enter(id string, to model.State, ch change, evs ...model.Event) (model.Machine, error) {
	return m.write(id, &to, ch, evs)
}

// commit applies ch to the stored machine and appends evs, all in one
// transaction, leaving its state as it is.
func (m *Manager) commit(id string, ch change, evs ...model.Event) (model.Machine, error) {
	return m.write(id, nil, ch, evs)
}

func (m *Manager) write(id string, to *model.State, ch change, evs []model.Event) (model.Machine, error) {
	var mc model.Machine
	var from model.State
	illegal := false
	stored := make([]model.Event, 0, len(evs))
	err := m.store.Update(func(tx *store.Tx) error {
		var err error
		if mc, err = tx.Machine(id); err != nil {
			return err
		}
		from = mc.State
		if ch != nil {
			if err := ch(tx, &mc); err != nil {
				return err
			}
			if mc.State != from {
				return model.Errorf(model.KindInternal, "machine %s: a record change moved it %s → %s outside the transition path", id, from, mc.State)
			}
		}
		if to != nil {
			if err := from.CheckTransition(id, *to); err != nil {
				illegal = true
				return err
			}
			mc.State = *to
		}
		mc.UpdatedAt = time.Now().UTC()
		if err := tx.PutMachine(mc); err != nil {
			return err
		}
		for _, ev := range evs {
			ev, err := tx.AppendEvent(id, ev)
			if err != nil {
				return err
			}
			stored = append(stored, ev)
		}
		return nil
	})
	if err != nil {
		if illegal {
			m.log.Error("refused an illegal state transition", "machine", id, "from", from, "to", *to)
		}
		return mc, err
	}
	switch {
	case to == nil || *to == from:
	case *to == model.StateSuspended:
		m.kickWarm() // it may get a warm sandbox (warm.go)
	case from == model.StateSuspended:
		// It gives its warm sandbox's slot up (the operation deletes or
		// uses the sandbox); the slot goes to another machine a moment
		// later, off the resume's path.
		m.forgetWarm(id)
		m.kickWarmLater()
	case *to == model.StateStarting && m.cfg.HostMemoryMB > 0:
		// A start takes host memory that warm sandboxes may hold: they
		// yield (hostMemoryFree), a moment later.
		m.kickWarmLater()
	case m.cfg.HostMemoryMB > 0 && holdsResources(from) && !holdsResources(*to):
		m.kickWarm() // memory freed (a stop, an exit): room for one again
	}
	m.notify(id)
	m.publish(model.Change{Machine: mc, From: from, Events: stored, At: mc.UpdatedAt, Source: m.sourceOf(id, stored)})
	return mc, nil
}

// sourceOf is who caused a change of machine id: the source of its first
// event; without events, whoever asked for the operation in progress (see
// lock); else the daemon itself.
func (m *Manager) sourceOf(id string, evs []model.Event) string {
	if len(evs) > 0 && evs[0].Source != "" {
		return evs[0].Source
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.sources[id]; s != "" {
		return s
	}
	return model.SourceFlyd
}

// subscribers of machine changes.
type subscribers struct {
	mu   sync.Mutex
	next int
	fns  map[int]func(model.Change)
}

// Subscribe calls fn after every committed change of a machine (creation
// included, with From ""), in commit order for each machine. fn runs on the
// committing goroutine, with the machine's operation lock held: it must be
// quick and must not call back into the Manager's operations. The returned
// function unsubscribes.
func (m *Manager) Subscribe(fn func(model.Change)) (cancel func()) {
	s := &m.subs
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fns == nil {
		s.fns = map[int]func(model.Change){}
	}
	id := s.next
	s.next++
	s.fns[id] = fn
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.fns, id)
	}
}

func (m *Manager) publish(c model.Change) {
	m.subs.mu.Lock()
	fns := make([]func(model.Change), 0, len(m.subs.fns))
	for _, fn := range m.subs.fns {
		fns = append(fns, fn)
	}
	m.subs.mu.Unlock()
	for _, fn := range fns {
		fn(c)
	}
}

// deleteSnapshot is a change that drops the machine's snapshot record.
func deleteSnapshot(tx *store.Tx, mc *model.Machine) error { return tx.DeleteSnapshot(mc.ID) }

// event builds an event with typed details (nil for none).
func event(typ, status, source string, details model.EventDetails) model.Event {
	return model.Event{Type: typ, Status: status, Source: source, Timestamp: nowMillis(), Request: details}
}

// machine reads a machine of app, hiding machines of other apps.
func (m *Manager) machine(app, id string) (model.Machine, error) {
	var mc model.Machine
	err := m.store.View(func(tx *store.Tx) error {
		var err error
		mc, err = machineOf(tx, app, id)
		return err
	})
	return mc, err
}
