package daemon_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/torpor-dev/torpor/internal/model"
)

// scrape GETs /metrics with client c at base (a token if given) and
// returns the status and body.
func scrape(t *testing.T, c *http.Client, base, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", base+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// value returns the value of the series line that starts with series.
func value(text, series string) (string, bool) {
	for _, l := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(l, series+" "); ok {
			return rest, true
		}
	}
	return "", false
}

// TestMetricsAfterSuspendResume runs a machine through a suspend and a
// resume by the API and a wake by the proxy on the real runtime, then
// reads /metrics on the admin socket (everything), on the TCP listener
// (401 without a token, an app token's apps only, everything to an admin
// token) and on --metrics-listen (no token), and lints the whole output.
func TestMetricsAfterSuspendResume(t *testing.T) {
	apiPort, metricsPort, svcPort := freePort(t), freePort(t), freePort(t)
	d := newDaemon(t, "--listen", fmt.Sprintf("127.0.0.1:%d", apiPort), "--metrics-listen", fmt.Sprintf("127.0.0.1:%d", metricsPort))
	c := ctx(t)
	other := d.app + "-other"
	if _, err := d.c.CreateApp(c, other, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.c.DeleteApp(context.Background(), other) })
	// The metrics listener's port is the daemon's: no service may take it.
	if _, err := d.c.CreateMachine(c, d.app, model.CreateMachineRequest{Config: serviceConfig(metricsPort, []string{"http"}, model.AutostopOff, 0)}); err == nil ||
		!strings.Contains(err.Error(), "reserved for the daemon's metrics listener") {
		t.Fatalf("a service on the metrics port: %v", err)
	}
	d.newVolume("metrics_vol", 1) // the harness destroys it
	m := d.create(serviceConfig(svcPort, []string{"http"}, model.AutostopOff, 0))
	waitProxy(t, svcPort)
	d.suspend(m.ID)
	if resp := d.start(m.ID); !resp.FromSnapshot {
		t.Fatal("the API's start did not resume")
	}
	local := d.adminHTTP(30 * time.Second)
	app := fmt.Sprintf("app=%q", d.app)
	// The first proxied requests may have waited too, while the new machine
	// came up in the proxy's view: the wake below must add exactly one wait.
	waitSeries := `torpor_proxy_wait_duration_seconds_count{` + app + `}`
	_, before := scrape(t, local, "http://torpor", "")
	waitsBefore := 0
	if v, ok := value(before, waitSeries); ok {
		waitsBefore, _ = strconv.Atoi(v)
	}
	d.suspend(m.ID)
	viaProxy(t, svcPort) // the proxy wakes it: a resume, a wake, a waiting request
	d.wantState(m.ID, model.StateStarted)

	code, text := scrape(t, local, "http://torpor", "")
	if code != 200 {
		t.Fatalf("GET /metrics on the admin socket: %d %s", code, text)
	}
	for _, want := range []struct{ series, value string }{
		{`torpor_machines{` + app + `,state="started"}`, "1"},
		{`torpor_machines{app="` + other + `",state="started"}`, "0"},
		{`torpor_machine_resume_duration_seconds_count{` + app + `}`, "2"},
		{`torpor_machine_suspend_duration_seconds_count{` + app + `}`, "2"},
		{`torpor_machine_cold_start_duration_seconds_count{` + app + `,kind="start"}`, "1"},
		{`torpor_machine_resume_phase_duration_seconds_count{phase="runtime_restore"}`, "2"},
		{`torpor_machine_transitions_total{from="suspended",source="user",to="starting"}`, "1"},
		{`torpor_machine_transitions_total{from="suspended",source="proxy",to="starting"}`, "1"},
		{`torpor_machine_transitions_total{from="started",source="user",to="suspending"}`, "2"},
		{`torpor_proxy_wakes_total{` + app + `,result="started"}`, "1"},
		{waitSeries, strconv.Itoa(waitsBefore + 1)},
		{`torpor_proxy_requests_waiting{` + app + `}`, "0"},
		{`torpor_scrape_source_up{source="snapshots"}`, "1"},
		{`torpor_volumes{` + app + `}`, "1"},
		{`torpor_volume_size_bytes{` + app + `}`, "1.073741824e+09"},
		{`torpor_scrape_source_up{source="volumes"}`, "1"},
		{`torpor_scrape_source_up{source="images"}`, "1"},
	} {
		if got, ok := value(text, want.series); !ok || got != want.value {
			t.Errorf("%s = %q (present %v), want %s", want.series, got, ok, want.value)
		}
	}
	for _, series := range []string{`torpor_proxy_requests_total{` + app + `,code="200",service="8080"}`,
		"torpor_snapshot_written_bytes_total", "torpor_image_pull_bytes_total", `torpor_image_pulls_total{result="ok"}`, "torpor_images", "torpor_image_disk_bytes", "go_goroutines", "process_resident_memory_bytes"} {
		if v, ok := value(text, series); !ok || v == "0" {
			t.Errorf("%s = %q (present %v), want more than 0", series, v, ok)
		}
	}
	problems, err := promlint.New(strings.NewReader(text)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	if path := os.Getenv("TORPOR_METRICS_SAMPLE"); path != "" {
		os.WriteFile(path, []byte(text), 0o644)
	}

	// On TCP: a token is needed; an app token sees its app's series only.
	tcp := &http.Client{Timeout: 30 * time.Second}
	base := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	if code, _ := scrape(t, tcp, base, ""); code != http.StatusUnauthorized {
		t.Errorf("GET /metrics on TCP without a token: %d", code)
	}
	appTok, err := d.c.CreateToken(c, model.CreateTokenRequest{Apps: []string{d.app}})
	if err != nil {
		t.Fatal(err)
	}
	code, scoped := scrape(t, tcp, base, appTok.Secret)
	if _, ok := value(scoped, `torpor_machines{`+app+`,state="started"}`); code != 200 || !ok {
		t.Errorf("app token: %d, no series of its app:\n%s", code, scoped)
	}
	for _, leak := range []string{other, "go_goroutines", "torpor_machine_transitions_total"} {
		if strings.Contains(scoped, leak) {
			t.Errorf("an app token's /metrics shows %s", leak)
		}
	}
	adminTok, err := d.c.CreateToken(c, model.CreateTokenRequest{Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	if code, all := scrape(t, tcp, base, adminTok.Secret); code != 200 || !strings.Contains(all, other) || !strings.Contains(all, "go_goroutines") {
		t.Errorf("admin token: %d, not everything", code)
	}

	// --metrics-listen: no token, /metrics only.
	mbase := fmt.Sprintf("http://127.0.0.1:%d", metricsPort)
	if code, all := scrape(t, tcp, mbase, ""); code != 200 || !strings.Contains(all, "torpor_machines{") {
		t.Errorf("--metrics-listen: %d", code)
	}
	resp, err := tcp.Get(mbase + "/v1/apps")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("--metrics-listen serves the API: %d", resp.StatusCode)
	}
}
