// Package apitest owns an in-memory fake of api.Machines for tests of the API,
// the client and the CLI (operations take effect at once; Fail injects
// errors), and helpers for authentication: Local marks requests as coming
// over the admin socket, NewTokens gives real tokens in a temporary store.
package apitest

import (
	"path/filepath"

	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/torpor-dev/torpor/internal/logs"
	"github.com/torpor-dev/torpor/internal/model"
)

// Fake is an in-memory api.Machines. The zero value is not ready: use NewFake.
type Fake struct {
	mu       sync.Mutex
	apps     map[string]model.App
	machines map[string]*model.Machine // by id
	events   map[string][]model.Event  // by machine id
	changed  chan struct{}             // closed and replaced on every change
	nextID   int
	now      func() time.Time
	logs     map[string]*logs.Log // by machine id, opened by SetLogDir'd directory
	logDir   string

	// Fail, when set, is called with the method name ("Create", "Start", ...)
	// before each call; a non-nil result is returned as the call's error.
	Fail func(method string) error
}

// NewFake returns an empty Fake whose clock starts at 2025-01-02T03:04:05Z and
// advances one second per change.
func NewFake() *Fake {
	t := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	return &Fake{
		apps:     map[string]model.App{},
		machines: map[string]*model.Machine{},
		events:   map[string][]model.Event{},
		logs:     map[string]*logs.Log{},
		changed:  make(chan struct{}),
		now: func() time.Time {
			t = t.Add(time.Second)
			return t
		},
	}
}

// SetLogDir sets where machine logs live; Logs fails until it is set.
func (f *Fake) SetLogDir(dir string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logDir = dir
}

// Logs implements api.Machines with a real log per machine.
func (f *Fake) Logs(ctx context.Context, app, id string) (*logs.Log, error) {
	if err := f.fail("Logs"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.find(app, id); err != nil {
		return nil, err
	}
	if l, ok := f.logs[id]; ok {
		return l, nil
	}
	if f.logDir == "" {
		return nil, model.Errorf(model.KindInternal, "fake: no log directory set")
	}
	l, err := logs.Open(filepath.Join(f.logDir, id), logs.Config{})
	if err != nil {
		return nil, err
	}
	f.logs[id] = l
	return l, nil
}

// SetState forces a machine's state (for tests of wait and of the CLI).
func (f *Fake) SetState(id string, s model.State) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if m, ok := f.machines[id]; ok {
		m.State = s
		f.notify()
	}
}

func (f *Fake) fail(method string) error {
	if f.Fail == nil {
		return nil
	}
	return f.Fail(method)
}

// notify wakes waiters; f.mu must be held.
func (f *Fake) notify() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// CreateApp implements api.Machines.
func (f *Fake) CreateApp(ctx context.Context, app model.App) (model.App, error) {
	if err := f.fail("CreateApp"); err != nil {
		return model.App{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.apps[app.Name]; ok {
		return model.App{}, model.Errorf(model.KindConflict, "app %q already exists", app.Name)
	}
	app.CreatedAt = f.now()
	f.apps[app.Name] = app
	return app, nil
}

// GetApp implements api.Machines.
func (f *Fake) GetApp(ctx context.Context, name string) (model.App, error) {
	if err := f.fail("GetApp"); err != nil {
		return model.App{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	app, ok := f.apps[name]
	if !ok {
		return model.App{}, model.Errorf(model.KindNotFound, "app %q not found", name)
	}
	return app, nil
}

// ListApps implements api.Machines.
func (f *Fake) ListApps(ctx context.Context) ([]model.App, error) {
	if err := f.fail("ListApps"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var apps []model.App
	for _, a := range f.apps {
		apps = append(apps, a)
	}
	sort.Slice(apps, func(i, j int) bool { return apps[i].Name < apps[j].Name })
	return apps, nil
}

// DeleteApp implements api.Machines.
func (f *Fake) DeleteApp(ctx context.Context, name string) error {
	if err := f.fail("DeleteApp"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.apps[name]; !ok {
		return model.Errorf(model.KindNotFound, "app %q not found", name)
	}
	for _, m := range f.machines {
		if m.App == name {
			return model.Errorf(model.KindConflict, "app %q still has machines", name)
		}
	}
	delete(f.apps, name)
	return nil
}

// Create implements api.Machines.
func (f *Fake) Create(ctx context.Context, app string, req model.CreateMachineRequest) (model.Machine, error) {
	if err := f.fail("Create"); err != nil {
		return model.Machine{}, err
	}
	if req.Config.Image == "" {
		return model.Machine{}, model.Errorf(model.KindInvalid, "config.image is required")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.apps[app]; !ok {
		return model.Machine{}, model.Errorf(model.KindNotFound, "app %q not found", app)
	}
	f.nextID++
	now := f.now()
	m := &model.Machine{
		ID:        fmt.Sprintf("m%013d", f.nextID),
		Name:      req.Name,
		App:       app,
		State:     model.StateCreated,
		Region:    "local",
		Config:    req.Config,
		CreatedAt: now,
		UpdatedAt: now,
		Version:   "1",
	}
	if m.Name == "" {
		m.Name = "machine-" + m.ID
	}
	f.machines[m.ID] = m
	f.event(m, "launch", "created", nil)
	if !req.SkipLaunch {
		f.coldStart(m)
	}
	return f.copy(m), nil
}

// Get implements api.Machines.
func (f *Fake) Get(ctx context.Context, app, id string) (model.Machine, error) {
	if err := f.fail("Get"); err != nil {
		return model.Machine{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	m, err := f.find(app, id)
	if err != nil {
		return model.Machine{}, err
	}
	return f.copy(m), nil
}

// List implements api.Machines.
func (f *Fake) List(ctx context.Context, app string) ([]model.Machine, error) {
	if err := f.fail("List"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.apps[app]; !ok {
		return nil, model.Errorf(model.KindNotFound, "app %q not found", app)
	}
	var list []model.Machine
	for _, m := range f.machines {
		if m.App == app {
			list = append(list, f.copy(m))
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].ID < list[j].ID })
	return list, nil
}

// Update implements api.Machines.
func (f *Fake) Update(ctx context.Context, app, id string, req model.UpdateMachineRequest) (model.Machine, error) {
	if err := f.fail("Update"); err != nil {
		return model.Machine{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	m, err := f.find(app, id)
	if err != nil {
		return model.Machine{}, err
	}
	m.Config = req.Config
	if req.Name != "" {
		m.Name = req.Name
	}
	m.Version = fmt.Sprint(len(f.events[id]))
	f.event(m, "update", "updated", nil)
	if !req.SkipLaunch {
		f.coldStart(m)
	}
	return f.copy(m), nil
}

// Start implements api.Machines: a suspended machine resumes, others cold start.
func (f *Fake) Start(ctx context.Context, app, id string) (model.StartResponse, error) {
	if err := f.fail("Start"); err != nil {
		return model.StartResponse{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	m, err := f.find(app, id)
	if err != nil {
		return model.StartResponse{}, err
	}
	prev := m.State
	switch prev {
	case model.StateStarted:
		return model.StartResponse{}, model.Errorf(model.KindConflict, "machine %s is already started", id)
	case model.StateSuspended:
		f.setState(m, model.StateStarted)
		f.event(m, "resume", "started", map[string]any{"from_snapshot": true})
		return model.StartResponse{PreviousState: prev, FromSnapshot: true}, nil
	}
	f.coldStart(m)
	return model.StartResponse{PreviousState: prev}, nil
}

// Stop implements api.Machines.
func (f *Fake) Stop(ctx context.Context, app, id string, req model.StopRequest) error {
	if err := f.fail("Stop"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	m, err := f.find(app, id)
	if err != nil {
		return err
	}
	f.setState(m, model.StateStopped)
	details := map[string]any{}
	if req.Signal != "" {
		details["signal"] = req.Signal
	}
	if req.Timeout.Duration > 0 {
		details["timeout"] = req.Timeout.String()
	}
	f.event(m, "exit", "stopped", details)
	return nil
}

// Suspend implements api.Machines.
func (f *Fake) Suspend(ctx context.Context, app, id string) error {
	if err := f.fail("Suspend"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	m, err := f.find(app, id)
	if err != nil {
		return err
	}
	if m.State != model.StateStarted {
		return model.Errorf(model.KindPrecondition, "machine %s is %s: only a started machine can be suspended", id, m.State)
	}
	f.setState(m, model.StateSuspended)
	f.event(m, "suspend", "suspended", nil)
	return nil
}

// Destroy implements api.Machines.
func (f *Fake) Destroy(ctx context.Context, app, id string, force bool) error {
	if err := f.fail("Destroy"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	m, err := f.find(app, id)
	if err != nil {
		return err
	}
	if m.State == model.StateStarted && !force {
		return model.Errorf(model.KindConflict, "machine %s is started: stop it first or use force", id)
	}
	f.setState(m, model.StateDestroyed)
	f.event(m, "destroy", "destroyed", nil)
	delete(f.machines, id)
	return nil
}

// Wait implements api.Machines.
func (f *Fake) Wait(ctx context.Context, app, id string, states []model.State) (model.Machine, error) {
	if err := f.fail("Wait"); err != nil {
		return model.Machine{}, err
	}
	for {
		f.mu.Lock()
		m, err := f.find(app, id)
		var c model.Machine
		if err == nil {
			c = f.copy(m)
		}
		changed := f.changed
		f.mu.Unlock()
		if err != nil {
			return model.Machine{}, err
		}
		if slices.Contains(states, c.State) {
			return c, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return model.Machine{}, model.Errorf(model.KindTimeout, "machine %s is still %s", id, c.State)
		}
	}
}

// Events implements api.Machines.
func (f *Fake) Events(ctx context.Context, app, id string) ([]model.Event, error) {
	if err := f.fail("Events"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.find(app, id); err != nil {
		return nil, err
	}
	return slices.Clone(f.events[id]), nil
}

// Cordon implements api.Machines.
func (f *Fake) Cordon(ctx context.Context, app, id string, cordoned bool) error {
	if err := f.fail("Cordon"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	m, err := f.find(app, id)
	if err != nil {
		return err
	}
	m.Cordoned = cordoned
	f.notify()
	return nil
}

// find returns the machine id of app; f.mu must be held.
func (f *Fake) find(app, id string) (*model.Machine, error) {
	m, ok := f.machines[id]
	if !ok || m.App != app {
		return nil, model.Errorf(model.KindNotFound, "machine %s not found in app %q", id, app)
	}
	return m, nil
}

// coldStart starts m in a new boot generation; f.mu must be held.
func (f *Fake) coldStart(m *model.Machine) {
	m.BootGeneration++
	f.setState(m, model.StateStarted)
	f.event(m, "start", "started", map[string]any{"from_snapshot": false})
}

// setState changes m's state and wakes waiters; f.mu must be held.
func (f *Fake) setState(m *model.Machine, s model.State) {
	m.State = s
	m.UpdatedAt = f.now()
	f.notify()
}

// event records an event of m; f.mu must be held.
func (f *Fake) event(m *model.Machine, typ, status string, request map[string]any) {
	list := f.events[m.ID]
	if len(request) == 0 {
		request = nil
	}
	f.events[m.ID] = append(list, model.Event{
		ID:        fmt.Sprintf("e%d", len(list)+1),
		Type:      typ,
		Status:    status,
		Source:    model.SourceUser,
		Timestamp: f.now().UnixMilli(),
		Request:   request,
	})
}

// copy returns a copy of m carrying its events; f.mu must be held.
func (f *Fake) copy(m *model.Machine) model.Machine {
	c := *m
	c.Events = slices.Clone(f.events[m.ID])
	return c
}
