// Package api owns torpor's REST API: an http.Handler that serves the Fly
// Machines API (apps, machines, lifecycle operations, wait, events) over the
// Machines interface, with JSON errors, input validation, bearer token
// authentication scoped per app (see auth.go and docs/security.md) and
// request logging. It holds no state of its own.
package api

import (
	"log/slog"
	"net/http"
)

// Config configures the API handler.
type Config struct {
	// Tokens authenticates the bearer tokens of requests that did not come
	// over the local admin socket (see WithLocalAdmin) and serves
	// /v1/tokens. When nil, only local requests are accepted.
	Tokens Tokens
}

// maxBodyBytes bounds request bodies.
const maxBodyBytes = 1 << 20

// server serves the API over a Machines implementation.
type server struct {
	m   Machines
	cfg Config
	log *slog.Logger
}

// New returns the API handler. A nil logger logs nowhere.
func New(m Machines, cfg Config, logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &server{m: m, cfg: cfg, log: logger}
	mux := http.NewServeMux()
	s.routes(mux)
	var h http.Handler = s.guard(jsonMuxErrors(mux))
	h = s.authenticate(h)
	return s.logRequests(h)
}

// routes registers every endpoint on mux.
func (s *server) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", s.healthz)

	s.handleAdmin(mux, "POST /v1/tokens", s.createToken)
	s.handleAdmin(mux, "GET /v1/tokens", s.listTokens)
	s.handleAdmin(mux, "DELETE /v1/tokens/{id}", s.revokeToken)

	s.handle(mux, "POST /v1/apps", s.createApp)
	s.handle(mux, "GET /v1/apps", s.listApps, "org_slug")
	s.handle(mux, "GET /v1/apps/{app}", s.getApp)
	s.handle(mux, "DELETE /v1/apps/{app}", s.deleteApp)

	const machine = "/v1/apps/{app}/machines/{id}"
	s.handle(mux, "POST /v1/apps/{app}/machines", s.createMachine)
	s.handle(mux, "GET /v1/apps/{app}/machines", s.listMachines)
	s.handle(mux, "GET "+machine, s.getMachine)
	s.handle(mux, "POST "+machine, s.updateMachine)
	s.handle(mux, "DELETE "+machine, s.destroyMachine, "force")
	s.handle(mux, "POST "+machine+"/start", s.startMachine)
	s.handle(mux, "POST "+machine+"/stop", s.stopMachine)
	s.handle(mux, "POST "+machine+"/suspend", s.suspendMachine)
	s.handle(mux, "GET "+machine+"/wait", s.waitMachine, "state", "timeout")
	s.handle(mux, "GET "+machine+"/events", s.machineEvents, "limit")
	mux.HandleFunc("GET "+machine+"/logs", s.authorized(s.machineLogs)) // streams, so not an endpoint; checks its own query
	s.handle(mux, "POST "+machine+"/cordon", s.cordonMachine)
	s.handle(mux, "POST "+machine+"/uncordon", s.uncordonMachine)
}

// endpoint handles one request: it returns the status and the value to send as
// JSON, or an error that is sent as {"error": "..."}.
type endpoint func(r *http.Request) (status int, body any, err error)

// handle registers an endpoint on mux that takes the query parameters named
// in query and no others; a route with an {app} is only for callers allowed
// that app.
func (s *server) handle(mux *http.ServeMux, pattern string, e endpoint, query ...string) {
	s.register(mux, pattern, e, false, query)
}

// handleAdmin registers an endpoint only admins may use.
func (s *server) handleAdmin(mux *http.ServeMux, pattern string, e endpoint, query ...string) {
	s.register(mux, pattern, e, true, query)
}

func (s *server) register(mux *http.ServeMux, pattern string, e endpoint, adminOnly bool, query []string) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if err := authorize(r, adminOnly); err != nil {
			s.writeError(w, r, err)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
		if err := checkQuery(r, query...); err != nil {
			s.writeError(w, r, err)
			return
		}
		status, body, err := e(r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, status, body)
	})
}

// authorized wraps a plain handler of a route with an {app} so that it only
// serves callers allowed that app.
func (s *server) authorized(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := authorize(r, false); err != nil {
			s.writeError(w, r, err)
			return
		}
		h(w, r)
	}
}

// healthz answers liveness probes; it needs no token.
func (s *server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, okBody{OK: true})
}
