package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/api"
	"github.com/torpor-dev/torpor/internal/api/apitest"
	"github.com/torpor-dev/torpor/internal/model"
)

// env is a handler over the real machine lifecycle on the fake runtime,
// with helpers to call it.
type env struct {
	t     *testing.T
	mgr   *apitest.Manager
	h     http.Handler
	local bool   // requests come over the local admin socket
	token string // bearer token of requests, if any
}

// newEnv returns an env whose requests come over the local admin socket.
func newEnv(t *testing.T, cfg api.Config) *env {
	t.Helper()
	mgr := apitest.NewManager(t, nil)
	return &env{t: t, mgr: mgr, h: api.New(mgr, cfg, nil), local: true}
}

// serve sends a request as e's caller and returns the recorded answer.
func (e *env) serve(method, path, body string) *httptest.ResponseRecorder {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, r)
	if e.local {
		req = req.WithContext(api.WithLocalAdmin(req.Context()))
	}
	if e.token != "" {
		req.Header.Set("Authorization", "Bearer "+e.token)
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return rec
}

// do sends a request and returns the status and the body.
func (e *env) do(method, path, body string) (int, string) {
	e.t.Helper()
	rec := e.serve(method, path, body)
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		e.t.Errorf("%s %s: Content-Type %q, want application/json", method, path, ct)
	}
	return rec.Code, rec.Body.String()
}

// must sends a request that must answer want, decoding the body into v.
func (e *env) must(method, path, body string, want int, v any) {
	e.t.Helper()
	code, got := e.do(method, path, body)
	if code != want {
		e.t.Fatalf("%s %s: status %d, want %d; body %s", method, path, code, want, got)
	}
	if v != nil {
		if err := json.Unmarshal([]byte(got), v); err != nil {
			e.t.Fatalf("%s %s: decoding %s: %v", method, path, got, err)
		}
	}
}

// wantError checks the status and that the JSON error contains substr.
func (e *env) wantError(method, path, body string, status int, substr string) {
	e.t.Helper()
	code, got := e.do(method, path, body)
	if code != status {
		e.t.Errorf("%s %s: status %d, want %d; body %s", method, path, code, status, got)
		return
	}
	var eb struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(got), &eb); err != nil || eb.Error == "" {
		e.t.Errorf("%s %s: body %s is not a JSON error", method, path, got)
		return
	}
	if !strings.Contains(eb.Error, substr) {
		e.t.Errorf("%s %s: error %q does not contain %q", method, path, eb.Error, substr)
	}
}

// machine creates app "web" and a started machine in it.
func (e *env) machine() model.Machine {
	e.t.Helper()
	e.must("POST", "/v1/apps", `{"app_name":"web","org_slug":"personal"}`, 201, nil)
	var m model.Machine
	e.must("POST", "/v1/apps/web/machines", `{"name":"one","config":{"image":"rootfs","init":{"exec":["/app"]},"guest":{"memory_mb":256}}}`, 200, &m)
	return m
}

func TestApps(t *testing.T) {
	e := newEnv(t, api.Config{})
	var app model.App
	e.must("POST", "/v1/apps", `{"app_name":"web","org_slug":"personal"}`, 201, &app)
	if app.Name != "web" || app.Org != "personal" {
		t.Errorf("created app %+v", app)
	}
	var list struct {
		TotalApps int         `json:"total_apps"`
		Apps      []model.App `json:"apps"`
	}
	e.must("GET", "/v1/apps", "", 200, &list)
	if list.TotalApps != 1 || len(list.Apps) != 1 || list.Apps[0].Name != "web" {
		t.Errorf("app list %+v", list)
	}
	e.must("GET", "/v1/apps/web", "", 200, &app)
	e.wantError("POST", "/v1/apps", `{"app_name":"web"}`, 409, "already exists")
	e.must("DELETE", "/v1/apps/web", "", 202, nil)
	e.wantError("GET", "/v1/apps/web", "", 404, "not found")
}

func TestEmptyListsAreArrays(t *testing.T) {
	e := newEnv(t, api.Config{})
	if _, body := e.do("GET", "/v1/apps", ""); !strings.Contains(body, `"apps":[]`) {
		t.Errorf("empty app list: %s", body)
	}
	e.must("POST", "/v1/apps", `{"app_name":"web"}`, 201, nil)
	if _, body := e.do("GET", "/v1/apps/web/machines", ""); strings.TrimSpace(body) != "[]" {
		t.Errorf("empty machine list: %s", body)
	}
}

func TestMachineLifecycle(t *testing.T) {
	e := newEnv(t, api.Config{})
	m := e.machine()
	if m.State != model.StateStarted || m.Config.Guest.MemoryMB != 256 || m.Name != "one" {
		t.Fatalf("created machine %+v", m)
	}
	base := "/v1/apps/web/machines/" + m.ID

	var list []model.Machine
	e.must("GET", "/v1/apps/web/machines", "", 200, &list)
	if len(list) != 1 || list[0].ID != m.ID {
		t.Errorf("machine list %+v", list)
	}

	var ok struct {
		OK    bool        `json:"ok"`
		State model.State `json:"state"`
	}
	e.must("POST", base+"/suspend", "", 200, &ok)
	if !ok.OK {
		t.Errorf("suspend answered %+v", ok)
	}
	e.must("GET", base+"/wait?state=suspended&timeout=1", "", 200, &ok)
	if ok.State != model.StateSuspended {
		t.Errorf("wait answered %+v", ok)
	}

	var start model.StartResponse
	e.must("POST", base+"/start", "", 200, &start)
	if !start.FromSnapshot || start.PreviousState != model.StateSuspended {
		t.Errorf("start answered %+v", start)
	}

	e.must("POST", base+"/stop", `{"signal":"SIGTERM","timeout":"5s"}`, 200, nil)
	e.must("POST", base+"/start", "", 200, &start)
	if start.FromSnapshot {
		t.Errorf("start after stop resumed: %+v", start)
	}
	e.must("POST", base+"/stop", "", 200, nil) // no body

	var updated model.Machine
	e.must("POST", base, `{"config":{"image":"other","init":{"exec":["/app"]}},"skip_launch":true}`, 200, &updated)
	if updated.Config.Image != "other" {
		t.Errorf("updated machine %+v", updated)
	}

	var got model.Machine
	e.must("POST", base+"/cordon", "", 200, nil)
	e.must("GET", base, "", 200, &got)
	if !got.Cordoned {
		t.Errorf("cordon did not stick: %+v", got)
	}
	e.must("POST", base+"/uncordon", "", 200, nil)
	got = model.Machine{}
	e.must("GET", base, "", 200, &got)
	if got.Cordoned {
		t.Errorf("uncordon did not stick: %+v", got)
	}

	var events []model.Event
	e.must("GET", base+"/events", "", 200, &events)
	if len(events) < 5 {
		t.Errorf("events %+v", events)
	}

	e.must("POST", base+"/start", "", 200, nil)
	e.wantError("DELETE", base, "", 409, "stop it first")
	e.must("DELETE", base+"?force=true", "", 200, nil)
	// As on Fly, a destroyed machine reads back destroyed until its app goes.
	e.must("GET", base, "", 200, &got)
	if got.State != model.StateDestroyed {
		t.Errorf("destroyed machine reads %s", got.State)
	}
	e.must("DELETE", "/v1/apps/web", "", 202, nil)
	e.wantError("GET", base, "", 404, "not found")
}

func TestErrorKinds(t *testing.T) {
	cases := []struct {
		kind   model.Kind
		status int
	}{
		{model.KindInvalid, 400},
		{model.KindNotFound, 404},
		{model.KindConflict, 409},
		{model.KindPrecondition, 412},
		{model.KindTimeout, 408},
		{model.KindUnavailable, 503},
		{model.KindInternal, 500},
	}
	for _, c := range cases {
		e := newEnv(t, api.Config{})
		e.h = api.New(failingApps{e.mgr, model.Errorf(c.kind, "boom %d", c.kind)}, api.Config{}, nil)
		e.wantError("GET", "/v1/apps", "", c.status, "boom")
	}
	e := newEnv(t, api.Config{})
	e.h = api.New(failingApps{e.mgr, errors.New("plain failure")}, api.Config{}, nil)
	e.wantError("GET", "/v1/apps", "", 500, "plain failure")
}

// failingApps is the lifecycle with ListApps failing with err.
type failingApps struct {
	api.Machines
	err error
}

func (f failingApps) ListApps(context.Context) ([]model.App, error) { return nil, f.err }

func TestBodyValidation(t *testing.T) {
	e := newEnv(t, api.Config{})
	e.must("POST", "/v1/apps", `{"app_name":"web"}`, 201, nil)
	cases := []struct {
		body, want string
	}{
		{`{"config":{"image":"x","guest":{"memory_mb":"lots"}}}`, "config.guest.memory_mb: expected an integer in range, got string"},
		{`{"config":{"image":"x","bogus":1}}`, `unknown field "config.bogus"`},
		{`{"config":{"image":"x","services":[{"internal_port":80,"ports":[{"port":80,"handler":["http"]}]}]}}`, `unknown field "config.services[0].ports[0].handler"`},
		{`{"config":{"image":"x","dns":"8.8.8.8"}}`, "config.dns: expected an object"},
		{`{"config":{"image":"x"}`, "unexpected end of input"},
		{`{"config":{"image":"x"}} {}`, "unexpected data after the JSON value"},
		{`{"config":{"image":x}}`, "invalid character"},
		{`[]`, "expected an object, got array"},
		{``, "needs a JSON object body"},
		{`{"config":{"image":"x","services":[{"internal_port":80,"autostop":"sometimes"}]}}`, "autostop must be"},
	}
	for _, c := range cases {
		e.wantError("POST", "/v1/apps/web/machines", c.body, 400, c.want)
	}
	e.wantError("POST", "/v1/apps", `{"app_name":"Web"}`, 400, "app_name")
	e.wantError("POST", "/v1/apps", `{"app_name":"web","netwrok":"x"}`, 400, `unknown field "netwrok"`)

	big := `{"config":{"image":"` + strings.Repeat("x", 2<<20) + `"}}`
	e.wantError("POST", "/v1/apps/web/machines", big, 413, "larger than")
}

func TestStopBodyValidation(t *testing.T) {
	e := newEnv(t, api.Config{})
	m := e.machine()
	e.wantError("POST", "/v1/apps/web/machines/"+m.ID+"/stop", `{"timeout":"soon"}`, 400, "invalid duration")
	e.wantError("POST", "/v1/apps/web/machines/"+m.ID+"/stop", `{"timeout":"-1s"}`, 400, "must not be negative")
}

func TestPathAndQueryValidation(t *testing.T) {
	e := newEnv(t, api.Config{})
	m := e.machine()
	e.wantError("GET", "/v1/apps/Bad_App/machines", "", 400, "path parameter app")
	e.wantError("GET", "/v1/apps/"+strings.Repeat("a", 64), "", 400, "1-63")
	e.wantError("GET", "/v1/apps/web/machines/ABC", "", 400, "path parameter id")
	e.wantError("GET", "/v1/apps/web/machines/"+m.ID+"/wait?state=sleeping", "", 400, "state")
	e.wantError("GET", "/v1/apps/web/machines/"+m.ID+"/wait?timeout=601", "", 400, "timeout")
	e.wantError("GET", "/v1/apps/web/machines/"+m.ID+"/wait?timeout=abc", "", 400, "timeout")
	e.wantError("DELETE", "/v1/apps/web/machines/"+m.ID+"?force=maybe", "", 400, "force")
}

func TestRouting(t *testing.T) {
	e := newEnv(t, api.Config{})
	e.wantError("GET", "/v1/nothing", "", 404, "no such route")
	e.wantError("PUT", "/v1/apps", "", 405, "not allowed")
	e.wantError("PATCH", "/v1/apps/web/machines/abc/start", "", 405, "POST")
	e.must("GET", "/healthz", "", 200, nil)
}

func TestWaitStates(t *testing.T) {
	e := newEnv(t, api.Config{})
	m := e.machine()
	var ok struct {
		State model.State `json:"state"`
	}
	// The default state is started.
	e.must("GET", "/v1/apps/web/machines/"+m.ID+"/wait", "", 200, &ok)
	if ok.State != model.StateStarted {
		t.Errorf("wait answered %+v", ok)
	}
	e.must("GET", "/v1/apps/web/machines/"+m.ID+"/wait?state=stopped,started&timeout=1", "", 200, &ok)
	e.must("GET", "/v1/apps/web/machines/"+m.ID+"/wait?state=stopped&state=started&timeout=1", "", 200, &ok)

	// A wait sees a change that happens while it waits.
	go func() {
		time.Sleep(50 * time.Millisecond)
		if err := e.mgr.Suspend(context.Background(), "web", m.ID); err != nil {
			t.Error(err)
		}
	}()
	e.must("GET", "/v1/apps/web/machines/"+m.ID+"/wait?state=suspended&timeout=5", "", 200, &ok)
	if ok.State != model.StateSuspended {
		t.Errorf("wait answered %+v", ok)
	}
}

// deadlineMachines is the lifecycle with a WaitFor that blocks until its
// context ends and returns the bare context error, recording the deadline
// it was given.
type deadlineMachines struct {
	api.Machines
	deadline time.Time
}

func (d *deadlineMachines) WaitFor(ctx context.Context, app, id string, opts model.WaitOptions) (model.Machine, error) {
	d.deadline, _ = ctx.Deadline()
	<-ctx.Done()
	return model.Machine{}, ctx.Err()
}

func TestWaitTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, api.Config{})
	m := e.machine()
	// The lifecycle answers a KindTimeout error.
	start := time.Now()
	e.wantError("GET", "/v1/apps/web/machines/"+m.ID+"/wait?state=stopped&timeout=1", "", 408, "it is started")
	if d := time.Since(start); d < time.Second || d > 5*time.Second {
		t.Errorf("wait took %s, want about 1s", d)
	}

	// A bare context error after the deadline also answers 408.
	d := &deadlineMachines{Machines: e.mgr}
	e.h = api.New(d, api.Config{}, nil)
	start = time.Now()
	e.wantError("GET", "/v1/apps/web/machines/"+m.ID+"/wait?state=stopped&timeout=1", "", 408, "timed out after 1s")
	if got := d.deadline.Sub(start); got < 900*time.Millisecond || got > 2*time.Second {
		t.Errorf("Wait got a deadline %s after the request, want 1s", got)
	}
}

func TestRequestLog(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	h := apitest.Local(api.New(apitest.NewManager(t, nil), api.Config{}, logger))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/apps/nope", nil))
	line := buf.String()
	for _, want := range []string{"method=GET", "path=/v1/apps/nope", "status=404", "duration=", "caller=local"} {
		if !strings.Contains(line, want) {
			t.Errorf("log %q lacks %q", line, want)
		}
	}
}
