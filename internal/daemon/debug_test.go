package daemon

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestPprofBehindToken(t *testing.T) {
	api := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("api")) })
	h := withPprof(api, "secret")
	get := func(path, token string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	if w := get("/v1/apps", ""); w.Body.String() != "api" {
		t.Fatalf("API path not passed on: %d %q", w.Code, w.Body)
	}
	if w := get("/debug/pprof/goroutine?debug=1", ""); w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), `"error"`) {
		t.Fatalf("profile without token: %d %q", w.Code, w.Body)
	}
	if w := get("/debug/pprof/goroutine?debug=1", "wrong"); w.Code != http.StatusUnauthorized {
		t.Fatalf("profile with a wrong token: %d", w.Code)
	}
	if w := get("/debug/pprof/goroutine?debug=1", "secret"); w.Code != http.StatusOK || !strings.HasPrefix(w.Body.String(), "goroutine profile: total") {
		t.Fatalf("profile with the token: %d %q", w.Code, w.Body)
	}
	open := withPprof(api, "")
	w := httptest.NewRecorder()
	open.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/debug/pprof/goroutine?debug=1", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("profile with no token configured: %d", w.Code)
	}
}
