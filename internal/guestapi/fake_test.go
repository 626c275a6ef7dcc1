package guestapi

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// call is one call the fake received.
type call struct {
	op      string // "get", "suspend", "stop"
	app, id string
	source  string
	stop    model.StopRequest
	at      time.Time
}

// fakeMachines is a Machines over an in-memory set of machines. Suspend and
// Stop record the call, run the optional hook and change the state.
type fakeMachines struct {
	mu       sync.Mutex
	machines map[string]model.Machine // by app + "/" + id
	calls    []call
	// onSuspend, if set, runs in Suspend (e.g. a real checkpoint).
	onSuspend func(ctx context.Context, app, id string) error
	// opDone receives the result of every Suspend and Stop.
	opDone chan error
}

func newFakeMachines(ms ...model.Machine) *fakeMachines {
	f := &fakeMachines{machines: make(map[string]model.Machine), opDone: make(chan error, 16)}
	for _, m := range ms {
		f.machines[m.App+"/"+m.ID] = m
	}
	return f
}

func (f *fakeMachines) record(c call) (model.Machine, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c.at = time.Now()
	f.calls = append(f.calls, c)
	m, ok := f.machines[c.app+"/"+c.id]
	if !ok {
		return m, model.Errorf(model.KindNotFound, "machine %s not found", c.id)
	}
	return m, nil
}

func (f *fakeMachines) setState(app, id string, st model.State) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := f.machines[app+"/"+id]
	m.State = st
	f.machines[app+"/"+id] = m
}

func (f *fakeMachines) Get(ctx context.Context, app, id string) (model.Machine, error) {
	return f.record(call{op: "get", app: app, id: id, source: model.SourceOf(ctx)})
}

func (f *fakeMachines) Suspend(ctx context.Context, app, id string) error {
	err := f.suspend(ctx, app, id)
	f.opDone <- err
	return err
}

func (f *fakeMachines) suspend(ctx context.Context, app, id string) error {
	m, err := f.record(call{op: "suspend", app: app, id: id, source: model.SourceOf(ctx)})
	if err != nil {
		return err
	}
	if m.State != model.StateStarted {
		return model.Errorf(model.KindConflict, "machine %s is %s", id, m.State)
	}
	if f.onSuspend != nil {
		if err := f.onSuspend(ctx, app, id); err != nil {
			return fmt.Errorf("suspend hook: %w", err)
		}
	}
	f.setState(app, id, model.StateSuspended)
	return nil
}

func (f *fakeMachines) Stop(ctx context.Context, app, id string, req model.StopRequest) error {
	_, err := f.record(call{op: "stop", app: app, id: id, source: model.SourceOf(ctx), stop: req})
	if err == nil {
		f.setState(app, id, model.StateStopped)
	}
	f.opDone <- err
	return err
}

// callsOf returns the calls of kind op.
func (f *fakeMachines) callsOf(op string) []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []call
	for _, c := range f.calls {
		if c.op == op {
			out = append(out, c)
		}
	}
	return out
}

// allCalls returns every call so far.
func (f *fakeMachines) allCalls() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}
