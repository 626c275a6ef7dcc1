package deploy_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/api"
	"github.com/torpor-dev/torpor/internal/api/apitest"
	"github.com/torpor-dev/torpor/internal/appconfig"
	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/deploy"
	"github.com/torpor-dev/torpor/internal/model"
)

// These tests run deploys against the real API and machine lifecycle over
// the fake runtime (no health checks run there: the integration test
// TestDeployWorkflow in internal/daemon has the real ones).

func serve(t *testing.T) *client.Client {
	t.Helper()
	mgr := apitest.NewManager(t, nil)
	srv := httptest.NewServer(apitest.Local(api.New(mgr, api.Config{Tokens: apitest.NewTokens(t)}, nil)))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func parse(t *testing.T, doc string) *appconfig.App {
	t.Helper()
	a, warns, err := appconfig.Parse([]byte(doc))
	if err != nil || len(warns) > 0 {
		t.Fatalf("parse: %v %v", err, warns)
	}
	return a
}

const base = `app = "web"
[build]
  image = "rootfs"
[env]
  V = "%s"
[processes]
  app = "/app"
[http_service]
  internal_port = 8080
  port = 18080
  auto_stop_machines = "suspend"
`

func doc(v string) string { return strings.Replace(base, "%s", v, 1) }

func machines(t *testing.T, c *client.Client) []model.Machine {
	t.Helper()
	ms, err := c.ListMachines(context.Background(), "web")
	if err != nil {
		t.Fatal(err)
	}
	var out []model.Machine
	for _, m := range ms {
		if m.State != model.StateDestroyed {
			out = append(out, m)
		}
	}
	return out
}

func fast(o deploy.Options) deploy.Options {
	o.Drain = time.Millisecond
	o.WaitTimeout = 10 * time.Second
	return o
}

func TestFirstDeployThenRolling(t *testing.T) {
	c := serve(t)
	ctx := context.Background()
	var events []deploy.Event
	var mu sync.Mutex
	opts := fast(deploy.Options{Progress: func(e deploy.Event) { mu.Lock(); events = append(events, e); mu.Unlock() }})
	res, err := deploy.Deploy(ctx, c, parse(t, doc("1")), opts)
	if err != nil {
		t.Fatal(err)
	}
	ms := machines(t, c)
	if res.Release != 1 || len(ms) != 1 || ms[0].State != model.StateStarted || ms[0].Cordoned ||
		ms[0].Config.Env["V"] != "1" || ms[0].Config.Metadata[appconfig.MetaProcessGroup] != "app" {
		t.Fatalf("first deploy: %+v, machines %+v", res, ms)
	}
	if _, err := deploy.Scale(ctx, c, "web", "app", 3, fast(deploy.Options{})); err != nil {
		t.Fatal(err)
	}
	ms = machines(t, c)
	if len(ms) != 3 {
		t.Fatalf("scale to 3: %d machines", len(ms))
	}
	// One asleep: prewarm leaves it suspended on the new version.
	if err := c.Suspend(ctx, "web", ms[1].ID); err != nil {
		t.Fatal(err)
	}
	res, err = deploy.Deploy(ctx, c, parse(t, doc("2")), opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Release != 2 || len(res.Machines) != 3 {
		t.Fatalf("second deploy: %+v", res)
	}
	for _, m := range machines(t, c) {
		want := model.StateStarted
		if m.ID == ms[1].ID {
			want = model.StateSuspended
		}
		if m.Config.Env["V"] != "2" || m.State != want || m.Cordoned || m.Config.Metadata[appconfig.MetaReleaseVersion] != "2" {
			t.Errorf("machine %s after deploy: env %v state %s (want %s) cordoned %v meta %v", m.ID, m.Config.Env, m.State, want, m.Cordoned, m.Config.Metadata)
		}
		if _, err := c.GetMachine(ctx, "web", m.ID); err != nil {
			t.Fatal(err)
		}
	}
	prewarmed := 0
	for _, r := range res.Machines {
		if r.Prewarmed {
			prewarmed++
		}
	}
	if prewarmed != 1 {
		t.Errorf("%d machines prewarmed, want 1: %+v", prewarmed, res.Machines)
	}
	// --no-prewarm: the suspended machine ends stopped, as on Fly.
	res, err = deploy.Deploy(ctx, c, parse(t, doc("3")), fast(deploy.Options{NoPrewarm: true}))
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := c.GetMachine(ctx, "web", ms[1].ID); m.State != model.StateStopped || m.Config.Env["V"] != "3" {
		t.Errorf("no-prewarm: machine is %s with %v", m.State, m.Config.Env)
	}
	st, err := deploy.AppStatus(ctx, c, "web")
	if err != nil || st.Release != 3 || len(st.Machines) != 3 || st.Machines[0].Group != "app" {
		t.Fatalf("status: %+v %v", st, err)
	}
	if _, err := deploy.Scale(ctx, c, "web", "app", 1, fast(deploy.Options{})); err != nil {
		t.Fatal(err)
	}
	ms = machines(t, c)
	if len(ms) != 1 || ms[0].State != model.StateStarted {
		t.Fatalf("scale to 1 kept %+v, want the started machine", ms)
	}
	mu.Lock()
	defer mu.Unlock()
	phases := map[string]bool{}
	for _, e := range events {
		phases[e.Phase] = true
	}
	for _, p := range []string{"create", "update", "checks", "suspend", "done"} {
		if !phases[p] {
			t.Errorf("no %s event in %+v", p, events)
		}
	}
}

func TestConcurrentDeploys(t *testing.T) {
	c := serve(t)
	ctx := context.Background()
	if _, err := c.CreateApp(ctx, "web", ""); err != nil {
		t.Fatal(err)
	}
	l, err := c.AcquireAppLease(ctx, "web", 30, "someone")
	if err != nil {
		t.Fatal(err)
	}
	_, err = deploy.Deploy(ctx, c, parse(t, doc("1")), fast(deploy.Options{}))
	if !errors.Is(err, deploy.ErrInProgress) || !strings.Contains(err.Error(), "--wait") {
		t.Fatalf("deploy while leased: %v", err)
	}
	if len(machines(t, c)) != 0 {
		t.Fatal("a refused deploy made machines")
	}
	time.AfterFunc(1500*time.Millisecond, func() { c.ReleaseAppLease(model.WithLeaseNonce(ctx, l.Nonce), "web") })
	begin := time.Now()
	if _, err := deploy.Deploy(ctx, c, parse(t, doc("1")), fast(deploy.Options{Wait: true})); err != nil {
		t.Fatal(err)
	}
	if time.Since(begin) < time.Second {
		t.Fatal("--wait did not wait for the lease")
	}
	// Two first deploys of an empty app, at once: serialized, one machine.
	if _, err := c.CreateApp(ctx, "two", ""); err != nil {
		t.Fatal(err)
	}
	d := strings.NewReplacer(`app = "web"`, `app = "two"`, "18080", "18081").Replace(doc("x"))
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := deploy.Deploy(ctx, c, parse(t, d), fast(deploy.Options{Wait: true})); err != nil {
				t.Error(err)
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	ms, _ := c.ListMachines(ctx, "two")
	if failed.Load() == 0 && len(ms) != 1 {
		t.Fatalf("two first deploys made %d machines, want 1", len(ms))
	}
	if r := ms[0].Config.Metadata[appconfig.MetaReleaseVersion]; r != "2" {
		t.Fatalf("release %s after two deploys, want 2", r)
	}
}

// failingUpdates fails the update of machine id (after others went
// through), as a machine whose new version fails would.
type failingUpdates struct {
	*client.Client
	id string
}

func (f failingUpdates) UpdateMachine(ctx context.Context, app, id string, req model.UpdateMachineRequest) (model.Machine, error) {
	if id == f.id && req.Config.Env["V"] == "bad" {
		return model.Machine{}, errors.New("injected: the new version does not come up")
	}
	return f.Client.UpdateMachine(ctx, app, id, req)
}

func TestRollingFailureRollsBack(t *testing.T) {
	c := serve(t)
	ctx := context.Background()
	one := strings.Replace(doc("good"), "[http_service]", "[deploy]\n  max_unavailable = 1\n[http_service]", 1)
	if _, err := deploy.Deploy(ctx, c, parse(t, one), fast(deploy.Options{})); err != nil {
		t.Fatal(err)
	}
	if _, err := deploy.Scale(ctx, c, "web", "", 2, fast(deploy.Options{})); err != nil {
		t.Fatal(err)
	}
	before := machines(t, c)
	// The older machine is updated first; the second one fails.
	bad := strings.Replace(one, `V = "good"`, `V = "bad"`, 1)
	res, err := deploy.Deploy(ctx, failingUpdates{c, before[1].ID}, parse(t, bad), fast(deploy.Options{}))
	if err == nil || !res.RolledBack || !strings.Contains(err.Error(), "rolled back") {
		t.Fatalf("deploy of a failing version: %+v, %v", res, err)
	}
	for _, m := range machines(t, c) {
		if m.Config.Env["V"] != "good" || m.State != model.StateStarted || m.Cordoned {
			t.Errorf("machine %s after rollback: %v %s cordoned=%v", m.ID, m.Config.Env, m.State, m.Cordoned)
		}
	}
	// The app lease was released: the next deploy runs.
	if _, err := deploy.Deploy(ctx, c, parse(t, one), fast(deploy.Options{})); err != nil {
		t.Fatal(err)
	}
}

// interruptingUpdates cancels the deploy (as Ctrl-C does) during the
// update of machine id, after others went through.
type interruptingUpdates struct {
	*client.Client
	id     string
	cancel context.CancelFunc
}

func (f interruptingUpdates) UpdateMachine(ctx context.Context, app, id string, req model.UpdateMachineRequest) (model.Machine, error) {
	if id == f.id && req.Config.Env["V"] == "new" {
		f.cancel()
		<-ctx.Done()
		return model.Machine{}, ctx.Err()
	}
	return f.Client.UpdateMachine(ctx, app, id, req)
}

// TestInterruptedDeployRollsBack: a deploy interrupted halfway (Ctrl-C)
// rolls back what it changed and uncordons the machine it was changing,
// which would otherwise get no traffic from the proxy; the app lease is
// released.
func TestInterruptedDeployRollsBack(t *testing.T) {
	c := serve(t)
	ctx := context.Background()
	one := strings.Replace(doc("old"), "[http_service]", "[deploy]\n  max_unavailable = 1\n[http_service]", 1)
	if _, err := deploy.Deploy(ctx, c, parse(t, one), fast(deploy.Options{})); err != nil {
		t.Fatal(err)
	}
	if _, err := deploy.Scale(ctx, c, "web", "", 2, fast(deploy.Options{})); err != nil {
		t.Fatal(err)
	}
	before := machines(t, c)
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var phases []string
	opts := fast(deploy.Options{Progress: func(e deploy.Event) { phases = append(phases, e.Phase+": "+e.Msg) }})
	res, err := deploy.Deploy(dctx, interruptingUpdates{c, before[1].ID, cancel},
		parse(t, strings.Replace(one, `V = "old"`, `V = "new"`, 1)), opts)
	if err == nil || !res.RolledBack || !strings.Contains(err.Error(), "interrupted and rolled back") {
		t.Fatalf("interrupted deploy: %+v, %v", res, err)
	}
	if !strings.Contains(strings.Join(phases, "\n"), "interrupted: rolling back") {
		t.Errorf("progress does not say it rolls back: %v", phases)
	}
	for _, m := range machines(t, c) {
		if m.Config.Env["V"] != "old" || m.State != model.StateStarted || m.Cordoned {
			t.Errorf("machine %s after the interrupted deploy: %v %s cordoned=%v", m.ID, m.Config.Env, m.State, m.Cordoned)
		}
	}
	if len(res.Warnings) != 0 {
		t.Errorf("rollback warnings: %v", res.Warnings)
	}
	if _, err := deploy.Deploy(ctx, c, parse(t, one), fast(deploy.Options{})); err != nil {
		t.Fatalf("the next deploy: %v", err)
	}
}

func TestBlueGreenAndImmediateAndCanary(t *testing.T) {
	c := serve(t)
	ctx := context.Background()
	if _, err := deploy.Deploy(ctx, c, parse(t, doc("1")), fast(deploy.Options{})); err != nil {
		t.Fatal(err)
	}
	if _, err := deploy.Scale(ctx, c, "web", "", 2, fast(deploy.Options{})); err != nil {
		t.Fatal(err)
	}
	blues := machines(t, c)
	if err := c.Suspend(ctx, "web", blues[0].ID); err != nil {
		t.Fatal(err)
	}
	res, err := deploy.Deploy(ctx, c, parse(t, doc("2")), fast(deploy.Options{Strategy: "bluegreen"}))
	if err != nil {
		t.Fatal(err)
	}
	greens := machines(t, c)
	states := map[model.State]int{}
	for _, g := range greens {
		if g.ID == blues[0].ID || g.ID == blues[1].ID || g.Config.Env["V"] != "2" || g.Cordoned {
			t.Errorf("after bluegreen: %s %v cordoned=%v", g.ID, g.Config.Env, g.Cordoned)
		}
		states[g.State]++
	}
	if len(greens) != 2 || states[model.StateSuspended] != 1 || states[model.StateStarted] != 1 || res.Strategy != "bluegreen" {
		t.Fatalf("bluegreen: %d machines, states %v, %+v", len(greens), states, res)
	}
	for _, s := range []string{"immediate", "canary"} {
		res, err := deploy.Deploy(ctx, c, parse(t, doc(s)), fast(deploy.Options{Strategy: s}))
		if err != nil || len(res.Machines) != 2 {
			t.Fatalf("%s: %+v %v", s, res, err)
		}
		for _, m := range machines(t, c) {
			if m.Config.Env["V"] != s {
				t.Errorf("%s: machine %s has %v", s, m.ID, m.Config.Env)
			}
		}
	}
	if _, err := deploy.Deploy(ctx, c, parse(t, doc("x")), fast(deploy.Options{Strategy: "yolo"})); model.KindOf(err) != model.KindInvalid {
		t.Fatalf("bad strategy: %v", err)
	}
}

// TestVolumesStayWithTheirMachines: a deploy gives a new machine a volume
// named as [[mounts]] says, and an update keeps it on its machine, at the
// destination fly.toml now gives; bluegreen is refused with mounts.
func TestVolumesStayWithTheirMachines(t *testing.T) {
	mgr := apitest.NewManagerWithVolumes(t, nil)
	srv := httptest.NewServer(apitest.Local(api.New(mgr, api.Config{Tokens: apitest.NewTokens(t), Volumes: mgr.Volumes}, nil)))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	withMount := func(v, dest string) string {
		return doc(v) + "\n[[mounts]]\n  source = \"data\"\n  destination = \"" + dest + "\"\n"
	}
	if _, err := deploy.Deploy(ctx, c, parse(t, withMount("1", "/data")), fast(deploy.Options{})); err != nil {
		t.Fatal(err)
	}
	ms := machines(t, c)
	if len(ms) != 1 || len(ms[0].Config.Mounts) != 1 || ms[0].Config.Mounts[0].Path != "/data" {
		t.Fatalf("first deploy: %+v", ms)
	}
	vol := ms[0].Config.Mounts[0].Volume
	if _, err := deploy.Deploy(ctx, c, parse(t, withMount("2", "/srv")), fast(deploy.Options{})); err != nil {
		t.Fatal(err)
	}
	ms = machines(t, c)
	if len(ms) != 1 || len(ms[0].Config.Mounts) != 1 || ms[0].Config.Mounts[0].Volume != vol || ms[0].Config.Mounts[0].Path != "/srv" || ms[0].Config.Env["V"] != "2" {
		t.Fatalf("second deploy: %+v", ms[0].Config)
	}
	vols, err := c.ListVolumes(ctx, "web")
	if err != nil || len(vols) != 1 {
		t.Fatalf("volumes: %+v %v", vols, err)
	}
	_, err = deploy.Deploy(ctx, c, parse(t, withMount("3", "/srv")), fast(deploy.Options{Strategy: "bluegreen"}))
	if model.KindOf(err) != model.KindInvalid || !strings.Contains(err.Error(), "bluegreen strategy cannot be used with [[mounts]]") {
		t.Fatalf("bluegreen with mounts: %v", err)
	}
}

// TestLeasesOnlyTheMachineBeingChanged: while a rolling deploy updates a
// machine, that machine is leased and cordoned, and no other machine is
// leased (the proxy may wake them); the app lease is held throughout.
func TestLeasesOnlyTheMachineBeingChanged(t *testing.T) {
	c := serve(t)
	ctx := context.Background()
	if _, err := deploy.Deploy(ctx, c, parse(t, doc("1")), fast(deploy.Options{})); err != nil {
		t.Fatal(err)
	}
	if _, err := deploy.Scale(ctx, c, "web", "", 3, fast(deploy.Options{})); err != nil {
		t.Fatal(err)
	}
	ms := machines(t, c)
	seen := 0
	opts := fast(deploy.Options{Progress: func(e deploy.Event) {
		if e.Phase != "update" {
			return
		}
		seen++
		if _, err := c.GetAppLease(ctx, "web"); err != nil {
			t.Errorf("no app lease while updating %s: %v", e.Machine, err)
		}
		for _, m := range ms {
			_, err := c.GetLease(ctx, "web", m.ID)
			got, _ := c.GetMachine(ctx, "web", m.ID)
			if m.ID == e.Machine && (err != nil || !got.Cordoned) {
				t.Errorf("machine %s being updated: lease %v, cordoned %v", m.ID, err, got.Cordoned)
			}
			if m.ID != e.Machine && err == nil {
				t.Errorf("machine %s is leased while %s is updated", m.ID, e.Machine)
			}
		}
	}})
	if _, err := deploy.Deploy(ctx, c, parse(t, doc("2")), opts); err != nil {
		t.Fatal(err)
	}
	if seen != 3 {
		t.Fatalf("%d update events, want 3", seen)
	}
	for _, m := range ms {
		if _, err := c.GetLease(ctx, "web", m.ID); err == nil {
			t.Errorf("machine %s still leased after the deploy", m.ID)
		}
	}
	if _, err := c.GetAppLease(ctx, "web"); err == nil {
		t.Error("app lease still held after the deploy")
	}
}
