// Package api owns torpor's REST API: an http.Handler that serves the Fly
// Machines API (apps, machines, lifecycle operations, wait, events, leases,
// metadata, exec, ps, versions, volumes) over the Machines interface, in the
// answer shapes of Fly's clients (views.go), with JSON errors, input
// validation, bearer token authentication scoped per app (see auth.go and
// docs/security.md) and request logging. It holds no state of its own: a
// lease's nonce (header fly-machine-lease-nonce) is handed to the machine
// lifecycle, which checks it; what of a request Fly's API has but torpor
// does not act on is model's to know (model/flynames.go).
package api

import (
	"log/slog"
	"net/http"

	"github.com/torpor-dev/torpor/internal/identifiers"
	"github.com/torpor-dev/torpor/internal/model"
)

// Config configures the API handler.
type Config struct {
	// Tokens authenticates the bearer tokens of requests that did not come
	// over the local admin socket (see WithLocalAdmin) and serves
	// /v1/tokens. When nil, only local requests are accepted.
	Tokens Tokens
	// Router, in a cluster, forwards requests for machines of other hosts
	// to them; Hosts serves /v1/hosts. Both are nil on a single host.
	Router Router
	Hosts  Hosts
	// Images serves /v1/images (pull, import, list, inspect, remove,
	// prune); nil leaves those routes out.
	Images Images
	// Metrics, if set, serves GET /metrics (with a token on TCP).
	Metrics MetricsServer
	// Dashboard, if set, serves POST /v1/dashboard (admin socket only).
	Dashboard Dashboard
	// Volumes serves /v1/apps/{app}/volumes; when nil, those routes answer 503.
	Volumes Volumes
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
	mux.HandleFunc("GET /metrics", s.metrics)
	s.handleAdmin(mux, "POST /v1/dashboard", s.openDashboard)

	s.handleAdmin(mux, "POST /v1/tokens", s.createToken)
	s.handleAdmin(mux, "GET /v1/tokens", s.listTokens)
	s.handleAdmin(mux, "DELETE /v1/tokens/{id}", s.revokeToken)

	s.handle(mux, "POST /v1/apps", s.createApp, "wait")
	s.handle(mux, "GET /v1/apps", s.listApps, "org_slug", "app_role")
	s.handle(mux, "GET /v1/apps/{app}", s.getApp)
	s.handle(mux, "DELETE /v1/apps/{app}", s.deleteApp)
	s.handle(mux, "POST /v1/apps/{app}/lease", s.acquireAppLease, "ttl")
	s.handle(mux, "GET /v1/apps/{app}/lease", s.getAppLease)
	s.handle(mux, "DELETE /v1/apps/{app}/lease", s.releaseAppLease)

	const machine = "/v1/apps/{app}/machines/{id}"
	s.handle(mux, "POST /v1/apps/{app}/machines", s.createMachine)
	s.handle(mux, "GET /v1/apps/{app}/machines", s.listMachines,
		"include_deleted", "region", "state", "summary", "include_leases", "metadata.")
	s.handle(mux, "GET "+machine, s.getMachine)
	s.handle(mux, "POST "+machine, s.updateMachine)
	s.handle(mux, "DELETE "+machine, s.destroyMachine, "force", "kill")
	s.handle(mux, "POST "+machine+"/start", s.startMachine)
	s.handle(mux, "POST "+machine+"/stop", s.stopMachine)
	s.handle(mux, "POST "+machine+"/restart", s.restartMachine, "timeout", "signal", "force_stop")
	s.handle(mux, "POST "+machine+"/suspend", s.suspendMachine)
	s.handle(mux, "POST "+machine+"/signal", s.signalMachine)
	s.handle(mux, "POST "+machine+"/exec", s.execMachine)
	s.handle(mux, "GET "+machine+"/ps", s.machineProcesses, "sort_by", "order")
	s.handle(mux, "GET "+machine+"/wait", s.waitMachine, "state", "timeout", "instance_id", "version", "from_event_id")
	s.handle(mux, "GET "+machine+"/events", s.machineEvents, "limit")
	s.handle(mux, "GET "+machine+"/versions", s.machineVersions)
	mux.HandleFunc("GET "+machine+"/logs", s.authorized(s.machineLogs)) // streams, so not an endpoint; checks its own query
	s.handle(mux, "POST "+machine+"/cordon", s.cordonMachine)
	s.handle(mux, "POST "+machine+"/uncordon", s.uncordonMachine)
	s.handle(mux, "GET "+machine+"/metadata", s.getMetadata)
	s.handle(mux, "POST "+machine+"/metadata/{key}", s.setMetadata)
	s.handle(mux, "DELETE "+machine+"/metadata/{key}", s.deleteMetadata)
	s.handle(mux, "POST "+machine+"/lease", s.acquireLease, "ttl")
	s.handle(mux, "GET "+machine+"/lease", s.getLease)
	s.handle(mux, "DELETE "+machine+"/lease", s.releaseLease)

	s.handleAdmin(mux, "GET /v1/hosts", s.listHosts)
	s.handleAdmin(mux, "POST /v1/hosts/{host}/cordon", s.cordonHost)
	s.handleAdmin(mux, "POST /v1/hosts/{host}/uncordon", s.uncordonHost)
	s.handleAdmin(mux, "POST /v1/hosts/{host}/drain", s.drainHost)
	if s.cfg.Images != nil {
		s.imageRoutes(mux)
	}
	s.volumeRoutes(mux)
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
		if err := checkQuery(r, query...); err != nil {
			s.writeError(w, r, err)
			return
		}
		if s.route(w, r) {
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
		r, err := withOperationContext(r)
		if err != nil {
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

// LeaseNonceHeader carries the nonce of the lease a caller holds on the
// machine it acts on (Fly's header).
const LeaseNonceHeader = "fly-machine-lease-nonce"

// withOperationContext puts in r's context what the machine lifecycle
// checks itself: the caller's lease nonce and who the caller is.
func withOperationContext(r *http.Request) (*http.Request, error) {
	ctx := model.WithCaller(r.Context(), callerOf(r.Context()).String())
	if vs := r.Header.Values(LeaseNonceHeader); len(vs) > 0 {
		if len(vs) > 1 || !identifiers.IsVersion(vs[0]) {
			return r, model.Errorf(model.KindInvalid, "invalid header %s: give it once, 1-64 letters or digits", LeaseNonceHeader)
		}
		ctx = model.WithLeaseNonce(ctx, vs[0])
	}
	return r.WithContext(ctx), nil
}

// authorized wraps a plain handler of a route with an {app} so that it only
// serves callers allowed that app.
func (s *server) authorized(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := authorize(r, false); err != nil {
			s.writeError(w, r, err)
			return
		}
		if s.route(w, r) {
			return
		}
		h(w, r)
	}
}

// healthz answers liveness probes; it needs no token.
func (s *server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, okBody{OK: true})
}
