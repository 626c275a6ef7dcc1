package daemon

import (
	"net/http"
	"net/http/pprof"
	"strings"

	"github.com/torpor-dev/torpor/internal/api"
)

// withPprof serves Go's runtime profiles (goroutines, heap, CPU, ...) under
// /debug/pprof/ next to the API handler h, for diagnosing the daemon (the
// soak test reads its goroutine count there). Profiles show the daemon's
// internals, so they are only served on the local admin socket, never over
// TCP, whatever token a request carries.
func withPprof(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/debug/pprof/") {
			h.ServeHTTP(w, r)
			return
		}
		if !api.IsLocalAdmin(r.Context()) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`{"error":"profiles are only served on the local admin socket"}` + "\n"))
			return
		}
		mux.ServeHTTP(w, r)
	})
}
