package api_test

import (
	"encoding/json"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/api"
	"github.com/torpor-dev/torpor/internal/api/apitest"
	"github.com/torpor-dev/torpor/internal/auth"
	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/store"
)

// authEnv is an API whose requests come over TCP (not the admin socket), with
// real tokens and a settable clock.
type authEnv struct {
	*env
	tokens *auth.Tokens
	now    time.Time
}

func newAuthEnv(t *testing.T) *authEnv {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "torpor.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	a := &authEnv{now: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	a.tokens = auth.New(st, func() time.Time { return a.now })
	mgr := apitest.NewManager(t, nil)
	a.env = &env{t: t, mgr: mgr, h: api.New(mgr, api.Config{Tokens: a.tokens}, nil)}
	return a
}

// as makes the following requests with token (local: over the admin socket).
func (a *authEnv) as(token string, local bool) *authEnv {
	a.token, a.local = token, local
	return a
}

func (a *authEnv) newToken(req model.CreateTokenRequest) string {
	return apitest.MustToken(a.t, a.tokens, req).Secret
}

// challenge returns the WWW-Authenticate header of a request.
func (a *authEnv) challenge(method, path string) string {
	req := httptest.NewRequest(method, path, nil)
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	rec := httptest.NewRecorder()
	a.h.ServeHTTP(rec, req)
	return rec.Header().Get("WWW-Authenticate")
}

func TestTCPNeedsToken(t *testing.T) {
	a := newAuthEnv(t)
	a.wantError("GET", "/v1/apps", "", 401, "missing bearer token")
	a.wantError("GET", "/v1/nothing", "", 401, "missing bearer token")
	a.wantError("POST", "/v1/tokens", `{"admin":true}`, 401, "missing bearer token")
	if got := a.challenge("GET", "/v1/apps"); got != `Bearer realm="torpor"` {
		t.Errorf("WWW-Authenticate %q", got)
	}
	a.must("GET", "/healthz", "", 200, nil)

	a.as("torpor_0123456789abcdef_"+strings.Repeat("0", 64), false)
	a.wantError("GET", "/v1/apps", "", 401, "invalid bearer token")
	if got := a.challenge("GET", "/v1/apps"); !strings.Contains(got, `error="invalid_token"`) {
		t.Errorf("WWW-Authenticate %q", got)
	}
	a.as("s3cret", false)
	a.wantError("GET", "/v1/apps", "", 401, "invalid bearer token")

	req := httptest.NewRequest("GET", "/v1/apps", nil)
	req.Header.Set("Authorization", "Basic "+a.newToken(model.CreateTokenRequest{Admin: true}))
	rec := httptest.NewRecorder()
	a.h.ServeHTTP(rec, req)
	if rec.Code != 401 {
		t.Errorf("a token sent as Basic answered %d", rec.Code)
	}
}

func TestNoTokenStoreRefusesTCP(t *testing.T) {
	e := newEnv(t, api.Config{})
	e.local = false
	e.wantError("GET", "/v1/apps", "", 401, "missing bearer token")
	e.token = "torpor_0123456789abcdef_" + strings.Repeat("0", 64)
	e.wantError("GET", "/v1/apps", "", 401, "invalid bearer token")
}

func TestAppTokenScope(t *testing.T) {
	a := newAuthEnv(t)
	a.as("", true)
	a.must("POST", "/v1/apps", `{"app_name":"b"}`, 201, nil)
	var mb model.Machine
	a.must("POST", "/v1/apps/b/machines", `{"config":{"image":"rootfs","init":{"exec":["/app"]}}}`, 200, &mb)

	appToken := a.newToken(model.CreateTokenRequest{Apps: []string{"a"}})
	a.as(appToken, false)
	a.must("POST", "/v1/apps", `{"app_name":"a"}`, 201, nil)
	a.wantError("POST", "/v1/apps", `{"app_name":"c"}`, 403, `may only create the apps it is scoped to (a), not "c"`)
	// A root filesystem directory on the host is the admin's option (issue
	// 17, F5): the app token may run the machine the admin made of one.
	a.wantError("POST", "/v1/apps/a/machines", `{"config":{"image":"rootfs","init":{"exec":["/app"]}}}`, 403,
		`config.image "rootfs" is a root filesystem directory on the daemon's host, which only the admin may run`)
	a.wantError("POST", "/v1/apps/a/machines", `{"config":{"image":"/usr","init":{"exec":["/bin/sh"]}}}`, 403, `config.image "/usr"`)
	a.as("", true)
	var ma model.Machine
	a.must("POST", "/v1/apps/a/machines", `{"config":{"image":"rootfs","init":{"exec":["/app"]}}}`, 200, &ma)
	a.as(appToken, false)
	a.must("POST", "/v1/apps/a/machines/"+ma.ID+"/stop", "", 200, nil)
	a.must("GET", "/v1/apps/a/machines/"+ma.ID+"/events", "", 200, nil)
	var list struct {
		Apps []model.App `json:"apps"`
	}
	a.must("GET", "/v1/apps", "", 200, &list)
	if len(list.Apps) != 1 || list.Apps[0].Name != "a" {
		t.Errorf("app token lists %+v, want only a", list.Apps)
	}

	// Another app: 403 on every route, and the same answer whether the app
	// exists or not.
	for _, r := range [][2]string{
		{"GET", "/v1/apps/b"}, {"DELETE", "/v1/apps/b"}, {"GET", "/v1/apps/b/machines"},
		{"POST", "/v1/apps/b/machines"}, {"GET", "/v1/apps/b/machines/" + mb.ID},
		{"POST", "/v1/apps/b/machines/" + mb.ID + "/stop"}, {"DELETE", "/v1/apps/b/machines/" + mb.ID},
		{"GET", "/v1/apps/b/machines/" + mb.ID + "/logs"}, {"GET", "/v1/apps/b/machines/" + mb.ID + "/wait"},
	} {
		code, body := a.do(r[0], r[1], `{"config":{"image":"rootfs","init":{"exec":["/app"]}}}`)
		code2, body2 := a.do(r[0], strings.Replace(r[1], "/apps/b", "/apps/zz", 1), `{"config":{"image":"rootfs","init":{"exec":["/app"]}}}`)
		if code != 403 || code2 != 403 || strings.ReplaceAll(body2, "zz", "b") != body {
			t.Errorf("%s %s: %d %s; for a missing app: %d %s", r[0], r[1], code, body, code2, body2)
		}
	}
	if got := a.challenge("GET", "/v1/apps/b"); !strings.Contains(got, `error="insufficient_scope"`) {
		t.Errorf("WWW-Authenticate %q", got)
	}
	// A machine of b addressed through a is not found, as for any caller.
	a.wantError("GET", "/v1/apps/a/machines/"+mb.ID, "", 404, "not found")
	// None of the refused operations touched b's machine.
	a.as("", true)
	a.wantState(mb, model.StateStarted)
}

// wantState checks a machine's state over the admin socket.
func (a *authEnv) wantState(m model.Machine, want model.State) {
	a.t.Helper()
	var got model.Machine
	a.must("GET", "/v1/apps/"+m.App+"/machines/"+m.ID, "", 200, &got)
	if got.State != want {
		a.t.Errorf("machine %s is %s, want %s", m.ID, got.State, want)
	}
}

func TestTokenRoutesAreAdminOnly(t *testing.T) {
	a := newAuthEnv(t)
	a.as(a.newToken(model.CreateTokenRequest{Apps: []string{"a"}}), false)
	a.wantError("POST", "/v1/tokens", `{"admin":true}`, 403, "needs an admin token")
	a.wantError("GET", "/v1/tokens", "", 403, "needs an admin token")
	a.wantError("DELETE", "/v1/tokens/0123456789abcdef", "", 403, "needs an admin token")

	a.as(a.newToken(model.CreateTokenRequest{Admin: true}), false)
	var created model.CreatedToken
	a.must("POST", "/v1/tokens", `{"apps":["x","x","a"],"name":"ci","expires_in":"1h"}`, 201, &created)
	if created.Secret == "" || created.Admin || strings.Join(created.Apps, ",") != "a,x" || created.Name != "ci" ||
		created.ExpiresAt == nil || !created.ExpiresAt.Equal(a.now.Add(time.Hour)) {
		t.Fatalf("created %+v", created)
	}
	code, body := a.do("GET", "/v1/tokens", "")
	if code != 200 || !strings.Contains(body, created.ID) || strings.Contains(body, created.Secret[len(created.Secret)-64:]) {
		t.Fatalf("token list %d %s", code, body)
	}
	var list struct {
		Tokens []model.Token `json:"tokens"`
	}
	json.Unmarshal([]byte(body), &list)
	if len(list.Tokens) != 3 {
		t.Errorf("token list has %d tokens, want 3", len(list.Tokens))
	}

	admin := a.token
	a.as(created.Secret, false)
	a.must("POST", "/v1/apps", `{"app_name":"x"}`, 201, nil)
	a.as(admin, false)
	a.must("DELETE", "/v1/tokens/"+created.ID, "", 200, nil)
	a.wantError("DELETE", "/v1/tokens/"+created.ID, "", 404, "not found")
	a.as(created.Secret, false)
	a.wantError("GET", "/v1/apps", "", 401, "invalid bearer token")
}

func TestTokenValidation(t *testing.T) {
	a := newAuthEnv(t)
	a.as("", true)
	for body, want := range map[string]string{
		`{}`:                                 "invalid scope",
		`{"admin":true,"apps":["a"]}`:        "invalid scope",
		`{"apps":["Bad"]}`:                   `invalid apps entry "Bad"`,
		`{"apps":["a"],"expires_in":"-1h"}`:  "invalid expires_in -1h0m0s",
		`{"apps":["a"],"expires_in":"soon"}`: "invalid duration",
		`{"apps":["a"],"name":"a\u0007"}`:    "invalid name",
		`{"apps":["a"],"scope":"all"}`:       `unknown field "scope"`,
		`{"apps":["a"],"name":"` + strings.Repeat("n", 65) + `"}`: "at most 64",
	} {
		a.wantError("POST", "/v1/tokens", body, 400, want)
	}
	a.wantError("DELETE", "/v1/tokens/nothex", "", 400, "invalid path parameter id")
}

func TestExpiredToken(t *testing.T) {
	a := newAuthEnv(t)
	a.as(a.newToken(model.CreateTokenRequest{Apps: []string{"a"}, ExpiresIn: model.Duration{Duration: time.Minute}}), false)
	a.must("GET", "/v1/apps", "", 200, nil)
	a.now = a.now.Add(time.Minute)
	a.wantError("GET", "/v1/apps", "", 401, "expired")
}

func TestLocalNeedsNoToken(t *testing.T) {
	a := newAuthEnv(t)
	a.as("", true)
	a.must("POST", "/v1/apps", `{"app_name":"a"}`, 201, nil)
	a.must("POST", "/v1/tokens", `{"admin":true}`, 201, nil)
	a.must("GET", "/v1/tokens", "", 200, nil)
	// A bad token on the admin socket is ignored, not an error.
	a.as("garbage", true)
	a.must("GET", "/v1/apps", "", 200, nil)
}
