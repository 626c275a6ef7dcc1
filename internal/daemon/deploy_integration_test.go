package daemon_test

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/appconfig"
	"github.com/torpor-dev/torpor/internal/deploy"
	"github.com/torpor-dev/torpor/internal/model"
)

//go:embed testdata/deployapp.py
var deployApp string

// flyToml writes the deploy test app's fly.toml: release names what its
// machines answer, sick makes their health check fail.
func (d *daemon) flyToml(dir string, port int, release string, sick bool) string {
	d.t.Helper()
	path := filepath.Join(dir, "fly-"+release+".toml")
	if err := os.WriteFile(path, []byte(flyTomlDoc(d.app, port, release, sick)), 0o644); err != nil {
		d.t.Fatal(err)
	}
	return path
}

// flyTomlDoc is the deploy test app's fly.toml for app.
func flyTomlDoc(app string, port int, release string, sick bool) string {
	s := "0"
	if sick {
		s = "1"
	}
	return fmt.Sprintf(`app = %q

[build]
  image = %q

[env]
  RELEASE = %q
  SICK = %q

[processes]
  app = ["python3", "-u", "-c", '''
%s''']

[http_service]
  internal_port = 8080
  port = %d
  auto_stop_machines = "suspend"
  auto_start_machines = true
  min_machines_running = 0

  [[http_service.checks]]
    interval = "1s"
    timeout = "1s"
    path = "/health"

[deploy]
  strategy = "rolling"
  wait_timeout = "30s"

[[vm]]
  memory = "256mb"
  cpus = 1
`, app, pythonImage, release, s, deployApp, port)
}

// torpor runs the CLI against the daemon and returns its output.
func (d *daemon) torpor(args ...string) (string, error) {
	out, err := exec.Command(torporBin, append([]string{"--api", "unix://" + d.sock}, args...)...).CombinedOutput()
	return string(out), err
}

func (d *daemon) mustTorpor(args ...string) string {
	d.t.Helper()
	out, err := d.torpor(args...)
	if err != nil {
		d.t.Fatalf("torpor %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// appMachines are the app's machines that are not destroyed, oldest first.
func (d *daemon) appMachines() []model.Machine {
	d.t.Helper()
	ms, err := d.c.ListMachines(ctx(d.t), d.app)
	if err != nil {
		d.t.Fatal(err)
	}
	var out []model.Machine
	for _, m := range ms {
		if m.State != model.StateDestroyed {
			out = append(out, m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out
}

// load sends requests through the proxy without pause from a few workers
// and counts them: every answer but a 200 (or a transport error) fails.
type load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	releases   map[string]int
	errs       []string
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startLoad(port, workers int) *load {
	l := &load{releases: map[string]int{}, stop: make(chan struct{})}
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}}
			defer c.CloseIdleConnections()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				release, err := getRelease(c, port)
				l.mu.Lock()
				if err != nil {
					l.failed.Add(1)
					if len(l.errs) < 10 {
						l.errs = append(l.errs, err.Error())
					}
				} else {
					l.ok.Add(1)
					l.releases[release]++
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func getRelease(c *http.Client, port int) (string, error) {
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("%s: %s", resp.Status, body)
	}
	var ans struct{ Release, ID string }
	if err := json.Unmarshal(body, &ans); err != nil {
		return "", fmt.Errorf("%v: %s", err, body)
	}
	return ans.Release, nil
}

// halt stops the load and reports it.
func (l *load) halt(t *testing.T, phase string) map[string]int {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	t.Logf("%s: %d requests through the proxy, %d failed, answered by releases %v", phase, l.ok.Load()+l.failed.Load(), l.failed.Load(), l.releases)
	if l.failed.Load() != 0 {
		t.Errorf("%s: %d requests failed: %v", phase, l.failed.Load(), l.errs)
	}
	if l.ok.Load() < 50 {
		t.Errorf("%s: only %d requests made it: the load did not run", phase, l.ok.Load())
	}
	return l.releases
}

// firstRequest times one request through the proxy to an app whose
// machines are all asleep, and returns the answering machine's newest
// start or resume event.
func (d *daemon) firstRequest(port int) (time.Duration, string, model.Event) {
	d.t.Helper()
	c := &http.Client{Timeout: 60 * time.Second}
	begin := time.Now()
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	took := time.Since(begin)
	if err != nil {
		d.t.Fatalf("first request: %v", err)
	}
	defer resp.Body.Close()
	var ans struct{ Release, ID string }
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil || resp.StatusCode != 200 {
		d.t.Fatalf("first request: %s %v", resp.Status, err)
	}
	evs, err := d.c.Events(ctx(d.t), d.app, ans.ID)
	if err != nil {
		d.t.Fatal(err)
	}
	for _, ev := range evs { // newest first
		if ev.Type == model.EventResume || ev.Type == model.EventStart {
			return took, ans.Release, ev
		}
	}
	d.t.Fatalf("machine %s has no start event: %+v", ans.ID, evs)
	return 0, "", model.Event{}
}

func fromSnapshot(ev model.Event) bool {
	sd, ok := ev.Request.(*model.StartDetails)
	return ok && sd.FromSnapshot
}

// TestDeployWorkflow: an app deployed from a fly.toml with the CLI: the
// first deploy, scale up, a rolling deploy under load (a concurrent deploy
// refused meanwhile), a broken release that rolls back under load, a
// bluegreen deploy under load, a deploy that leaves suspended machines
// suspended on the new version (prewarm) against one that leaves them
// stopped (--no-prewarm), and scale down.
func TestDeployWorkflow(t *testing.T) {
	d := newParallelDaemon(t)
	dir, port := t.TempDir(), freePort(t)

	out := d.mustTorpor("deploy", "-c", d.flyToml(dir, port, "v1", false))
	if !strings.Contains(out, "Deployed "+d.app+" release 1") {
		t.Fatalf("first deploy:\n%s", out)
	}
	d.mustTorpor("scale", "count", "3", "--app", d.app)
	if got := len(d.appMachines()); got != 3 {
		t.Fatalf("%d machines after scale count 3", got)
	}
	waitProxy(t, port)

	// Rolling, under load; a second deploy meanwhile is refused.
	l := startLoad(port, 2)
	begin := time.Now()
	var rolling string
	var rollErr error
	done := make(chan struct{})
	go func() { rolling, rollErr = d.torpor("deploy", "-c", d.flyToml(dir, port, "v2", false)); close(done) }()
	leased := false
	for !leased {
		select {
		case <-done:
			t.Fatalf("the rolling deploy ended before its app lease was seen: %v\n%s", rollErr, rolling)
		case <-time.After(20 * time.Millisecond):
		}
		_, err := d.c.GetAppLease(ctx(t), d.app)
		leased = err == nil
	}
	second, err := d.torpor("deploy", "-c", d.flyToml(dir, port, "v2b", false))
	if err == nil || !strings.Contains(second, "another deploy of the app is in progress") || !strings.Contains(second, "--wait") {
		t.Errorf("a concurrent deploy: %v\n%s", err, second)
	}
	<-done
	t.Logf("rolling deploy of 3 machines: %s", time.Since(begin).Round(time.Millisecond))
	if rollErr != nil {
		t.Fatalf("rolling deploy: %v\n%s", rollErr, rolling)
	}
	time.Sleep(300 * time.Millisecond) // the load sees the last machine back
	if r := l.halt(t, "rolling deploy"); r["v2b"] != 0 {
		t.Errorf("the refused deploy's release served: %v", r)
	}
	for _, m := range d.appMachines() {
		if m.Config.Env["RELEASE"] != "v2" || m.State != model.StateStarted || m.Cordoned {
			t.Errorf("after rolling: machine %s runs %s, %s, cordoned %v", m.ID, m.Config.Env["RELEASE"], m.State, m.Cordoned)
		}
	}

	// A broken release: its first machine fails its checks, the deploy
	// rolls it back, and the old release serves throughout.
	l = startLoad(port, 2)
	begin = time.Now()
	out, err = d.torpor("deploy", "-c", d.flyToml(dir, port, "broken", true), "--wait-timeout", "6s")
	t.Logf("broken deploy, failed and rolled back: %s", time.Since(begin).Round(time.Millisecond))
	if err == nil || !strings.Contains(out, "rolled back") || !strings.Contains(out, "checks did not pass within 6s") {
		t.Fatalf("broken deploy: %v\n%s", err, out)
	}
	if r := l.halt(t, "broken deploy"); r["broken"] != 0 {
		t.Errorf("the broken release served requests: %v", r)
	}
	for _, m := range d.appMachines() {
		if m.Config.Env["RELEASE"] != "v2" || m.State != model.StateStarted || m.Cordoned {
			t.Errorf("after rollback: machine %s runs %s, %s, cordoned %v", m.ID, m.Config.Env["RELEASE"], m.State, m.Cordoned)
		}
	}

	// Bluegreen, under load: new machines, the old ones gone.
	old := map[string]bool{}
	for _, m := range d.appMachines() {
		old[m.ID] = true
	}
	l = startLoad(port, 2)
	begin = time.Now()
	d.mustTorpor("deploy", "-c", d.flyToml(dir, port, "v3", false), "--strategy", "bluegreen")
	t.Logf("bluegreen deploy of 3 machines: %s", time.Since(begin).Round(time.Millisecond))
	time.Sleep(300 * time.Millisecond)
	l.halt(t, "bluegreen deploy")
	ms := d.appMachines()
	for _, m := range ms {
		if old[m.ID] || m.Config.Env["RELEASE"] != "v3" || m.Cordoned {
			t.Errorf("after bluegreen: machine %s (old %v) runs %s, cordoned %v", m.ID, old[m.ID], m.Config.Env["RELEASE"], m.Cordoned)
		}
	}
	if len(ms) != 3 {
		t.Fatalf("%d machines after bluegreen, want 3", len(ms))
	}

	// Prewarm: asleep before, asleep after, on the new release, checked.
	for _, m := range ms {
		d.suspend(m.ID)
	}
	out = d.mustTorpor("deploy", "-c", d.flyToml(dir, port, "v4", false))
	if strings.Count(out, "updated, prewarmed") != 3 {
		t.Errorf("prewarm deploy output:\n%s", out)
	}
	for _, m := range d.appMachines() {
		if m.Config.Env["RELEASE"] != "v4" || m.State != model.StateSuspended || m.Cordoned {
			t.Errorf("after a prewarm deploy: machine %s runs %s, %s, cordoned %v", m.ID, m.Config.Env["RELEASE"], m.State, m.Cordoned)
		}
	}
	took, release, ev := d.firstRequest(port)
	phases, _ := json.Marshal(ev.Request)
	t.Logf("first request after a prewarmed deploy: %s (%s, from_snapshot %v: %s)", took.Round(time.Millisecond), ev.Type, fromSnapshot(ev), phases)
	if release != "v4" || ev.Type != model.EventResume || !fromSnapshot(ev) {
		t.Errorf("first request after a prewarmed deploy: release %s, event %+v: want a resume from the snapshot", release, ev)
	}

	// --no-prewarm: Fly's behaviour, machines left stopped.
	for _, m := range d.appMachines() {
		if m.State == model.StateStarted {
			d.suspend(m.ID)
		}
	}
	d.mustTorpor("deploy", "-c", d.flyToml(dir, port, "v5", false), "--no-prewarm")
	for _, m := range d.appMachines() {
		if m.Config.Env["RELEASE"] != "v5" || m.State != model.StateStopped {
			t.Errorf("after a --no-prewarm deploy: machine %s runs %s, %s", m.ID, m.Config.Env["RELEASE"], m.State)
		}
	}
	took, release, ev = d.firstRequest(port)
	t.Logf("first request after a --no-prewarm deploy: %s (%s, from_snapshot %v)", took.Round(time.Millisecond), ev.Type, fromSnapshot(ev))
	if release != "v5" || fromSnapshot(ev) {
		t.Errorf("first request after a --no-prewarm deploy: release %s, event %+v: want a cold start", release, ev)
	}

	var st struct {
		Release  int
		Machines []struct{ State string }
	}
	if err := json.Unmarshal([]byte(d.mustTorpor("--json", "status", "--app", d.app)), &st); err != nil || st.Release != 5 || len(st.Machines) != 3 {
		t.Fatalf("status: %+v %v", st, err)
	}
	d.mustTorpor("scale", "count", "1", "--app", d.app)
	// The one left is one the first request woke (the proxy may have been
	// starting a second meanwhile), not one left stopped.
	if ms := d.appMachines(); len(ms) != 1 || (ms[0].State != model.StateStarted && ms[0].State != model.StateStarting) {
		t.Fatalf("after scale count 1: %+v", ms)
	}
}

// TestClusterDeploy: on a cluster, a deploy through one host while the
// app's lease is held through another is refused; once it is released
// there, a deploy through a third host runs, updating the machine the
// first deploy made, wherever it was placed.
func TestClusterDeploy(t *testing.T) {
	t.Parallel()
	tc := newTestCluster(t, false)
	app := tc.app("deploy")
	port := freePort(t)
	parse := func(release string) *appconfig.App {
		a, _, err := appconfig.Parse([]byte(flyTomlDoc(app, port, release, false)))
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	res, err := deploy.Deploy(ctx(t), tc.hosts[0].c, parse("c1"), deploy.Options{})
	if err != nil || len(res.Machines) != 1 || res.Machines[0].Checks != "1/1 passing" {
		t.Fatalf("first deploy through h0: %+v %v", res, err)
	}
	first := res.Machines[0].ID
	l, err := tc.hosts[1].c.AcquireAppLease(ctx(t), app, 60, "another deploy")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := deploy.Deploy(ctx(t), tc.hosts[2].c, parse("c2"), deploy.Options{}); !errors.Is(err, deploy.ErrInProgress) {
		t.Fatalf("a deploy through h2 while h1 holds the app lease: %v", err)
	}
	if err := tc.hosts[0].c.ReleaseAppLease(model.WithLeaseNonce(ctx(t), l.Nonce), app); err != nil {
		t.Fatal(err)
	}
	res, err = deploy.Deploy(ctx(t), tc.hosts[2].c, parse("c2"), deploy.Options{})
	if err != nil || res.Release != 2 || len(res.Machines) != 1 || res.Machines[0].ID != first || res.Machines[0].Checks != "1/1 passing" {
		t.Fatalf("second deploy through h2: %+v %v", res, err)
	}
	m, err := tc.hosts[1].c.GetMachine(ctx(t), app, first)
	if err != nil || m.Config.Env["RELEASE"] != "c2" || m.State != model.StateStarted || m.Cordoned {
		t.Fatalf("machine after the deploys, via h1: %s %s cordoned=%v %v", m.Config.Env["RELEASE"], m.State, m.Cordoned, err)
	}
}
