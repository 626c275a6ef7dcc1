package checks

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// Machines is what the runner needs from the machine lifecycle (package
// machine's Manager implements it).
type Machines interface {
	ListApps(ctx context.Context) ([]model.App, error)
	List(ctx context.Context, app string) ([]model.Machine, error)
}

// Config configures a Runner. Zero fields take the defaults below.
type Config struct {
	// RefreshInterval is how often machines are listed again without a
	// Refresh (default 2s).
	RefreshInterval time.Duration
	// StartupInterval is how often a check that has not passed since the
	// machine booted is retried, when its interval is longer (default 1s):
	// a machine woken by the proxy becomes routable as soon as its app
	// answers, not an interval later.
	StartupInterval time.Duration
	// Address returns the address ("host:port") a check of machine m on
	// port connects to (default the machine's private IP; "" means it
	// cannot be checked now).
	Address func(m model.Machine, port int) string
	// OnChange, if set, is called (without locks held) when a check of a
	// machine of app changes status.
	OnChange func(app string)
	Logger   *slog.Logger
}

// Runner runs the checks of every started machine and keeps their latest
// results. It is safe for concurrent use.
type Runner struct {
	m   Machines
	cfg Config
	log *slog.Logger

	ctx    context.Context // the checks' parent; cancelled when Run returns
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	machines map[string]*target
	refreshc chan struct{}
}

// target is one machine as the runner sees it.
type target struct {
	app, id  string
	instance string        // bootOf the machine: changes on every cold start, and results start over
	version  string        // config version
	machine  model.Machine // as last listed, for the checks' addresses
	checks   []named
	results  map[string]model.CheckStatus
	passed   map[string]bool // checks that passed since the boot
	booted   bool            // the runner has seen this boot started
	bootAt   time.Time       // when it did (grace periods count from here)
	// epoch counts the spells of checks running (from a start or resume to
	// a pause); cancel ends the current one, nil while paused.
	epoch  uint64
	cancel context.CancelFunc
}

func (t *target) running() bool { return t.cancel != nil }

// named is a check with its name; service is the internal port of the
// service it belongs to, 0 for a top-level check.
type named struct {
	name    string
	service int
	check   model.Check
}

// New returns a Runner; Run starts it.
func New(m Machines, cfg Config) *Runner {
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = 2 * time.Second
	}
	if cfg.StartupInterval <= 0 {
		cfg.StartupInterval = time.Second
	}
	if cfg.Address == nil {
		cfg.Address = privateAddr
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Runner{m: m, cfg: cfg, log: cfg.Logger.With("component", "checks"),
		machines: map[string]*target{}, refreshc: make(chan struct{}, 1)}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r
}

func privateAddr(m model.Machine, port int) string {
	if m.PrivateIP == "" {
		return ""
	}
	return net.JoinHostPort(m.PrivateIP, strconv.Itoa(port))
}

// Names returns the names of cfg's checks: config.checks by their keys,
// then services[].checks as Fly names them, "servicecheck-NN-TYPE-PORT"
// with NN counting every service check in order.
func Names(cfg model.MachineConfig) []string {
	var out []string
	for _, c := range checksOf(cfg) {
		out = append(out, c.name)
	}
	return out
}

func checksOf(cfg model.MachineConfig) []named {
	var out []named
	keys := make([]string, 0, len(cfg.Checks))
	for k := range cfg.Checks {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, named{name: k, check: cfg.Checks[k]})
	}
	n := 0
	for _, s := range cfg.Services {
		for _, c := range s.Checks {
			out = append(out, named{name: fmt.Sprintf("%s%02d-%s-%d", servicePrefix, n, c.Type, c.Port), service: s.InternalPort, check: c})
			n++
		}
	}
	return out
}

// Run lists the machines every RefreshInterval (or on Refresh) and starts
// and pauses their checks to match, until ctx ends; it then stops every
// check and returns nil. Run is called once per Runner.
func (r *Runner) Run(ctx context.Context) error {
	defer func() {
		r.cancel()
		r.wg.Wait()
	}()
	r.syncAll(ctx)
	tick := time.NewTicker(r.cfg.RefreshInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-r.refreshc:
		}
		r.syncAll(ctx)
	}
}

// Refresh asks Run to look at the machines again now (after a state or
// config change). It does not wait.
func (r *Runner) Refresh() {
	select {
	case r.refreshc <- struct{}{}:
	default:
	}
}

// syncAll lists every machine and syncs the runner's view with them.
func (r *Runner) syncAll(ctx context.Context) {
	apps, err := r.m.ListApps(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("list apps", "err", err)
		}
		return
	}
	var all []model.Machine
	for _, a := range apps {
		ms, err := r.m.List(ctx, a.Name)
		if err != nil {
			r.log.Warn("list machines", "app", a.Name, "err", err)
			return // a partial list would forget the machines it misses
		}
		all = append(all, ms...)
	}
	r.sync(all, time.Now())
}

// sync starts the checks of machines that are started and pauses those of
// machines that are not; a machine's results start over when it has been
// cold-started or reconfigured, and are kept across a pause otherwise (a
// resumed machine is judged on its last result until its first check,
// which runs at once).
func (r *Runner) sync(ms []model.Machine, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := make(map[string]bool, len(ms))
	for _, m := range ms {
		if m.State == model.StateDestroying || m.State == model.StateDestroyed {
			continue
		}
		seen[m.ID] = true
		t := r.machines[m.ID]
		if t == nil {
			t = &target{app: m.App, id: m.ID}
			r.machines[m.ID] = t
		}
		if t.results == nil || t.instance != bootOf(m) || t.version != m.Version {
			r.pause(t)
			t.instance, t.version, t.checks = bootOf(m), m.Version, checksOf(m.Config)
			t.results, t.passed, t.booted = initial(t.checks, now), map[string]bool{}, false
		}
		moved := t.machine.PrivateIP != m.PrivateIP
		t.machine = m
		running := m.State == model.StateStarted && len(t.checks) > 0
		switch {
		case running && (!t.running() || moved):
			r.pause(t)
			if !t.booted {
				t.booted, t.bootAt = true, now
			}
			r.start(t)
		case !running:
			r.pause(t)
		}
	}
	for id, t := range r.machines {
		if !seen[id] {
			r.pause(t)
			delete(r.machines, id)
		}
	}
}

// initial is the status of checks that have not run yet.
func initial(cs []named, now time.Time) map[string]model.CheckStatus {
	out := make(map[string]model.CheckStatus, len(cs))
	for _, c := range cs {
		out[c.name] = model.CheckStatus{Name: c.name, Status: model.CheckWarning, Output: "not checked yet", UpdatedAt: now}
	}
	return out
}

// start runs t's checks, each at once and then on its interval. Call with
// r.mu held.
func (r *Runner) start(t *target) {
	t.epoch++
	ctx, cancel := context.WithCancel(r.ctx)
	t.cancel = cancel
	for _, c := range t.checks {
		r.wg.Add(1)
		go r.work(ctx, t.app, t.id, t.instance, r.cfg.Address(t.machine, c.check.Port), t.epoch, c)
	}
}

// pause stops t's checks; a check in flight is abandoned and its result
// dropped. Call with r.mu held.
func (r *Runner) pause(t *target) {
	if t.cancel != nil {
		t.cancel()
		t.cancel = nil
	}
}

// work runs one check of one machine until ctx ends.
func (r *Runner) work(ctx context.Context, app, id, instance, addr string, epoch uint64, c named) {
	defer r.wg.Done()
	for {
		res := probe(ctx, addr, c.check)
		if ctx.Err() != nil {
			return
		}
		next := c.check.Interval.Duration
		// A failure of a machine that is stopping or being suspended says
		// nothing about its app: it is dropped (the next sync pauses the
		// checks; should the machine stay started, the next check counts).
		if res.status == model.CheckPassing || r.stillStarted(ctx, app, id, instance) {
			var changed bool
			next, changed = r.record(id, epoch, c, res, time.Now())
			if changed && r.cfg.OnChange != nil {
				r.cfg.OnChange(app)
			}
			if next == 0 {
				return
			}
		}
		timer := time.NewTimer(next)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}

// bootOf names one boot of a machine: its instance (which, as on Fly,
// changes with each config version) and its boot generation (which changes
// with every cold start).
func bootOf(m model.Machine) string {
	return m.InstanceID + "/" + strconv.FormatUint(m.BootGeneration, 10)
}

// stillStarted asks the lifecycle whether the machine is still started in
// the same boot, before a failure is recorded: the runner's own view lags
// by up to a refresh, and a machine frozen for a checkpoint fails checks.
func (r *Runner) stillStarted(ctx context.Context, app, id, instance string) bool {
	ms, err := r.m.List(ctx, app)
	if err != nil {
		return false
	}
	for _, m := range ms {
		if m.ID == id {
			return m.State == model.StateStarted && bootOf(m) == instance
		}
	}
	return false
}

// record stores a check's result and returns when to check again (0: the
// check's run is over) and whether its status changed.
func (r *Runner) record(id string, epoch uint64, c named, res result, now time.Time) (time.Duration, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.machines[id]
	if t == nil || !t.running() || t.epoch != epoch {
		return 0, false
	}
	if res.status == model.CheckPassing {
		t.passed[c.name] = true
	} else if !t.passed[c.name] && now.Sub(t.bootAt) < c.check.GracePeriod.Duration {
		res.status, res.output = model.CheckWarning, res.output+" (in the grace period after start)"
	}
	prev := t.results[c.name]
	t.results[c.name] = model.CheckStatus{Name: c.name, Status: res.status, Output: res.output, UpdatedAt: now.UTC()}
	next := c.check.Interval.Duration
	if !t.passed[c.name] {
		next = min(next, r.cfg.StartupInterval)
	}
	return next, prev.Status != res.status
}

// Statuses returns the latest results of machine m's checks, by name;
// checks that have not run yet are "warning".
func (r *Runner) Statuses(m model.Machine) []model.CheckStatus {
	cs := checksOf(m.Config)
	if len(cs) == 0 {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	results := r.resultsOf(m)
	out := make([]model.CheckStatus, 0, len(cs))
	for _, c := range cs {
		out = append(out, results[c.name])
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// resultsOf returns m's results, or initial ones when the runner has not
// seen this boot of m yet. Call with r.mu held.
func (r *Runner) resultsOf(m model.Machine) map[string]model.CheckStatus {
	t := r.machines[m.ID]
	if t == nil || t.instance != bootOf(m) || t.version != m.Version {
		return initial(checksOf(m.Config), m.UpdatedAt)
	}
	return t.results
}

// ServicePassing reports whether every check of machine m's service on
// internal port passes (true when it has none): the proxy routes only to
// such machines.
func (r *Runner) ServicePassing(m model.Machine, port int) bool {
	var mine []named
	for _, c := range checksOf(m.Config) {
		if c.service == port && c.service != 0 {
			mine = append(mine, c)
		}
	}
	if len(mine) == 0 {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	results := r.resultsOf(m)
	for _, c := range mine {
		if results[c.name].Status != model.CheckPassing {
			return false
		}
	}
	return true
}

// Failing describes machine m's failing service checks on internal port,
// for error messages; "" when they pass.
func (r *Runner) Failing(m model.Machine, port int) string {
	if r.ServicePassing(m, port) {
		return ""
	}
	for _, s := range r.Statuses(m) {
		for _, c := range checksOf(m.Config) {
			if c.name == s.Name && c.service == port && s.Status != model.CheckPassing {
				return fmt.Sprintf("%s is %s: %s", s.Name, s.Status, s.Output)
			}
		}
	}
	return "checks not passing"
}
