package daemon

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/torpor-dev/torpor/internal/api"
)

func TestPprofOnlyOnAdminSocket(t *testing.T) {
	apiH := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("api")) })
	h := withPprof(apiH)
	get := func(path string, local bool) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		r.Header.Set("Authorization", "Bearer some-token")
		if local {
			r = r.WithContext(api.WithLocalAdmin(r.Context()))
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	if w := get("/v1/apps", false); w.Body.String() != "api" {
		t.Fatalf("API path not passed on: %d %q", w.Code, w.Body)
	}
	if w := get("/debug/pprof/goroutine?debug=1", false); w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), `"error"`) {
		t.Fatalf("profile over TCP: %d %q", w.Code, w.Body)
	}
	if w := get("/debug/pprof/goroutine?debug=1", true); w.Code != http.StatusOK || !strings.HasPrefix(w.Body.String(), "goroutine profile: total") {
		t.Fatalf("profile on the admin socket: %d %q", w.Code, w.Body)
	}
}
