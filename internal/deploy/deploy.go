// Package deploy owns the app-level workflow of `torpor deploy` and `torpor
// scale`: it brings an app's machines, per process group, to the configs a
// fly.toml describes (package appconfig), with Fly's strategies (rolling,
// canary, immediate, bluegreen), waiting for each new machine's checks,
// rolling back the machines it updated when one fails, and leaving machines
// that were suspended (or stopped) suspended again on the new version once
// their checks passed (prewarm), so that the next request resumes tested
// code instead of cold-booting untested code.
//
// It is a client of torpor's API (package client), like flyctl is of Fly's:
// it runs in the CLI. Two things keep deploys apart:
//   - the app lease (POST /v1/apps/{app}/lease), held and refreshed for the
//     whole deploy: a second deploy of the app fails at once, naming the
//     holder, or waits for it (Options.Wait). It holds back no machine
//     operation;
//   - a machine lease on each machine while the deploy changes it, and only
//     then: the proxy cannot start or suspend that machine meanwhile (it is
//     cordoned too, so the proxy routes to the others), but it can still wake
//     every other machine of the app.
//
// It does not own the machine lifecycle (package machine) nor the fly.toml
// format (package appconfig).
package deploy

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/torpor-dev/torpor/internal/appconfig"
	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/model"
)

// API is what a deploy needs of torpor's API; *client.Client has it.
type API interface {
	GetApp(ctx context.Context, name string) (model.App, error)
	CreateApp(ctx context.Context, name, org string) (model.App, error)
	ListMachines(ctx context.Context, app string) ([]model.Machine, error)
	GetMachine(ctx context.Context, app, id string) (model.Machine, error)
	CreateMachine(ctx context.Context, app string, req model.CreateMachineRequest) (model.Machine, error)
	UpdateMachine(ctx context.Context, app, id string, req model.UpdateMachineRequest) (model.Machine, error)
	Start(ctx context.Context, app, id string) (model.StartResponse, error)
	Suspend(ctx context.Context, app, id string) error
	Stop(ctx context.Context, app, id string, req model.StopRequest) error
	Destroy(ctx context.Context, app, id string, force bool) error
	Cordon(ctx context.Context, app, id string, cordoned bool) error
	Wait(ctx context.Context, app, id string, states []model.State, timeout time.Duration) (model.State, error)
	AcquireLease(ctx context.Context, app, id string, ttlSeconds int, description string) (model.Lease, error)
	ReleaseLease(ctx context.Context, app, id string) error
	AcquireAppLease(ctx context.Context, app string, ttlSeconds int, description string) (model.Lease, error)
	ReleaseAppLease(ctx context.Context, app string) error
	ListVolumes(ctx context.Context, app string) ([]model.Volume, error)
	CreateVolume(ctx context.Context, app string, req model.CreateVolumeRequest) (model.Volume, error)
}

var _ API = (*client.Client)(nil)

// Options adjust a deploy.
type Options struct {
	// App overrides fly.toml's app.
	App string
	// Image overrides [build] image.
	Image string
	// Strategy overrides [deploy] strategy.
	Strategy string
	// WaitTimeout overrides [deploy] wait_timeout: how long a machine's
	// checks may take to pass.
	WaitTimeout time.Duration
	// NoPrewarm leaves machines that were suspended or stopped stopped on
	// the new version, as Fly does, instead of starting them, waiting for
	// their checks and suspending them again.
	NoPrewarm bool
	// Wait waits for another deploy of the app to end instead of failing.
	Wait bool
	// Drain is how long a cordoned machine is given to finish the requests
	// in flight before it is stopped (default 1s).
	Drain time.Duration
	// Progress, if set, is told each step.
	Progress func(Event)
}

// Event is one step of a deploy, for progress output.
type Event struct {
	Time    time.Time `json:"time"`
	Machine string    `json:"machine,omitempty"`
	Group   string    `json:"group,omitempty"`
	// Phase is what happens: "lease", "create", "update", "checks",
	// "passing", "suspend", "done", "failed", "rollback", "destroy".
	Phase string `json:"phase"`
	Msg   string `json:"msg"`
}

// Result says what a deploy did.
type Result struct {
	App      string          `json:"app"`
	Release  int             `json:"release"`
	Image    string          `json:"image"`
	Strategy string          `json:"strategy"`
	Machines []MachineResult `json:"machines"`
	// RolledBack is set when a machine failed its checks and the deploy
	// put the machines it had changed back to their previous configs.
	RolledBack bool     `json:"rolled_back,omitempty"`
	Warnings   []string `json:"warnings,omitempty"`
}

// MachineResult is one machine's outcome.
type MachineResult struct {
	ID    string `json:"id"`
	Group string `json:"group"`
	// Action is "created", "updated", "replaced" (bluegreen: ID is the new
	// machine, Replaced the old), "rolled back", "destroyed".
	Action     string      `json:"action"`
	Replaced   string      `json:"replaced,omitempty"`
	OldVersion string      `json:"old_version,omitempty"`
	NewVersion string      `json:"new_version,omitempty"`
	Checks     string      `json:"checks"`
	State      model.State `json:"state"`
	// Prewarmed says the machine was started on the new version, passed its
	// checks and was suspended again.
	Prewarmed bool `json:"prewarmed,omitempty"`
}

// ErrInProgress is the class of the error a deploy gets while another one
// holds the app (without Options.Wait).
var ErrInProgress = errors.New("another deploy of the app is in progress")

// Leases: the app lease is refreshed while the deploy runs; a machine's
// lease covers one machine's change (update, checks, prewarm).
const (
	appLeaseTTL     = 60 // seconds
	appLeaseRefresh = 20 * time.Second
	pollEvery       = 200 * time.Millisecond
	defaultDrain    = time.Second
	rollbackWait    = time.Minute
	// interruptedRollback bounds the rollback of an interrupted deploy.
	interruptedRollback = 2 * time.Minute
)

// deployment is one run of Deploy or Scale.
type deployment struct {
	api   API
	app   string
	opts  Options
	cfg   *appconfig.App
	ctx   context.Context // ends with the deploy; carries no lease nonce
	res   Result
	mu    sync.Mutex // guards res.Machines and pinned
	image string     // the image, pinned to its digest once resolved
}

func (d *deployment) emit(m, group, phase, format string, args ...any) {
	if d.opts.Progress != nil {
		d.opts.Progress(Event{Time: time.Now(), Machine: m, Group: group, Phase: phase, Msg: fmt.Sprintf(format, args...)})
	}
}

func (d *deployment) record(r MachineResult) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.res.Machines = append(d.res.Machines, r)
}

// Deploy brings app's machines to cfg. On a failed check it rolls the
// machines it changed back and returns an error with the Result.
func Deploy(ctx context.Context, api API, cfg *appconfig.App, opts Options) (Result, error) {
	name := firstSet(opts.App, cfg.Name)
	if name == "" {
		return Result{}, model.Errorf(model.KindInvalid, "no app: give app in fly.toml or --app")
	}
	image := firstSet(opts.Image, cfg.Image)
	if image == "" {
		return Result{}, model.Errorf(model.KindInvalid, "no image: give [build] image in fly.toml or --image")
	}
	strategy := firstSet(opts.Strategy, cfg.Deploy.Strategy, appconfig.StrategyRolling)
	if !slices.Contains(appconfig.Strategies, strategy) {
		return Result{}, model.Errorf(model.KindInvalid, "strategy %q is not one of %s", strategy, strings.Join(appconfig.Strategies, ", "))
	}
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = cfg.Deploy.WaitTimeout
	}
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = appconfig.DefaultWaitTimeout
	}
	if opts.Drain <= 0 {
		opts.Drain = defaultDrain
	}
	if _, err := api.GetApp(ctx, name); isNotFound(err) {
		if _, err := api.CreateApp(ctx, name, ""); err != nil && !isConflict(err) {
			return Result{}, fmt.Errorf("create app %s: %w", name, err)
		}
	} else if err != nil {
		return Result{}, err
	}
	d := &deployment{api: api, app: name, opts: opts, cfg: cfg, image: image,
		res: Result{App: name, Image: image, Strategy: strategy}}
	release, err := d.holdApp(ctx)
	if err != nil {
		return Result{}, err
	}
	defer release()
	return d.res, d.deploy(strategy)
}

// holdApp takes the app lease (waiting for it with Options.Wait) and keeps
// it until the returned func is called.
func (d *deployment) holdApp(ctx context.Context) (release func(), err error) {
	var l model.Lease
	for {
		l, err = d.api.AcquireAppLease(ctx, d.app, appLeaseTTL, "torpor deploy")
		if err == nil {
			break
		}
		if !isConflict(err) {
			return nil, fmt.Errorf("lease app %s: %w", d.app, err)
		}
		if !d.opts.Wait {
			return nil, fmt.Errorf("%w: %v (run again with --wait to wait for it)", ErrInProgress, err)
		}
		d.emit("", "", "lease", "waiting for another deploy of %s: %v", d.app, err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	// Machine calls go without the app lease's nonce (a nonce in a machine
	// call names that machine's lease); only the refresh carries it.
	var cancel context.CancelFunc
	d.ctx, cancel = context.WithCancel(ctx)
	lctx := model.WithLeaseNonce(d.ctx, l.Nonce)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(appLeaseRefresh)
		defer t.Stop()
		for {
			select {
			case <-lctx.Done():
				return
			case <-t.C:
				if _, err := d.api.AcquireAppLease(lctx, d.app, appLeaseTTL, ""); err != nil && lctx.Err() == nil {
					d.emit("", "", "lease", "refreshing the app lease: %v", err)
				}
			}
		}
	}()
	return func() {
		cancel()
		<-done
		rctx, stop := context.WithTimeout(context.WithoutCancel(model.WithLeaseNonce(ctx, l.Nonce)), 10*time.Second)
		defer stop()
		d.api.ReleaseAppLease(rctx, d.app) // an unreleased lease expires in appLeaseTTL
	}, nil
}

// groups returns the app's machines by process group, and the latest
// release among them.
func (d *deployment) groups() (map[string][]model.Machine, int, error) {
	ms, err := d.api.ListMachines(d.ctx, d.app)
	if err != nil {
		return nil, 0, err
	}
	out := map[string][]model.Machine{}
	release := 0
	for _, m := range ms {
		if m.State == model.StateDestroyed || m.State == model.StateDestroying {
			continue
		}
		g := m.Config.Metadata[appconfig.MetaProcessGroup]
		if g == "" {
			continue // not made by a deploy: left alone
		}
		out[g] = append(out[g], m)
		if r, err := strconv.Atoi(m.Config.Metadata[appconfig.MetaReleaseVersion]); err == nil && r > release {
			release = r
		}
	}
	for _, g := range out {
		sort.Slice(g, func(i, j int) bool { return g[i].CreatedAt.Before(g[j].CreatedAt) })
	}
	return out, release, nil
}

func (d *deployment) deploy(strategy string) error {
	existing, release, err := d.groups()
	if err != nil {
		return err
	}
	d.res.Release = release + 1
	groups := d.cfg.Groups()
	for g, ms := range existing {
		if !slices.Contains(groups, g) {
			d.res.Warnings = append(d.res.Warnings, fmt.Sprintf("process group %s (%d machines) is not in fly.toml: its machines were left as they are", g, len(ms)))
		}
	}
	if strategy == appconfig.StrategyBlueGreen {
		for _, g := range groups {
			if len(d.cfg.MountsFor(g)) > 0 && len(existing[g]) > 0 {
				return model.Errorf(model.KindInvalid, "the bluegreen strategy cannot be used with [[mounts]] (process group %s): volumes stay with their machines; use rolling", g)
			}
		}
	}
	var changed []change // what to undo on failure, in order
	for _, g := range groups {
		want, err := d.desired(g)
		if err != nil {
			return err
		}
		ms := existing[g]
		var done []change
		switch {
		case len(ms) == 0:
			done, err = d.create(g, want, 1)
		case strategy == appconfig.StrategyBlueGreen:
			done, err = d.blueGreen(g, want, ms)
		default:
			done, err = d.update(g, want, ms, strategy)
		}
		changed = append(changed, done...)
		if err != nil {
			if d.ctx.Err() != nil {
				// Interrupted (Ctrl-C, a cancelled caller): the machines
				// changed so far, the one in flight cordoned, are rolled
				// back all the same, with a bound of their own.
				ctx, cancel := context.WithTimeout(context.WithoutCancel(d.ctx), interruptedRollback)
				defer cancel()
				d.ctx = ctx
				d.emit("", g, "rollback", "interrupted: rolling back what this deploy changed (at most %s)", interruptedRollback)
				d.rollback(changed)
				return fmt.Errorf("deploy of %s release %d was interrupted and rolled back: %w", d.app, d.res.Release, err)
			}
			d.rollback(changed)
			return fmt.Errorf("deploy of %s release %d failed and was rolled back: %w", d.app, d.res.Release, err)
		}
	}
	return nil
}

// desired is group's config for this release (without volumes).
func (d *deployment) desired(group string) (model.MachineConfig, error) {
	cfg, err := d.cfg.MachineConfig(group)
	if err != nil {
		return cfg, err
	}
	cfg.Metadata[appconfig.MetaReleaseVersion] = strconv.Itoa(d.res.Release)
	return cfg, nil
}

// withImage returns cfg running the deploy's image, pinned to the digest
// the first machine resolved, so that every machine of a deploy runs the
// same image even if the tag moves meanwhile.
func (d *deployment) withImage(cfg model.MachineConfig) model.MachineConfig {
	d.mu.Lock()
	cfg.Image = d.image
	d.mu.Unlock()
	return cfg
}

func (d *deployment) pin(m model.Machine) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !strings.Contains(d.image, "@") && m.ImageRef.Digest != "" && m.Config.Image == d.image {
		d.image = pinned(d.image, m.ImageRef)
	}
}

// pinned is image pinned to ref's digest (unchanged for a directory).
func pinned(image string, ref model.ImageRef) string {
	if ref.Digest == "" {
		return image
	}
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	return image + "@" + ref.Digest
}

// change is a machine the deploy changed and how to undo it.
type change struct {
	group string
	// prev is the machine before the deploy (updated machines); nil for a
	// machine the deploy created, which is destroyed on rollback.
	prev *model.Machine
	id   string
}

// chunkSize is how many machines of n a rolling deploy updates at once.
func chunkSize(maxUnavailable float64, n int) int {
	if maxUnavailable >= 1 {
		return int(maxUnavailable)
	}
	return max(1, int(math.Ceil(maxUnavailable*float64(n))))
}

// update moves the existing machines of a group to want: all at once
// (immediate), one then the rest (canary) or in chunks (rolling).
func (d *deployment) update(group string, want model.MachineConfig, ms []model.Machine, strategy string) ([]change, error) {
	var chunks [][]model.Machine
	switch strategy {
	case appconfig.StrategyImmediate:
		chunks = [][]model.Machine{ms}
	case appconfig.StrategyCanary:
		chunks = append(chunks, ms[:1])
		ms = ms[1:]
		fallthrough
	default:
		size := chunkSize(d.cfg.Deploy.MaxUnavailable, len(ms)+len(chunks))
		for len(ms) > 0 {
			n := min(size, len(ms))
			chunks, ms = append(chunks, ms[:n]), ms[n:]
		}
	}
	wait := strategy != appconfig.StrategyImmediate
	var done []change
	for _, chunk := range chunks {
		errs := make([]error, len(chunk))
		var wg sync.WaitGroup
		for i, m := range chunk {
			done = append(done, change{group: group, prev: &chunk[i], id: m.ID})
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = d.replaceConfig(group, m, d.withVolumes(group, want, m), wait, "updated")
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return done, err
		}
	}
	return done, nil
}

// replaceConfig updates machine m to cfg under a machine lease: a started
// machine is cordoned, drained, updated and uncordoned once its checks pass
// (wait); a suspended or stopped one is prewarmed (started on the new
// version, checked, suspended again) when its service suspends idle
// machines and prewarm is on, else left stopped as Fly does.
func (d *deployment) replaceConfig(group string, m model.Machine, cfg model.MachineConfig, wait bool, action string) error {
	ctx, unlease, err := d.leaseMachine(m.ID)
	if err != nil {
		return err
	}
	defer unlease()
	// Read it again under the lease: the proxy may have woken or suspended
	// it since the list.
	if m, err = d.settled(ctx, m.ID); err != nil {
		return err
	}
	prewarm := !d.opts.NoPrewarm && appconfig.AutostopSuspend(cfg) &&
		(m.State == model.StateSuspended || m.State == model.StateStopped || m.State == model.StateCreated)
	running := m.State == model.StateStarted
	if running || prewarm {
		// The proxy sends it nothing new (it routes to the others, or wakes
		// one); what is in flight gets Drain to finish.
		if err := d.api.Cordon(ctx, d.app, m.ID, true); err != nil {
			return fmt.Errorf("machine %s: cordon: %w", m.ID, err)
		}
		if running {
			sleep(ctx, d.opts.Drain)
		}
	}
	d.emit(m.ID, group, "update", "%s: updating %s → release %d (was %s)", m.ID, shortVersion(m.Version), d.res.Release, m.State)
	// A suspended machine is cold-started by an update unless skip_launch:
	// without prewarm it ends stopped, as on Fly.
	skip := !running && !(prewarm && m.State == model.StateSuspended)
	up, err := d.api.UpdateMachine(ctx, d.app, m.ID, model.UpdateMachineRequest{Config: d.withImage(cfg), SkipLaunch: skip, CurrentVersion: m.Version})
	if err != nil {
		return fmt.Errorf("machine %s: update: %w", m.ID, err)
	}
	d.pin(up)
	r := MachineResult{ID: m.ID, Group: group, Action: action, OldVersion: m.Version, NewVersion: up.Version, Checks: "-", State: up.State}
	if prewarm && up.State != model.StateStarted {
		if _, err := d.api.Start(ctx, d.app, m.ID); err != nil {
			return fmt.Errorf("machine %s: start to prewarm: %w", m.ID, err)
		}
	}
	if running || prewarm {
		checks, err := d.waitHealthy(ctx, group, m.ID, cfg, wait)
		r.Checks = checks
		if err != nil {
			r.State = model.StateStarted
			d.record(r)
			return err
		}
	}
	if prewarm {
		d.emit(m.ID, group, "suspend", "%s: suspending again (prewarmed)", m.ID)
		if err := d.api.Suspend(ctx, d.app, m.ID); err != nil {
			return fmt.Errorf("machine %s: suspend after prewarm: %w", m.ID, err)
		}
		r.Prewarmed = true
	}
	if (running || prewarm) && !m.Cordoned {
		if err := d.api.Cordon(ctx, d.app, m.ID, false); err != nil {
			return fmt.Errorf("machine %s: uncordon: %w", m.ID, err)
		}
	}
	if now, err := d.api.GetMachine(ctx, d.app, m.ID); err == nil {
		r.State = now.State
	}
	d.record(r)
	d.emit(m.ID, group, "done", "%s: %s → %s, checks %s, %s", m.ID, shortVersion(m.Version), shortVersion(up.Version), r.Checks, r.State)
	return nil
}

// settled reads machine id, waiting first for a start, stop or suspend in
// flight (the proxy's, say) to end: an update needs a settled machine.
func (d *deployment) settled(ctx context.Context, id string) (model.Machine, error) {
	m, err := d.api.GetMachine(ctx, d.app, id)
	switch {
	case err != nil:
		return m, fmt.Errorf("machine %s: %w", id, err)
	case m.State != model.StateStarting && m.State != model.StateStopping && m.State != model.StateSuspending:
		return m, nil
	}
	d.emit(id, m.Config.Metadata[appconfig.MetaProcessGroup], "update", "%s: waiting for it to finish %s", id, m.State)
	if _, err := d.api.Wait(ctx, d.app, id, []model.State{model.StateStarted, model.StateStopped, model.StateSuspended}, time.Minute); err != nil {
		return m, fmt.Errorf("machine %s stayed %s: %w", id, m.State, err)
	}
	if m, err = d.api.GetMachine(ctx, d.app, id); err != nil {
		return m, fmt.Errorf("machine %s: %w", id, err)
	}
	return m, nil
}

// leaseMachine takes machine id's lease for the time one change can take.
func (d *deployment) leaseMachine(id string) (context.Context, func(), error) {
	ttl := int((d.opts.WaitTimeout + d.opts.Drain + 2*time.Minute) / time.Second)
	l, err := d.api.AcquireLease(d.ctx, d.app, id, ttl, fmt.Sprintf("torpor deploy release %d", d.res.Release))
	if err != nil {
		return nil, nil, fmt.Errorf("machine %s: lease: %w", id, err)
	}
	ctx := model.WithLeaseNonce(d.ctx, l.Nonce)
	return ctx, func() {
		rctx, stop := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer stop()
		d.api.ReleaseLease(rctx, d.app, id)
	}, nil
}

// checkCount is how many checks a machine of cfg reports.
func checkCount(cfg model.MachineConfig) int {
	n := len(cfg.Checks)
	for _, s := range cfg.Services {
		n += len(s.Checks)
	}
	return n
}

// waitHealthy waits until machine id is started and, if wait, all its
// checks pass, for at most WaitTimeout. It returns a summary of the checks.
func (d *deployment) waitHealthy(ctx context.Context, group, id string, cfg model.MachineConfig, wait bool) (string, error) {
	return d.waitHealthyFor(ctx, group, id, cfg, wait, d.opts.WaitTimeout)
}

// waitHealthyFor is waitHealthy with its own timeout.
func (d *deployment) waitHealthyFor(ctx context.Context, group, id string, cfg model.MachineConfig, wait bool, timeout time.Duration) (string, error) {
	want := checkCount(cfg)
	d.emit(id, group, "checks", "%s: waiting for %d checks", id, want)
	deadline := time.Now().Add(timeout)
	summary := "-"
	for {
		m, err := d.api.GetMachine(ctx, d.app, id)
		if err != nil {
			return summary, fmt.Errorf("machine %s: %w", id, err)
		}
		passing := 0
		var bad []string
		for _, c := range m.Checks {
			if c.Status == model.CheckPassing {
				passing++
			} else {
				bad = append(bad, fmt.Sprintf("%s %s (%s)", c.Name, c.Status, strings.TrimSpace(truncate(c.Output, 80))))
			}
		}
		if want > 0 {
			summary = fmt.Sprintf("%d/%d passing", passing, want)
		}
		switch {
		case m.State == model.StateStarted && (!wait || (len(m.Checks) >= want && passing == len(m.Checks))):
			if want > 0 && wait {
				d.emit(id, group, "passing", "%s: checks passing", id)
			}
			return summary, nil
		case m.State != model.StateStarted && m.State != model.StateStarting:
			return summary, fmt.Errorf("machine %s is %s, not started, on its new config", id, m.State)
		case time.Now().After(deadline):
			return summary, fmt.Errorf("machine %s: checks did not pass within %s: %s", id, timeout, strings.Join(bad, "; "))
		}
		if err := sleep(ctx, pollEvery); err != nil {
			return summary, err
		}
	}
}

// create makes n machines of group, each checked before the next
// (creating them cordoned, uncordoned once their checks pass).
func (d *deployment) create(group string, want model.MachineConfig, n int) ([]change, error) {
	var done []change
	for range n {
		m, err := d.createOne(group, want, true)
		if m.ID != "" {
			done = append(done, change{group: group, id: m.ID})
		}
		if err != nil {
			return done, err
		}
		d.record(MachineResult{ID: m.ID, Group: group, Action: "created", NewVersion: m.Version, Checks: m.checks, State: m.State})
	}
	return done, nil
}

type created struct {
	model.Machine
	checks string
}

// createOne creates a machine of group (cordoned, leased) and waits for its
// checks; uncordon says whether to let the proxy route to it then.
func (d *deployment) createOne(group string, want model.MachineConfig, uncordon bool) (created, error) {
	cfg, err := d.newVolumes(d.cfg.MountsFor(group), want)
	if err != nil {
		return created{}, err
	}
	return d.createWith(group, cfg, uncordon)
}

// createWith creates a machine of group with cfg (volumes chosen).
func (d *deployment) createWith(group string, cfg model.MachineConfig, uncordon bool) (created, error) {
	ttl := int((d.opts.WaitTimeout + 2*time.Minute) / time.Second)
	d.emit("", group, "create", "creating a machine of %s (release %d)", group, d.res.Release)
	m, err := d.api.CreateMachine(d.ctx, d.app, model.CreateMachineRequest{Config: d.withImage(cfg), SkipServiceRegistration: true, LeaseTTL: ttl})
	if err != nil {
		return created{}, fmt.Errorf("create a machine of %s: %w", group, err)
	}
	d.pin(m)
	ctx := model.WithLeaseNonce(d.ctx, m.Nonce)
	defer func() {
		rctx, stop := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer stop()
		d.api.ReleaseLease(rctx, d.app, m.ID)
	}()
	c := created{Machine: m}
	if c.checks, err = d.waitHealthy(ctx, group, m.ID, cfg, true); err != nil {
		return c, err
	}
	if uncordon {
		if err := d.api.Cordon(ctx, d.app, m.ID, false); err != nil {
			return c, fmt.Errorf("machine %s: uncordon: %w", m.ID, err)
		}
	}
	d.emit(m.ID, group, "done", "%s: created at release %d, checks %s, started", m.ID, d.res.Release, c.checks)
	return c, nil
}

// blueGreen starts a new machine beside each old one (cordoned), waits for
// all their checks, then routes to the new ones and destroys the old. The
// new machine of an old one that was suspended or stopped is prewarmed and
// suspended (or stopped, without prewarm) before the switch.
func (d *deployment) blueGreen(group string, want model.MachineConfig, blues []model.Machine) ([]change, error) {
	greens := make([]created, len(blues))
	errs := make([]error, len(blues))
	var wg sync.WaitGroup
	for i := range blues {
		wg.Add(1)
		go func() {
			defer wg.Done()
			greens[i], errs[i] = d.createOne(group, want, false)
		}()
	}
	wg.Wait()
	var done []change
	for _, g := range greens {
		if g.ID != "" {
			done = append(done, change{group: group, id: g.ID})
		}
	}
	if err := errors.Join(errs...); err != nil {
		return done, err
	}
	for i, b := range blues {
		g := greens[i]
		ctx, unlease, err := d.leaseMachine(g.ID)
		if err != nil {
			return done, err
		}
		state := model.StateStarted
		if b.State != model.StateStarted {
			if !d.opts.NoPrewarm && appconfig.AutostopSuspend(want) {
				err, state = d.api.Suspend(ctx, d.app, g.ID), model.StateSuspended
			} else {
				err, state = d.api.Stop(ctx, d.app, g.ID, model.StopRequest{}), model.StateStopped
			}
		}
		if err == nil && !b.Cordoned {
			err = d.api.Cordon(ctx, d.app, g.ID, false)
		}
		unlease()
		if err != nil {
			return done, fmt.Errorf("machine %s: switch: %w", g.ID, err)
		}
		d.record(MachineResult{ID: g.ID, Group: group, Action: "replaced", Replaced: b.ID, OldVersion: b.Version,
			NewVersion: g.Version, Checks: g.checks, State: state, Prewarmed: state == model.StateSuspended})
	}
	// The new machines take the traffic; the old ones go.
	for _, b := range blues {
		bctx, unlease, err := d.leaseMachine(b.ID)
		if err != nil {
			return done, err
		}
		if b.State == model.StateStarted {
			if err := d.api.Cordon(bctx, d.app, b.ID, true); err == nil {
				sleep(bctx, d.opts.Drain)
			}
		}
		d.emit(b.ID, group, "destroy", "%s: destroying (replaced)", b.ID)
		err = d.api.Destroy(bctx, d.app, b.ID, true)
		unlease()
		if err != nil {
			d.res.Warnings = append(d.res.Warnings, fmt.Sprintf("machine %s was replaced but not destroyed: %v", b.ID, err))
		}
	}
	return nil, nil // the switch is done: nothing to roll back
}

// rollback undoes changed, newest first: created machines are destroyed,
// updated ones get their previous config back (pinned to the image digest
// they ran), in the state they had, prewarmed again if they were asleep.
func (d *deployment) rollback(changed []change) {
	if len(changed) == 0 {
		return
	}
	d.res.RolledBack = true
	for i := len(changed) - 1; i >= 0; i-- {
		c := changed[i]
		if c.prev == nil {
			d.emit(c.id, c.group, "rollback", "%s: destroying the new machine", c.id)
			if err := d.api.Destroy(d.ctx, d.app, c.id, true); err != nil && !isNotFound(err) {
				d.res.Warnings = append(d.res.Warnings, fmt.Sprintf("rollback: machine %s not destroyed: %v", c.id, err))
			}
			continue
		}
		now, err := d.api.GetMachine(d.ctx, d.app, c.id)
		if err != nil {
			d.res.Warnings = append(d.res.Warnings, fmt.Sprintf("rollback: machine %s: %v", c.id, err))
			continue
		}
		if now.Version == c.prev.Version { // not updated after all: only cordoned
			if now.Cordoned && !c.prev.Cordoned {
				if err := d.uncordon(c.id); err != nil {
					d.res.Warnings = append(d.res.Warnings, fmt.Sprintf("rollback: machine %s stays cordoned: %v", c.id, err))
				}
			}
			continue
		}
		d.emit(c.id, c.group, "rollback", "%s: back to %s", c.id, shortVersion(c.prev.Version))
		old := c.prev.Config
		old.Image = pinned(old.Image, c.prev.ImageRef)
		if err := d.rollbackOne(c.group, now, c.prev, old); err != nil {
			d.res.Warnings = append(d.res.Warnings, fmt.Sprintf("rollback: machine %s: %v", c.id, err))
		}
	}
}

// uncordon lets the proxy route to machine id again.
func (d *deployment) uncordon(id string) error {
	ctx, unlease, err := d.leaseMachine(id)
	if err != nil {
		return err
	}
	defer unlease()
	return d.api.Cordon(ctx, d.app, id, false)
}

// rollbackOne puts machine now back on config old, ending in prev's state.
func (d *deployment) rollbackOne(group string, now model.Machine, prev *model.Machine, old model.MachineConfig) (err error) {
	ctx, unlease, err := d.leaseMachine(now.ID)
	if err != nil {
		return err
	}
	defer unlease()
	// Uncordoned whatever happens (unless it was cordoned before): the
	// proxy routes only to machines whose checks pass anyway.
	defer func() {
		if !prev.Cordoned {
			if cerr := d.api.Cordon(ctx, d.app, now.ID, false); cerr != nil && err == nil {
				err = cerr
			}
		}
	}()
	launch := prev.State == model.StateStarted || prev.State == model.StateSuspended
	up, err := d.api.UpdateMachine(ctx, d.app, now.ID, model.UpdateMachineRequest{Config: old, SkipLaunch: !launch, CurrentVersion: now.Version})
	if err != nil {
		return err
	}
	if up.State != model.StateStarted && launch {
		if _, err := d.api.Start(ctx, d.app, now.ID); err != nil {
			return err
		}
	}
	checks := "-"
	if launch {
		// The previous config passed its checks before: give it at least
		// a minute, however short the deploy's wait_timeout.
		if checks, err = d.waitHealthyFor(ctx, group, now.ID, old, true, max(d.opts.WaitTimeout, rollbackWait)); err != nil {
			return err
		}
	}
	state := up.State
	if prev.State == model.StateSuspended {
		if err := d.api.Suspend(ctx, d.app, now.ID); err != nil {
			return err
		}
		state = model.StateSuspended
	}
	d.record(MachineResult{ID: now.ID, Group: group, Action: "rolled back", OldVersion: now.Version, NewVersion: up.Version, Checks: checks, State: state})
	return nil
}

// withVolumes gives an existing machine its volumes in want: the volumes it
// has stay with it (at the destination fly.toml now gives).
func (d *deployment) withVolumes(group string, want model.MachineConfig, m model.Machine) model.MachineConfig {
	want.Metadata = maps.Clone(want.Metadata)
	mounts := d.cfg.MountsFor(group)
	if len(mounts) == 0 {
		return want
	}
	byName := map[string]model.Mount{}
	for _, mt := range m.Config.Mounts {
		byName[mt.Name] = mt
	}
	want.Mounts = nil
	for _, mt := range mounts {
		if have, ok := byName[mt.Source]; ok {
			want.Mounts = append(want.Mounts, model.Mount{Volume: have.Volume, Path: mt.Destination})
		}
	}
	return want
}

// newVolumes gives a new machine a volume for each of fly.toml's
// mounts: one of that name that no machine holds, else a new one.
func (d *deployment) newVolumes(mounts []appconfig.Mount, want model.MachineConfig) (model.MachineConfig, error) {
	want.Metadata = maps.Clone(want.Metadata)
	want.Mounts = nil
	if len(mounts) == 0 {
		return want, nil
	}
	vols, err := d.api.ListVolumes(d.ctx, d.app)
	if err != nil {
		return want, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, mt := range mounts {
		id := ""
		for i, v := range vols {
			if v.Name == mt.Source && v.AttachedMachineID == nil && v.State == model.VolumeCreated {
				id = v.ID
				taken := "this deploy"
				vols[i].AttachedMachineID = &taken
				break
			}
		}
		if id == "" {
			size := mt.InitialSizeGB
			v, err := d.api.CreateVolume(d.ctx, d.app, model.CreateVolumeRequest{Name: mt.Source, SizeGB: &size})
			if err != nil {
				return want, fmt.Errorf("create volume %s: %w", mt.Source, err)
			}
			id = v.ID
		}
		want.Mounts = append(want.Mounts, model.Mount{Volume: id, Path: mt.Destination})
	}
	return want, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func shortVersion(v string) string {
	if len(v) > 10 {
		return v[len(v)-10:]
	}
	if v == "" {
		return "-"
	}
	return v
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func firstSet(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

func isConflict(err error) bool { return apiStatus(err) == 409 }
func isNotFound(err error) bool { return apiStatus(err) == 404 }

func apiStatus(err error) int {
	var ae *client.APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}
