// Package api owns torpor's REST API: an http.Handler that serves the Fly
// Machines API (apps, machines, lifecycle operations, wait, events) over the
// Machines interface, with JSON errors, input validation, optional bearer token
// authentication and request logging. It holds no state of its own.
package api

import (
	"log/slog"
	"net/http"
)

// Config configures the API handler.
type Config struct {
	// Token, when set, is the bearer token every /v1 request must carry
	// ("Authorization: Bearer <token>").
	Token string
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
	mux.HandleFunc("GET "+machine+"/logs", s.machineLogs) // streams, so not an endpoint; checks its own query
	s.handle(mux, "POST "+machine+"/cordon", s.cordonMachine)
	s.handle(mux, "POST "+machine+"/uncordon", s.uncordonMachine)
}

// endpoint handles one request: it returns the status and the value to send as
// JSON, or an error that is sent as {"error": "..."}.
type endpoint func(r *http.Request) (status int, body any, err error)

// handle registers an endpoint on mux that takes the query parameters named
// in query and no others.
func (s *server) handle(mux *http.ServeMux, pattern string, e endpoint, query ...string) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
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

// healthz answers liveness probes; it needs no token.
func (s *server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, okBody{OK: true})
}
