package daemon

import (
	"crypto/subtle"
	"net/http"
	"net/http/pprof"
	"strings"
)

// withPprof serves Go's runtime profiles (goroutines, heap, CPU, ...) under
// /debug/pprof/ next to the API handler h, for diagnosing the daemon (the
// soak test reads its goroutine count there). When the API requires a token,
// so do the profiles.
func withPprof(h http.Handler, token string) http.Handler {
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
		if token != "" && !bearerIs(r, token) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"missing or wrong bearer token"}` + "\n"))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// bearerIs reports whether r carries "Authorization: Bearer <token>".
func bearerIs(r *http.Request, token string) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}
