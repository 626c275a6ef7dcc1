package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/diskusage"
	"github.com/torpor-dev/torpor/internal/freeport"
	"github.com/torpor-dev/torpor/internal/logs"
	"github.com/torpor-dev/torpor/internal/machine"
	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/snapshot"
)

// Sample is one run of a scenario: a cold start, a suspend and a resume.
// Times are milliseconds from the API call.
type Sample struct {
	ColdMS           float64 `json:"cold_ms"`           // start → first byte, from stopped
	ColdAPIMS        float64 `json:"cold_api_ms"`       // the start call alone
	ColdAttempts     int     `json:"cold_attempts"`     // connections the probe tried
	InitSeconds      float64 `json:"init_seconds"`      // the app's own init time (imports, index)
	ReadySeconds     float64 `json:"ready_seconds"`     // init plus filling the ballast
	RSSBytes         int64   `json:"rss_bytes"`         // the app's RSS once ready
	SuspendMS        float64 `json:"suspend_ms"`        // the suspend call (it returns once suspended)
	SnapshotBytes    int64   `json:"snapshot_bytes"`    // disk blocks used by the snapshot's files
	SnapshotApparent int64   `json:"snapshot_apparent"` // the files' sizes added up
	SnapshotSource   string  `json:"snapshot_source"`   // "disk", or "event" when the data dir is unknown
	// ResuspendMS is the suspend call of the machine the run's first
	// restore has just brought back (see Order): a machine's suspend after
	// a resume, as in every cycle of scale to zero after the first, where
	// SuspendMS follows a cold start. ResuspendEvent is its event's *_ms
	// fields. Zero when not measured.
	ResuspendMS    float64            `json:"resuspend_ms,omitempty"`
	ResuspendEvent map[string]float64 `json:"resuspend_event_ms,omitempty"`
	ResumeMS       float64            `json:"resume_ms"`     // start → first byte, from suspended
	ResumeAPIMS    float64            `json:"resume_api_ms"` // the start call alone
	ResumeAttempts int                `json:"resume_attempts"`
	// RawMS is a restore of the same snapshot with runsc alone (restore,
	// kill --all SIGCONT) to the first byte, just before torpor's resume;
	// RawRestoreMS the runsc restore command alone (see rawRestore).
	// PageCacheGBs is a read of the snapshot's files from the page cache
	// in the same moment. Zero when not measured.
	RawMS        float64 `json:"raw_ms,omitempty"`
	RawRestoreMS float64 `json:"raw_restore_ms,omitempty"`
	PageCacheGBs float64 `json:"page_cache_gbs,omitempty"`
	// ProxyWakeMS is a request through the daemon's proxy to the suspended
	// machine, to its first byte: the proxy wakes it (resume + proxy). Zero
	// when not measured.
	ProxyWakeMS       float64 `json:"proxy_wake_ms,omitempty"`
	ProxyWakeAttempts int     `json:"proxy_wake_attempts,omitempty"`
	// ProxyWakeEvent is the *_ms fields of the proxied wake's resume
	// event: what of the wake was the daemon's resume.
	ProxyWakeEvent map[string]float64 `json:"proxy_wake_event_ms,omitempty"`
	// WarmResumeMS is a resume of the suspended machine into a sandbox
	// created ahead (Config.Warm), to its first byte; WarmResumeAPIMS the
	// start call alone, WarmRuntimeRestoreMS the event's
	// runtime_restore_ms. Zero when not measured.
	WarmResumeMS         float64 `json:"warm_resume_ms,omitempty"`
	WarmResumeAPIMS      float64 `json:"warm_resume_api_ms,omitempty"`
	WarmRuntimeRestoreMS float64 `json:"warm_runtime_restore_ms,omitempty"`
	// WarmResumeEvent is the *_ms fields of the warm resume's event.
	WarmResumeEvent map[string]float64 `json:"warm_resume_event_ms,omitempty"`
	// ResumeEvent and SuspendEvent are the *_ms fields of the resume and
	// suspend events (the daemon's own breakdown).
	ResumeEvent  map[string]float64 `json:"resume_event_ms"`
	SuspendEvent map[string]float64 `json:"suspend_event_ms"`
	// Order is the order in which this run brought the machine back
	// ("resume", "warm resume", "proxied wake"): it rotates from run to run.
	Order []string `json:"order,omitempty"`
}

// ScenarioResult is a scenario's samples.
type ScenarioResult struct {
	Scenario
	MachineID string   `json:"machine_id"`
	Samples   []Sample `json:"samples"`
	// Verified says what the final check after the last resume found: every
	// ballast block and the index intact.
	Verified string `json:"verified"`
}

// appPort is where app.py serves.
const appPort = "8080"

// runScenario creates the scenario's machine, measures cfg.Runs runs, checks
// the app's memory after the last resume and destroys the machine.
func runScenario(ctx context.Context, c *client.Client, cfg Config, s Scenario, raw *rawRestore, warm *machine.Manager) (sr ScenarioResult, err error) {
	sr.Scenario = s
	progress(cfg, "%s: creating a machine (guest %d MiB)", s, s.GuestMB)
	mcfg := machineConfig(cfg, s)
	if cfg.ProxyWake {
		port, err := freeport.Pick()
		if err != nil {
			return sr, err
		}
		mcfg.Services = proxiedService(port)
	}
	m, err := c.CreateMachine(ctx, cfg.App, model.CreateMachineRequest{Config: mcfg})
	if err != nil {
		return sr, err
	}
	sr.MachineID = m.ID
	defer func() {
		if derr := c.Destroy(context.Background(), cfg.App, m.ID, true); derr != nil {
			err = errors.Join(err, fmt.Errorf("destroy machine %s: %w", m.ID, derr))
		}
	}()
	if m.PrivateIP == "" {
		return sr, errors.New("the machine has no private address: the daemon needs a network range")
	}
	r := run{c: c, cfg: cfg, app: cfg.App, id: m.ID, ip: m.PrivateIP, addr: net.JoinHostPort(m.PrivateIP, appPort), raw: raw, warm: warm}
	if port := proxyPort(m.Config); port > 0 {
		r.proxyAddr = net.JoinHostPort("127.0.0.1", fmt.Sprint(port))
	}
	if r.last, err = r.probe(ctx, "/"); err != nil {
		return sr, fmt.Errorf("%w\n%s", err, machineTail(ctx, c, cfg.App, m.ID))
	}
	for i := 1; i <= cfg.Runs; i++ {
		smp, err := r.once(ctx, i)
		if err != nil {
			return sr, fmt.Errorf("run %d: %w", i, err)
		}
		sr.Samples = append(sr.Samples, smp)
		progress(cfg, "%s: run %d/%d: cold %.0f ms, suspend %.0f ms (%.0f MiB), raw runsc %.0f ms, resume %.0f ms, suspend after a resume %.0f ms, warm resume %.0f ms, proxied wake %.0f ms (in the order %s)",
			s, i, cfg.Runs, smp.ColdMS, smp.SuspendMS, mib(smp.SnapshotBytes), smp.RawMS, smp.ResumeMS, smp.ResuspendMS, smp.WarmResumeMS, smp.ProxyWakeMS, strings.Join(smp.Order, ", "))
	}
	sr.Verified, err = r.verify(ctx)
	return sr, err
}

// machineConfig is the scenario's machine: app.py with its init cost and
// resident size.
func machineConfig(cfg Config, s Scenario) model.MachineConfig {
	return model.MachineConfig{
		Image: cfg.Image,
		Init:  model.InitConfig{Exec: []string{"python3", "-c", AppSource}},
		Env:   map[string]string{"INIT_SECONDS": fmt.Sprint(s.Init.Seconds), "RESIDENT_MB": fmt.Sprint(s.ResidentMB), "PORT": appPort},
		Guest: model.Guest{CPUs: cfg.CPUs, MemoryMB: s.GuestMB},
	}
}

// run drives one scenario's machine.
type run struct {
	c         *client.Client
	cfg       Config
	app, id   string
	ip        string
	addr      string           // the app's ip:port
	proxyAddr string           // the proxy's listener for the app ("": no proxied wake)
	raw       *rawRestore      // nil: no raw restore
	warm      *machine.Manager // nil: no resume into a warm sandbox
	last      appState         // the app's latest answer
}

// probe asks the app for path, through the proxy when there is one: after
// a proxied wake the proxy keeps a connection to the app open, which a
// single-threaded server (app.py) serves before any other.
func (r *run) probe(ctx context.Context, path string) (appState, error) {
	addr := r.addr
	if r.proxyAddr != "" {
		addr = r.proxyAddr
	}
	p, err := firstByte(ctx, addr, path, r.cfg.PollInterval)
	return p.state, err
}

// once stops the machine, then measures a cold start, a suspend and the
// ways of bringing it back (see restores), checking that each did what it
// says. n (from 1) is the run's number.
func (r *run) once(ctx context.Context, n int) (Sample, error) {
	var smp Sample
	if err := r.c.Stop(ctx, r.app, r.id, model.StopRequest{}); err != nil {
		return smp, fmt.Errorf("stop: %w", err)
	}
	if err := r.cold(ctx, &smp); err != nil {
		return smp, err
	}
	if err := r.suspend(ctx, &smp); err != nil {
		return smp, err
	}
	for i, v := range rotate(r.restores(), n-1) {
		smp.Order = append(smp.Order, v.name)
		if i > 0 {
			if err := r.resuspend(ctx, &smp); err != nil {
				return smp, fmt.Errorf("suspend before the %s: %w", v.name, err)
			}
		}
		if err := v.measure(ctx, &smp); err != nil {
			return smp, err
		}
	}
	return smp, nil
}

// restoreWay is one way of bringing the suspended machine back, timed.
type restoreWay struct {
	name    string
	measure func(context.Context, *Sample) error // from suspended to answering
}

// restores are the ways the scenario measures: the plain resume (after the
// raw restore of the same image), the resume into a warm sandbox and the
// proxied wake, when on. once rotates their order from run to run: each
// restore of a large machine needs its memory fresh within seconds of the
// last, and on some hosts the later ones were slower whatever their kind
// (docs/benchmarks.md, 2026-12-07), so a fixed order would pin that on
// the ones that come last.
func (r *run) restores() []restoreWay {
	ways := []restoreWay{{"resume", r.plainResume}}
	if r.warm != nil {
		ways = append(ways, restoreWay{"warm resume", r.warmResume})
	}
	if r.proxyAddr != "" {
		ways = append(ways, restoreWay{"proxied wake", r.proxyWake})
	}
	return ways
}

// rotate returns ways starting at k mod len(ways), wrapping around.
func rotate[T any](ways []T, k int) []T {
	if len(ways) == 0 {
		return nil
	}
	k %= len(ways)
	return append(append([]T{}, ways[k:]...), ways[:k]...)
}

// plainResume times the raw runsc restore of the snapshot, when on, and
// then torpor's resume of it with no sandbox created ahead.
func (r *run) plainResume(ctx context.Context, smp *Sample) error {
	if r.raw != nil {
		raw, err := r.raw.measure(ctx, r.id, r.ip, r.last, r.cfg.PollInterval)
		if err != nil {
			return err
		}
		smp.RawMS, smp.RawRestoreMS, smp.PageCacheGBs = raw.firstByteMS, raw.restoreMS, raw.cacheGBs
	}
	if r.warm != nil {
		// As before the warm resume, so that neither competes with the
		// daemon's background flush of the snapshot just written.
		if err := r.flushSnapshot(); err != nil {
			return err
		}
	}
	if err := r.resume(ctx, smp); err != nil {
		return err
	}
	ev, ok, err := r.newest(ctx, model.EventResume, "started")
	if ok {
		smp.ResumeEvent = durations(ev.Request)
	}
	return err
}

// proxyWake times a request through the proxy, which wakes the suspended
// machine, to its first byte.
func (r *run) proxyWake(ctx context.Context, smp *Sample) error {
	begin := time.Now()
	p, err := firstByte(ctx, r.proxyAddr, "/", r.cfg.PollInterval)
	if err != nil {
		return fmt.Errorf("proxied wake: %w", err)
	}
	smp.ProxyWakeMS, smp.ProxyWakeAttempts = millis(p.firstByte.Sub(begin)), p.attempts
	if !p.state.sameProcess(r.last) {
		return errors.New("proxied wake: the app answered from a new process")
	}
	// The proxy keeps its connection to the app open for 100 ms idle
	// (proxy.backendIdleTimeout). A suspend within that time would take it
	// into the snapshot open, and after the next restore the
	// single-threaded app would serve it first, until the proxy's close
	// reached it: the next way in the rotation would time that wait.
	time.Sleep(300 * time.Millisecond)
	ev, ok, err := r.newest(ctx, model.EventResume, "started")
	if ok {
		smp.ProxyWakeEvent = durations(ev.Request)
	}
	return err
}

// warmResume turns the daemon's warm sandboxes on (one, at the default
// cost) for the suspended machine, waits until its sandbox is created ahead
// and times a resume into it, to its first byte; the budget is off again
// afterwards, so that the plain resume creates its own.
func (r *run) warmResume(ctx context.Context, smp *Sample) error {
	r.warm.SetWarmBudget(machine.DefaultWarmSandboxCostMB)
	defer r.warm.SetWarmBudget(0)
	deadline := time.Now().Add(time.Minute)
	for r.warm.WarmStats().Sandboxes == 0 {
		if time.Now().After(deadline) {
			return errors.New("no warm sandbox a minute after the suspend")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := r.flushSnapshot(); err != nil {
		return err
	}
	if r.raw != nil {
		// The raw restore read the plain resume's image into the page
		// cache just before it: so does this one.
		dirs, _ := filepath.Glob(filepath.Join(r.cfg.DataDir, "machines", r.id, "snapshots", "*"))
		for _, d := range dirs {
			if _, err := pageCacheRead(d, 1); err != nil {
				return err
			}
		}
	}
	begin := time.Now()
	resp, err := r.c.Start(ctx, r.app, r.id)
	if err != nil {
		return fmt.Errorf("warm resume: %w", err)
	}
	smp.WarmResumeAPIMS = millis(time.Since(begin))
	if !resp.FromSnapshot {
		return fmt.Errorf("warm resume fell back to a cold start (%s)", r.fallbackReason(ctx))
	}
	p, err := firstByte(ctx, r.addr, "/", r.cfg.PollInterval)
	if err != nil {
		return fmt.Errorf("warm resume: %w", err)
	}
	smp.WarmResumeMS = millis(p.firstByte.Sub(begin))
	if !p.state.sameProcess(r.last) {
		return errors.New("warm resume: the app answered from a new process")
	}
	ev, ok, err := r.newest(ctx, model.EventResume, "started")
	if err != nil {
		return err
	}
	if d := ev.Start(); !ok || d == nil || !d.WarmSandbox {
		return errors.New("warm resume: the resume event says it did not use the warm sandbox")
	} else if d.ResumePhases != nil {
		smp.WarmRuntimeRestoreMS = float64(d.RuntimeRestoreMS)
	}
	smp.WarmResumeEvent = durations(ev.Request)
	return nil
}

// flushSnapshot writes the machine's snapshot files to disk (the daemon
// flushes them in the background after a suspend; a second flush only
// waits for that one).
func (r *run) flushSnapshot() error {
	dirs, err := filepath.Glob(filepath.Join(r.cfg.DataDir, "machines", r.id, "snapshots", "*"))
	for _, d := range dirs {
		err = errors.Join(err, snapshot.Flush(context.Background(), d))
	}
	return err
}

func (r *run) cold(ctx context.Context, smp *Sample) error {
	begin := time.Now()
	resp, err := r.c.Start(ctx, r.app, r.id)
	if err != nil {
		return fmt.Errorf("cold start: %w", err)
	}
	smp.ColdAPIMS = millis(time.Since(begin))
	p, err := firstByte(ctx, r.addr, "/", r.cfg.PollInterval)
	if err != nil {
		return fmt.Errorf("cold start: %w", err)
	}
	smp.ColdMS, smp.ColdAttempts = millis(p.firstByte.Sub(begin)), p.attempts
	if resp.FromSnapshot || p.state.sameProcess(r.last) {
		return errors.New("cold start: the app answered from the process that was stopped")
	}
	r.last = p.state
	smp.InitSeconds, smp.ReadySeconds, smp.RSSBytes = p.state.InitSeconds, p.state.ReadySeconds, p.state.RSSBytes
	return nil
}

func (r *run) suspend(ctx context.Context, smp *Sample) error {
	begin := time.Now()
	if err := r.c.Suspend(ctx, r.app, r.id); err != nil {
		return fmt.Errorf("suspend: %w", err)
	}
	smp.SuspendMS = millis(time.Since(begin))
	m, err := r.c.GetMachine(ctx, r.app, r.id)
	if err != nil {
		return err
	}
	if m.State != model.StateSuspended {
		return fmt.Errorf("suspend returned but the machine is %s", m.State)
	}
	if r.cfg.dataDirSet() {
		smp.SnapshotSource = "disk"
		if smp.SnapshotBytes, smp.SnapshotApparent, err = diskUsage(filepath.Join(r.cfg.DataDir, "machines", r.id, "snapshots")); err != nil {
			return err
		}
	}
	ev, ok, err := r.newest(ctx, model.EventSuspend, "suspended")
	if ok {
		smp.SuspendEvent = durations(ev.Request)
		if d := ev.Suspend(); d != nil && smp.SnapshotSource == "" {
			smp.SnapshotBytes, smp.SnapshotApparent, smp.SnapshotSource = d.SizeBytes, d.SizeBytes, "event"
		}
	}
	return err
}

func (r *run) resume(ctx context.Context, smp *Sample) error {
	begin := time.Now()
	resp, err := r.c.Start(ctx, r.app, r.id)
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	smp.ResumeAPIMS = millis(time.Since(begin))
	if !resp.FromSnapshot {
		return fmt.Errorf("resume fell back to a cold start (%s)", r.fallbackReason(ctx))
	}
	p, err := firstByte(ctx, r.addr, "/", r.cfg.PollInterval)
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	smp.ResumeMS, smp.ResumeAttempts = millis(p.firstByte.Sub(begin)), p.attempts
	if !p.state.sameProcess(r.last) {
		return errors.New("resume: the app answered from a new process")
	}
	return nil
}

// verify asks the app to check its ballast and index after the last resume.
func (r *run) verify(ctx context.Context) (string, error) {
	st, err := r.probe(ctx, "/verify")
	if err != nil {
		return "", err
	}
	if st.BadBlocks != 0 || !st.IndexOK {
		return "", fmt.Errorf("memory damaged after resume: %d bad ballast blocks of %d, index ok %v", st.BadBlocks, st.BallastMB, st.IndexOK)
	}
	return fmt.Sprintf("%d ballast MiB and the index intact after the last resume", st.BallastMB), nil
}

// resuspend suspends the machine after a resume; the first in a run is
// timed (Sample.ResuspendMS).
func (r *run) resuspend(ctx context.Context, smp *Sample) error {
	begin := time.Now()
	if err := r.c.Suspend(ctx, r.app, r.id); err != nil {
		return err
	}
	if smp.ResuspendMS > 0 {
		return nil
	}
	smp.ResuspendMS = millis(time.Since(begin))
	ev, ok, err := r.newest(ctx, model.EventSuspend, "suspended")
	if ok {
		smp.ResuspendEvent = durations(ev.Request)
	}
	return err
}

// newest fetches the machine's events and returns the newest of typ with
// status, if any.
func (r *run) newest(ctx context.Context, typ, status string) (model.Event, bool, error) {
	evs, err := r.c.Events(ctx, r.app, r.id)
	if err != nil {
		return model.Event{}, false, err
	}
	ev, ok := model.Newest(evs, typ, status)
	return ev, ok, nil
}

// fallbackReason is the reason of the newest resume event, for errors.
func (r *run) fallbackReason(ctx context.Context) string {
	ev, ok, err := r.newest(ctx, model.EventResume, "started")
	if err != nil {
		return err.Error()
	}
	if ok && ev.Start() != nil {
		return string(ev.Start().Fallback) + ": " + ev.Start().Reason
	}
	return "no resume event"
}

// durations picks an event's top-level *_ms numbers (clock_* are skews, not
// durations, and are left out). The names are the JSON names of the event's typed details
// (model.StartDetails, model.ResumePhases, model.SuspendDetails), so the
// report always names what the daemon emits.
func durations(details model.EventDetails) map[string]float64 {
	out := map[string]float64{}
	var fields map[string]any
	if b, err := json.Marshal(details); err != nil || json.Unmarshal(b, &fields) != nil {
		return out
	}
	for k, v := range fields {
		f, ok := v.(float64)
		if ok && strings.HasSuffix(k, "_ms") && !strings.HasPrefix(k, "clock_") {
			out[k] = f
		}
	}
	return out
}

// diskUsage adds up the blocks and the sizes of the regular files under
// dir, which must exist (a snapshot directory missing is a failed run).
func diskUsage(dir string) (blocks, apparent int64, err error) {
	if _, err := os.Stat(dir); err != nil {
		return 0, 0, err
	}
	u, err := diskusage.Of(dir)
	return u.Allocated, u.Apparent, err
}

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// machineTail is what a failed probe's error adds: the machine's state and
// the last lines of its console.
func machineTail(ctx context.Context, c *client.Client, app, id string) string {
	var b strings.Builder
	if m, err := c.GetMachine(ctx, app, id); err == nil {
		fmt.Fprintf(&b, "machine %s is %s; its console's last lines:\n", id, m.State)
	}
	var lines []string
	c.Logs(ctx, app, id, client.LogQuery{}, func(r logs.Record) error {
		lines = append(lines, r.Line)
		return nil
	})
	b.WriteString(strings.Join(lines[max(0, len(lines)-15):], "\n"))
	return b.String()
}

// proxiedService publishes the app's port through the proxy on port, with
// autostart (the proxy wakes the machine) and no autostop.
func proxiedService(port int) []model.Service {
	on, off, zero := true, model.AutostopOff, 0
	return []model.Service{{Protocol: "tcp", InternalPort: 8080,
		Ports:    []model.Port{{Port: &port, Handlers: []string{"http"}}},
		Autostop: &off, Autostart: &on, MinMachinesRunning: &zero}}
}

// proxyPort is the port a machine config publishes through the proxy; 0 if none.
func proxyPort(cfg model.MachineConfig) int {
	for _, s := range cfg.Services {
		for _, p := range s.Ports {
			if p.Port != nil {
				return *p.Port
			}
		}
	}
	return 0
}
