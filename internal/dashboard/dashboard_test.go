package dashboard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/api"
	"github.com/torpor-dev/torpor/internal/auth"
	"github.com/torpor-dev/torpor/internal/dashboard"
	"github.com/torpor-dev/torpor/internal/machine/machinetest"
	"github.com/torpor-dev/torpor/internal/model"
)

// env is the dashboard over the real API handler, token store and machine
// manager (on the fake runtime), served on a real HTTP listener.
type env struct {
	*machinetest.Env
	d      *dashboard.Dashboard
	tokens *auth.Tokens
	srv    *httptest.Server
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{Env: machinetest.New(t)}
	e.tokens = auth.New(e.Store, nil)
	h := api.New(e.M, api.Config{Tokens: e.tokens}, nil)
	e.d = dashboard.New(dashboard.Config{Machines: e.M, Tokens: e.tokens, API: h,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Cleanup(e.d.Close)
	e.srv = httptest.NewServer(e.d)
	t.Cleanup(e.srv.Close)
	e.App(t, "web")
	e.App(t, "secret")
	return e
}

// browser is an HTTP client with a cookie jar that does not follow
// redirects, like a browser tab whose every answer the test looks at.
type browser struct {
	t    *testing.T
	c    *http.Client
	base string
	csrf string
}

func (e *env) browser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: e.srv.URL, c: &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (b *browser) do(method, path string, body io.Reader, hdr map[string]string) (*http.Response, string) {
	b.t.Helper()
	req, err := http.NewRequest(method, b.base+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, string(data)
}

// login posts a token to the login form; it returns the answer's status.
func (b *browser) login(token string) int {
	b.t.Helper()
	resp, _ := b.do("POST", "/ui/login", strings.NewReader(url.Values{"token": {token}}.Encode()),
		map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Origin": b.base})
	if resp.StatusCode == http.StatusSeeOther {
		b.loadPage()
	}
	return resp.StatusCode
}

var csrfMeta = regexp.MustCompile(`<meta name="csrf-token" content="([0-9a-f]+)">`)

// loadPage opens /ui/ and keeps the CSRF token it carries.
func (b *browser) loadPage() {
	b.t.Helper()
	resp, body := b.do("GET", "/ui/", nil, nil)
	m := csrfMeta.FindStringSubmatch(body)
	if resp.StatusCode != 200 || m == nil {
		b.t.Fatalf("GET /ui/: %d, no CSRF token in the page:\n%s", resp.StatusCode, body)
	}
	b.csrf = m[1]
}

// call is a call of the page's script to the API through the dashboard.
func (b *browser) call(method, path string) (int, string) {
	b.t.Helper()
	resp, body := b.do(method, "/ui/api"+path, nil, map[string]string{"X-Torpor-CSRF": b.csrf, "Origin": b.base})
	return resp.StatusCode, body
}

func (e *env) token(t *testing.T, req model.CreateTokenRequest) model.CreatedToken {
	t.Helper()
	tok, err := e.tokens.Create(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestLoginRequiredAndTokenScope(t *testing.T) {
	e := newEnv(t)
	mine := e.Machine(t, "web")
	theirs := e.Machine(t, "secret")
	b := e.browser(t)
	if resp, _ := b.do("GET", "/ui/", nil, nil); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login" {
		t.Fatalf("GET /ui/ without a session: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if code, _ := b.call("GET", "/v1/apps"); code != http.StatusUnauthorized {
		t.Fatalf("API call without a session: %d", code)
	}
	if code := b.login("torpor_0123_" + strings.Repeat("0", 64)); code != http.StatusUnauthorized {
		t.Fatalf("login with a made-up token: %d", code)
	}
	tok := e.token(t, model.CreateTokenRequest{Apps: []string{"web"}, Name: "web only"})
	if code := b.login(tok.Secret); code != http.StatusSeeOther {
		t.Fatalf("login with an app token: %d", code)
	}
	code, body := b.call("GET", "/v1/apps")
	if code != 200 || !strings.Contains(body, `"web"`) || strings.Contains(body, "secret") {
		t.Fatalf("apps seen by the web token: %d %s", code, body)
	}
	if code, _ := b.call("GET", "/v1/apps/secret/machines/"+theirs.ID); code != http.StatusForbidden {
		t.Fatalf("another app's machine: %d", code)
	}
	if code, body := b.call("POST", "/v1/apps/web/machines/"+mine.ID+"/suspend"); code != 200 {
		t.Fatalf("suspend through the dashboard: %d %s", code, body)
	}
	if got, _ := e.M.Get(context.Background(), "web", mine.ID); got.State != model.StateSuspended {
		t.Fatalf("machine is %s after the dashboard's suspend", got.State)
	}
	// Revoking the token ends the session at once.
	if err := e.tokens.Revoke(context.Background(), tok.ID); err != nil {
		t.Fatal(err)
	}
	if code, _ := b.call("GET", "/v1/apps"); code != http.StatusUnauthorized {
		t.Fatalf("call after the token was revoked: %d", code)
	}
}

func TestButtonsNeedCSRFAndSameOrigin(t *testing.T) {
	e := newEnv(t)
	m := e.Machine(t, "web")
	b := e.browser(t)
	if code := b.login(e.token(t, model.CreateTokenRequest{Admin: true}).Secret); code != http.StatusSeeOther {
		t.Fatalf("login: %d", code)
	}
	path := "/ui/api/v1/apps/web/machines/" + m.ID + "/stop"
	for name, hdr := range map[string]map[string]string{
		"no CSRF token":    {"Origin": b.base},
		"wrong CSRF token": {"Origin": b.base, "X-Torpor-CSRF": strings.Repeat("0", 64)},
		"another origin":   {"Origin": "https://evil.example", "X-Torpor-CSRF": b.csrf},
	} {
		if resp, body := b.do("POST", path, nil, hdr); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %d %s", name, resp.StatusCode, body)
		}
	}
	if got, _ := e.M.Get(context.Background(), "web", m.ID); got.State != model.StateStarted {
		t.Fatalf("a refused call changed the machine: %s", got.State)
	}
	// Logging in from another site's form is refused too.
	resp, _ := b.do("POST", "/ui/login", strings.NewReader("token=x"), map[string]string{
		"Content-Type": "application/x-www-form-urlencoded", "Origin": "https://evil.example"})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site login: %d", resp.StatusCode)
	}
	// The session cookie is HttpOnly and SameSite=Strict.
	resp, _ = b.do("GET", "/ui/login?code=nope", nil, nil)
	b2 := e.browser(t)
	r2, _ := b2.do("POST", "/ui/login", strings.NewReader(url.Values{"token": {e.token(t, model.CreateTokenRequest{Admin: true}).Secret}}.Encode()),
		map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	cookie := r2.Header.Get("Set-Cookie")
	if !strings.Contains(cookie, "HttpOnly") || !strings.Contains(cookie, "SameSite=Strict") || !strings.Contains(cookie, "Path=/ui/") {
		t.Errorf("session cookie %q", cookie)
	}
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a made-up one-time code: %d", resp.StatusCode)
	}
}

func TestOneTimeLink(t *testing.T) {
	e := newEnv(t)
	link := e.d.LoginLink(e.srv.URL)
	u, err := url.Parse(link.URL)
	if err != nil || time.Until(link.ExpiresAt) <= 0 {
		t.Fatalf("link %+v", link)
	}
	b := e.browser(t)
	if resp, _ := b.do("GET", u.RequestURI(), nil, nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("first use: %d", resp.StatusCode)
	}
	b.loadPage()
	if code, body := b.call("GET", "/v1/apps"); code != 200 || !strings.Contains(body, "secret") {
		t.Fatalf("the link's session is not the admin's: %d %s", code, body)
	}
	other := e.browser(t)
	if resp, body := other.do("GET", u.RequestURI(), nil, nil); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "used already") {
		t.Fatalf("second use: %d %s", resp.StatusCode, body)
	}
	// Logging out ends the session.
	resp, _ := b.do("POST", "/ui/logout", strings.NewReader("csrf="+b.csrf),
		map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Origin": b.base})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	if code, _ := b.call("GET", "/v1/apps"); code != http.StatusUnauthorized {
		t.Fatalf("call after logout: %d", code)
	}
}

// TestStreamOnlyShowsAllowedApps opens the live stream as an app token's
// session and checks it gets that app's changes and none of another app's.
func TestStreamOnlyShowsAllowedApps(t *testing.T) {
	e := newEnv(t)
	b := e.browser(t)
	if code := b.login(e.token(t, model.CreateTokenRequest{Apps: []string{"web"}}).Secret); code != http.StatusSeeOther {
		t.Fatalf("login: %d", code)
	}
	req, _ := http.NewRequest("GET", b.base+"/ui/api/stream", nil)
	client := &http.Client{Jar: b.c.Jar}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	e.Machine(t, "secret")
	m := e.Machine(t, "web")
	if err := e.M.Suspend(context.Background(), "web", m.ID); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var states []model.State
	for len(states) == 0 || states[len(states)-1] != model.StateSuspended {
		if !sc.Scan() {
			t.Fatalf("stream ended: %v (states %v)", sc.Err(), states)
		}
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || data == "{}" {
			continue
		}
		var u struct {
			App    string        `json:"app"`
			ID     string        `json:"id"`
			State  model.State   `json:"state"`
			Events []model.Event `json:"events"`
		}
		if err := json.Unmarshal([]byte(data), &u); err != nil {
			t.Fatal(err)
		}
		if u.App != "web" || u.ID != m.ID {
			t.Fatalf("the web token's stream shows %s/%s", u.App, u.ID)
		}
		states = append(states, u.State)
	}
	want := []model.State{model.StateCreated, model.StateStarting, model.StateStarted, model.StateSuspending, model.StateSuspended}
	if strings.Join(toStrings(states), " ") != strings.Join(toStrings(want), " ") {
		t.Fatalf("states streamed %v, want %v", states, want)
	}
}

func toStrings(ss []model.State) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = string(s)
	}
	return out
}

func TestAssetsAreEmbeddedAndPagesLocked(t *testing.T) {
	e := newEnv(t)
	b := e.browser(t)
	for _, p := range []string{"/ui/assets/app.js", "/ui/assets/style.css"} {
		resp, body := b.do("GET", p, nil, nil)
		if resp.StatusCode != 200 || len(body) < 1000 {
			t.Errorf("%s: %d, %d bytes", p, resp.StatusCode, len(body))
		}
		// (The SVG namespace is a name, not an address.)
		if body := strings.ReplaceAll(body, "http://www.w3.org/2000/svg", ""); strings.Contains(body, "http://") || strings.Contains(body, "https://") {
			t.Errorf("%s refers to another site", p)
		}
	}
	resp, _ := b.do("GET", "/ui/login", nil, nil)
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
	if resp, _ := b.do("PUT", "/ui/api/v1/apps", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("PUT without a session: %d", resp.StatusCode)
	}
}

// TestCloseEndsStreams checks that closing the dashboard (the daemon
// shutting down) ends the live stream and a followed log at once.
func TestCloseEndsStreams(t *testing.T) {
	e := newEnv(t)
	m := e.Machine(t, "web")
	b := e.browser(t)
	if code := b.login(e.token(t, model.CreateTokenRequest{Admin: true}).Secret); code != http.StatusSeeOther {
		t.Fatalf("login: %d", code)
	}
	client := &http.Client{Jar: b.c.Jar}
	ended := make(chan string, 2)
	for _, p := range []string{"/ui/api/stream", "/ui/api/v1/apps/web/machines/" + m.ID + "/logs?follow=true"} {
		resp, err := client.Get(b.base + p)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s", p, resp.Status)
		}
		go func() {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			ended <- p
		}()
	}
	time.Sleep(100 * time.Millisecond)
	e.d.Close()
	for range 2 {
		select {
		case <-ended:
		case <-time.After(5 * time.Second):
			t.Fatal("a stream outlived the dashboard")
		}
	}
}
