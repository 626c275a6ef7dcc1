// Package metrics owns torpor's Prometheus registry and the definitions of
// its metrics: their names, help texts, labels and histogram buckets, and
// how they are served (GET /metrics, in the Prometheus text format, with an
// app token seeing only its apps' series). The list is in docs/metrics.md.
//
// It does not own the data. The machine lifecycle feeds it every committed
// change (Observe, subscribed to machine.Manager.Subscribe); the proxy
// reports requests, waits and wakes (Metrics implements proxy.Observer);
// machines by state, snapshot disk usage, images and volumes are read when
// Prometheus scrapes, from the functions in Config. No label takes a value
// per request, per machine or per image: labels are apps, states, sources,
// phases, reasons, services (internal ports) and status codes, so the
// number of series stays bounded by what the operator configures.
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/torpor-dev/torpor/internal/model"
)

// Machines lists apps and machines at scrape time; machine.Manager
// implements it.
type Machines interface {
	ListApps(ctx context.Context) ([]model.App, error)
	List(ctx context.Context, app string) ([]model.Machine, error)
}

// SnapshotUsage is what snapshot images take on disk now.
type SnapshotUsage struct {
	Images int
	Bytes  int64
}

// ImageUsage is what pulled images take on disk now.
type ImageUsage struct {
	Images int
	Bytes  int64
}

// VolumeUsage is one volume's size and use, labelled by its app.
type VolumeUsage struct {
	App       string
	SizeBytes int64 // the volume's capacity
	UsedBytes int64 // used in its filesystem
}

// WarmUsage is what the warm sandboxes (created ahead of resumes) take now.
type WarmUsage struct {
	Sandboxes   int
	MemoryBytes int64 // charged against the budget
	BudgetBytes int64
}

// Config says where the metrics read at scrape time come from. Nil
// functions leave their metrics out.
type Config struct {
	Machines  Machines
	Snapshots func() (SnapshotUsage, error)
	// Images and Volumes are for package image and package volume: the
	// images kept on this host, and every volume (of every app).
	Images  func() (ImageUsage, error)
	Volumes func() ([]VolumeUsage, error)
	// Warm reports the sandboxes created ahead of resumes (machine/warm.go).
	Warm func() WarmUsage
	// Version, Runtime and RuntimeVersion label torpor_build_info (the
	// version defaults to the binary's module version or VCS revision).
	Version, Runtime, RuntimeVersion string
	// Logger gets the failures of scrape-time sources (default slog.Default()).
	Logger *slog.Logger
}

// DurationBuckets are the buckets of every duration histogram, in seconds:
// they resolve 10 ms to 30 s, fine where resumes are (tens to hundreds of
// milliseconds) and coarser where cold starts of big apps are.
var DurationBuckets = []float64{0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30}

// Metrics is one daemon's registry. It is safe for concurrent use.
type Metrics struct {
	cfg Config
	reg *prometheus.Registry

	transitions     *prometheus.CounterVec
	coldStart       *prometheus.HistogramVec
	resume          *prometheus.HistogramVec
	resumePhases    *prometheus.HistogramVec
	suspend         *prometheus.HistogramVec
	suspendPhases   *prometheus.HistogramVec
	failures        *prometheus.CounterVec
	fallbacks       *prometheus.CounterVec
	snapshotWritten prometheus.Counter
	warmResumes     *prometheus.CounterVec

	proxyRequests    *prometheus.CounterVec
	proxyConnections *prometheus.CounterVec
	proxyWaiting     *prometheus.GaugeVec
	proxyWait        *prometheus.HistogramVec
	proxyWaitTimeout *prometheus.CounterVec
	proxyWakes       *prometheus.CounterVec
	proxyWakeTime    *prometheus.HistogramVec

	imagePulls     *prometheus.CounterVec
	imagePullTime  prometheus.Histogram
	imagePullBytes prometheus.Counter
}

// New returns the registry with every metric defined, the Go runtime and
// process collectors included.
func New(cfg Config) *Metrics {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Version == "" {
		cfg.Version = buildVersion()
	}
	m := &Metrics{cfg: cfg, reg: prometheus.NewRegistry()}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		m.reg.MustRegister(v)
		return v
	}
	histogram := func(name, help string, labels ...string) *prometheus.HistogramVec {
		v := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: DurationBuckets}, labels)
		m.reg.MustRegister(v)
		return v
	}
	m.transitions = counter("torpor_machine_transitions_total",
		"Machine state transitions, by the state left (\"none\" for a new machine), the state entered and who caused it (user, proxy, flyd, machine).",
		"from", "to", "source")
	m.coldStart = histogram("torpor_machine_cold_start_duration_seconds",
		"Cold starts, from the start call until the machine was recorded started; kind is \"start\", or \"fallback\" for a resume that could not use its snapshot.",
		"app", "kind")
	m.resume = histogram("torpor_machine_resume_duration_seconds",
		"Resumes from a snapshot, from the start call until the machine was recorded started (the app told of the resume included).",
		"app")
	m.resumePhases = histogram("torpor_machine_resume_phase_duration_seconds",
		"Where resumes from a snapshot spend their time: claim, prepare, runtime_restore, verify (beside the restore), verify_wait, restore (all of these), app_notice (telling the app).",
		"phase")
	m.suspend = histogram("torpor_machine_suspend_duration_seconds",
		"Suspends that sealed a snapshot, from the suspend call until the machine was recorded suspended.",
		"app")
	m.suspendPhases = histogram("torpor_machine_suspend_phase_duration_seconds",
		"Where suspends spend their time: pre_suspend (the app's hook), checkpoint, seal.",
		"phase")
	m.failures = counter("torpor_machine_operation_failures_total",
		"Starts and suspends that failed (a failed suspend leaves the machine started).",
		"app", "operation")
	m.fallbacks = counter("torpor_machine_resume_fallbacks_total",
		"Resumes that could not use their snapshot and cold-started instead, by reason.",
		"app", "reason")
	m.warmResumes = counter("torpor_machine_resume_warm_total",
		"Resumes from a snapshot by whether they restored into a sandbox created ahead (result \"hit\") or created one (\"miss\"); see --warm-sandboxes-memory.",
		"app", "result")
	m.snapshotWritten = prometheus.NewCounter(prometheus.CounterOpts{Name: "torpor_snapshot_written_bytes_total",
		Help: "Bytes of snapshot images sealed by suspends."})
	m.reg.MustRegister(m.snapshotWritten)

	m.proxyRequests = counter("torpor_proxy_requests_total",
		"HTTP requests through the proxy, by app, service (its internal_port) and status code.",
		"app", "service", "code")
	m.proxyConnections = counter("torpor_proxy_connections_total",
		"TCP connections accepted by the proxy on raw TCP services, by app and service (internal_port).",
		"app", "service")
	m.proxyWaiting = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "torpor_proxy_requests_waiting",
		Help: "Requests and connections held by the proxy now, waiting for a machine to wake or for capacity."}, []string{"app"})
	m.reg.MustRegister(m.proxyWaiting)
	m.proxyWait = histogram("torpor_proxy_wait_duration_seconds",
		"How long requests and connections that found no machine ready waited for one (a wake, or capacity).",
		"app")
	m.proxyWaitTimeout = counter("torpor_proxy_wait_timeouts_total",
		"Requests and connections that gave up waiting for a machine after the wake timeout (answered 503 or closed).",
		"app")
	m.proxyWakes = counter("torpor_proxy_wakes_total",
		"Machines the proxy woke (started) for traffic, by result: started, failed, or timeout (not started within the wake timeout).",
		"app", "result")
	m.proxyWakeTime = histogram("torpor_proxy_wake_duration_seconds",
		"How long the proxy's wakes took, as the proxy saw them (resume or cold start).",
		"app")

	m.imagePulls = counter("torpor_image_pulls_total", "Image pulls, by result (ok, failed).", "result")
	m.imagePullTime = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "torpor_image_pull_duration_seconds",
		Help: "How long image pulls took.", Buckets: DurationBuckets})
	m.imagePullBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "torpor_image_pull_bytes_total",
		Help: "Bytes image pulls fetched from registries."})
	m.reg.MustRegister(m.imagePullTime, m.imagePullBytes)

	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&scraped{m: m})
	return m
}

// Registry is the underlying registry, for tests and for registering more.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Observe records one committed change of a machine: its transition, and
// the durations and outcomes of the events committed with it. It is meant
// for machine.Manager.Subscribe and only touches counters and histograms.
func (m *Metrics) Observe(c model.Change) {
	if c.Transition() {
		from := string(c.From)
		if from == "" {
			from = "none"
		}
		m.transitions.WithLabelValues(from, string(c.Machine.State), c.Source).Inc()
	}
	app := c.Machine.App
	for _, ev := range c.Events {
		switch {
		case (ev.Type == model.EventStart || ev.Type == model.EventResume) && ev.Status == "started":
			m.observeStart(app, ev.Start())
		case ev.Type == model.EventStart && ev.Status == "failed":
			m.failures.WithLabelValues(app, "start").Inc()
		case ev.Type == model.EventSuspend && ev.Status == "suspended":
			m.observeSuspend(app, ev.Suspend())
		case ev.Type == model.EventSuspend && ev.Status == "failed":
			m.failures.WithLabelValues(app, "suspend").Inc()
		}
	}
}

func (m *Metrics) observeStart(app string, d *model.StartDetails) {
	if d == nil {
		return
	}
	if !d.FromSnapshot {
		kind := "start"
		if d.Fallback != "" || d.Reason != "" {
			kind = "fallback"
			reason := d.Fallback
			if reason == "" {
				reason = model.FallbackOther
			}
			m.fallbacks.WithLabelValues(app, string(reason)).Inc()
		}
		m.coldStart.WithLabelValues(app, kind).Observe(seconds(d.DurationMS))
		return
	}
	m.resume.WithLabelValues(app).Observe(seconds(d.DurationMS))
	warm := "miss"
	if d.WarmSandbox {
		warm = "hit"
	}
	m.warmResumes.WithLabelValues(app, warm).Inc()
	if p := d.ResumePhases; p != nil {
		for phase, ms := range map[string]int64{"claim": p.ClaimMS, "prepare": p.PrepareMS,
			"runtime_restore": p.RuntimeRestoreMS, "verify": p.VerifyMS, "verify_wait": p.VerifyWaitMS,
			"restore": p.RestoreMS, "app_notice": d.DurationMS - p.RestoreMS} {
			m.resumePhases.WithLabelValues(phase).Observe(seconds(ms))
		}
	}
}

func (m *Metrics) observeSuspend(app string, d *model.SuspendDetails) {
	if d == nil {
		return
	}
	m.suspend.WithLabelValues(app).Observe(seconds(d.DurationMS))
	m.suspendPhases.WithLabelValues("checkpoint").Observe(seconds(d.CheckpointMS))
	m.suspendPhases.WithLabelValues("seal").Observe(seconds(d.SealMS))
	if d.PreSuspend != nil {
		m.suspendPhases.WithLabelValues("pre_suspend").Observe(seconds(d.PreSuspend.DurationMS))
	}
	m.snapshotWritten.Add(float64(d.SizeBytes))
}

// ImagePull records one image pull: how long it took, the bytes it
// fetched and how it ended (err nil: pulled). Package image (or a
// decorator of its Pull) calls it.
func (m *Metrics) ImagePull(took time.Duration, bytes int64, err error) {
	result := "ok"
	if err != nil {
		result = "failed"
	}
	m.imagePulls.WithLabelValues(result).Inc()
	m.imagePullTime.Observe(took.Seconds())
	if bytes > 0 {
		m.imagePullBytes.Add(float64(bytes))
	}
}

// The proxy.Observer methods.

// Request counts an HTTP request through the proxy.
func (m *Metrics) Request(app string, port, code int) {
	m.proxyRequests.WithLabelValues(app, strconv.Itoa(port), strconv.Itoa(code)).Inc()
}

// Connection counts a TCP connection through the proxy.
func (m *Metrics) Connection(app string, port int) {
	m.proxyConnections.WithLabelValues(app, strconv.Itoa(port)).Inc()
}

// Waiting moves the gauge of requests held while waiting for a machine.
func (m *Metrics) Waiting(app string, delta int) {
	m.proxyWaiting.WithLabelValues(app).Add(float64(delta))
}

// Waited records how long a request or connection waited for a machine.
func (m *Metrics) Waited(app string, d time.Duration, timedOut bool) {
	m.proxyWait.WithLabelValues(app).Observe(d.Seconds())
	if timedOut {
		m.proxyWaitTimeout.WithLabelValues(app).Inc()
	}
}

// Woke records a wake by the proxy.
func (m *Metrics) Woke(app string, d time.Duration, result string) {
	m.proxyWakes.WithLabelValues(app, result).Inc()
	m.proxyWakeTime.WithLabelValues(app).Observe(d.Seconds())
}

func seconds(ms int64) float64 { return float64(max(ms, 0)) / 1000 }

// Handler serves every metric, to whoever asks: for a listener of its own
// (torpor serve --metrics-listen).
func (m *Metrics) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { m.ServeMetrics(w, r, nil) })
}

// buildVersion names the running binary: its module version when it was
// built from a tagged module, else its VCS revision ("+dirty" when the tree
// had changes), else "unknown".
func buildVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", ""
	for _, s := range info.Settings {
		switch {
		case s.Key == "vcs.revision":
			rev = s.Value[:min(12, len(s.Value))]
		case s.Key == "vcs.modified" && s.Value == "true":
			dirty = "+dirty"
		}
	}
	if rev == "" {
		return "unknown"
	}
	return rev + dirty
}
