package metrics_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/torpor-dev/torpor/internal/machine/machinetest"
	"github.com/torpor-dev/torpor/internal/metrics"
	"github.com/torpor-dev/torpor/internal/proxy"
)

// env is the metrics of a real machine manager on the fake runtime.
type env struct {
	*machinetest.Env
	m *metrics.Metrics
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{Env: machinetest.New(t)}
	e.m = metrics.New(metrics.Config{
		Machines: e.M,
		Snapshots: func() (metrics.SnapshotUsage, error) {
			u, err := e.M.SnapshotUsage()
			return metrics.SnapshotUsage{Images: u.Images, Bytes: u.Bytes}, err
		},
		Volumes: func() ([]metrics.VolumeUsage, error) {
			return []metrics.VolumeUsage{{App: "web", SizeBytes: 1 << 30, UsedBytes: 1 << 20}, {App: "web", SizeBytes: 1 << 30}}, nil
		},
		Images: func() (metrics.ImageUsage, error) { return metrics.ImageUsage{}, errors.New("no images here") },
		Warm: func() metrics.WarmUsage {
			w := e.M.WarmStats()
			return metrics.WarmUsage{Sandboxes: w.Sandboxes, MemoryBytes: w.MemoryBytes, BudgetBytes: w.BudgetBytes}
		},
		Version: "test", Runtime: "fake", RuntimeVersion: "v1",
	})
	t.Cleanup(e.M.Subscribe(e.m.Observe))
	return e
}

// scrape returns the text served at /metrics to a caller that allow
// accepts (nil: an admin).
func (e *env) scrape(t *testing.T, allow func(string) bool) string {
	t.Helper()
	rec := httptest.NewRecorder()
	e.m.ServeMetrics(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil), allow)
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

func has(t *testing.T, text string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(text, "\n"+l+"\n") {
			t.Errorf("no line %q in the metrics", l)
		}
	}
}

// TestMachineLifecycleMetrics runs a machine through create, suspend,
// resume, a fallback resume and a failed suspend, and checks what each
// leaves in the metrics, and that the whole output passes promlint.
func TestMachineLifecycleMetrics(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.App(t, "web")
	e.App(t, "api")
	mc := e.Machine(t, "web")
	if err := e.M.Suspend(ctx, "web", mc.ID); err != nil {
		t.Fatal(err)
	}
	text := e.scrape(t, nil)
	has(t, text,
		`torpor_machines{app="web",state="suspended"} 1`,
		`torpor_machines{app="web",state="started"} 0`,
		`torpor_machines{app="api",state="started"} 0`,
		`torpor_snapshot_images 1`,
		`torpor_machine_suspend_duration_seconds_count{app="web"} 1`,
		`torpor_machine_suspend_phase_duration_seconds_count{phase="checkpoint"} 1`,
		`torpor_machine_transitions_total{from="none",source="user",to="created"} 1`,
		`torpor_machine_transitions_total{from="started",source="user",to="suspending"} 1`,
		`torpor_machine_transitions_total{from="suspending",source="user",to="suspended"} 1`,
		`torpor_machine_cold_start_duration_seconds_count{app="web",kind="start"} 1`,
		`torpor_volumes{app="web"} 2`,
		`torpor_volume_used_bytes{app="web"} 1.048576e+06`,
		`torpor_scrape_source_up{source="images"} 0`,
		`torpor_scrape_source_up{source="machines"} 1`,
		`torpor_build_info{runtime="fake",runtime_version="v1",version="test"} 1`,
	)
	if !strings.Contains(text, "torpor_snapshot_disk_bytes ") || strings.Contains(text, "torpor_snapshot_disk_bytes 0\n") {
		t.Error("snapshot disk bytes missing or zero with a snapshot on disk")
	}
	if strings.Contains(text, "torpor_snapshot_written_bytes_total 0\n") {
		t.Error("no snapshot bytes written counted")
	}

	if _, err := e.M.Start(ctx, "web", mc.ID); err != nil {
		t.Fatal(err)
	}
	text = e.scrape(t, nil)
	has(t, text,
		`torpor_machine_resume_duration_seconds_count{app="web"} 1`,
		`torpor_machine_resume_phase_duration_seconds_count{phase="runtime_restore"} 1`,
		`torpor_machine_resume_phase_duration_seconds_count{phase="app_notice"} 1`,
		`torpor_machines{app="web",state="started"} 1`,
		`torpor_machine_transitions_total{from="suspended",source="user",to="starting"} 1`,
		`torpor_machine_resume_warm_total{app="web",result="miss"} 1`,
		`torpor_warm_sandboxes 0`,
		`torpor_warm_sandbox_memory_bytes 0`,
		`torpor_warm_sandbox_budget_bytes 0`,
	)

	// A resume whose snapshot is gone cold-starts: a fallback, by reason.
	if err := e.M.Suspend(ctx, "web", mc.ID); err != nil {
		t.Fatal(err)
	}
	dirs, _ := filepath.Glob(filepath.Join(e.DataDir, "machines", mc.ID, "snapshots", "*"))
	for _, d := range dirs {
		os.RemoveAll(d)
	}
	if resp, err := e.M.Start(ctx, "web", mc.ID); err != nil || resp.FromSnapshot {
		t.Fatalf("start = %+v, %v; want a cold start", resp, err)
	}
	// A failed suspend leaves the machine started and is counted.
	e.RT.Fail("checkpoint", errors.New("boom"))
	if err := e.M.Suspend(ctx, "web", mc.ID); err == nil {
		t.Fatal("suspend did not fail")
	}
	text = e.scrape(t, nil)
	has(t, text,
		`torpor_machine_resume_fallbacks_total{app="web",reason="snapshot_missing"} 1`,
		`torpor_machine_cold_start_duration_seconds_count{app="web",kind="fallback"} 1`,
		`torpor_machine_operation_failures_total{app="web",operation="suspend"} 1`,
	)
	lint(t, e)
}

// lint runs promlint over the whole output, Go and process collectors
// included.
func lint(t *testing.T, e *env) {
	t.Helper()
	problems, err := promlint.NewWithMetricFamilies(mustGather(t, e)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func mustGather(t *testing.T, e *env) []*dto.MetricFamily {
	t.Helper()
	fams, err := e.m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// TestProxyMetrics makes the proxy's observer calls (the proxy's own tests
// check it makes them; the daemon's metrics test runs the real path) and
// checks what they count.
func TestProxyMetrics(t *testing.T) {
	e := newEnv(t)
	var obs proxy.Observer = e.m // Metrics is the proxy's observer
	obs.Request("web", 8080, 200)
	obs.Request("web", 8080, 200)
	obs.Request("web", 8080, 503)
	obs.Connection("web", 5432)
	obs.Waiting("web", 1)
	obs.Waiting("web", 1)
	obs.Waiting("web", -1)
	obs.Waited("web", 150*time.Millisecond, false)
	obs.Waited("web", 30*time.Second, true)
	obs.Woke("web", 200*time.Millisecond, proxy.WakeStarted)
	obs.Woke("web", 30*time.Second, proxy.WakeTimeout)
	text := e.scrape(t, nil)
	has(t, text,
		`torpor_proxy_requests_total{app="web",code="200",service="8080"} 2`,
		`torpor_proxy_requests_total{app="web",code="503",service="8080"} 1`,
		`torpor_proxy_connections_total{app="web",service="5432"} 1`,
		`torpor_proxy_requests_waiting{app="web"} 1`,
		`torpor_proxy_wait_duration_seconds_count{app="web"} 2`,
		`torpor_proxy_wait_timeouts_total{app="web"} 1`,
		`torpor_proxy_wakes_total{app="web",result="timeout"} 1`,
		`torpor_proxy_wakes_total{app="web",result="started"} 1`,
		`torpor_proxy_wake_duration_seconds_bucket{app="web",le="0.2"} 1`,
	)
	e.m.ImagePull(2*time.Second, 5<<20, nil)
	e.m.ImagePull(time.Second, 0, errors.New("unreachable"))
	text = e.scrape(t, nil)
	has(t, text, `torpor_image_pulls_total{result="ok"} 1`, `torpor_image_pulls_total{result="failed"} 1`,
		`torpor_image_pull_bytes_total 5.24288e+06`)
	lint(t, e)
}

// TestAppScopedMetrics checks what a caller limited to some apps sees:
// only series labelled with those apps, nothing daemon-wide.
func TestAppScopedMetrics(t *testing.T) {
	e := newEnv(t)
	e.App(t, "web")
	e.App(t, "secret")
	e.Machine(t, "web")
	e.Machine(t, "secret")
	e.m.Request("secret", 80, 200)
	text := e.scrape(t, func(app string) bool { return app == "web" })
	has(t, text, `torpor_machines{app="web",state="started"} 1`)
	for _, leak := range []string{`app="secret"`, "go_goroutines", "process_", "torpor_build_info", "torpor_machine_transitions_total"} {
		if strings.Contains(text, leak) {
			t.Errorf("an app-scoped scrape shows %s:\n%s", leak, text)
		}
	}
	all := e.scrape(t, nil)
	has(t, all, `torpor_machines{app="secret",state="started"} 1`)
	if !strings.Contains(all, "go_goroutines") || !strings.Contains(all, "process_cpu_seconds_total") {
		t.Error("an admin scrape lacks the Go or process collectors")
	}
}

// TestMetricsHandlerNegotiates checks the handler of --metrics-listen
// answers the text format to a plain client.
func TestMetricsHandlerNegotiates(t *testing.T) {
	e := newEnv(t)
	e.App(t, "web")
	srv := httptest.NewServer(e.m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") || !strings.Contains(string(body), "# TYPE torpor_machines gauge") {
		t.Fatalf("Content-Type %q, body:\n%s", ct, body)
	}
}
