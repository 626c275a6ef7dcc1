package api

import (
	"context"
	"net/http"

	"github.com/torpor-dev/torpor/internal/model"
)

// MetricsServer serves the metrics page; package metrics implements it.
type MetricsServer interface {
	// ServeMetrics answers a GET /metrics whose caller may see the apps
	// allow accepts; allow is nil for a caller who may see everything.
	ServeMetrics(w http.ResponseWriter, r *http.Request, allow func(app string) bool)
}

// Dashboard opens the web dashboard to a browser on the daemon's host;
// the daemon implements it.
type Dashboard interface {
	// OpenLocal makes sure the dashboard is served on a loopback port and
	// returns a one-time login link to it.
	OpenLocal(ctx context.Context) (model.DashboardLink, error)
}

// metrics serves GET /metrics: everything to the admin socket and admin
// tokens, only the series of its apps to an app token (docs/metrics.md).
func (s *server) metrics(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Metrics == nil {
		s.writeError(w, r, &httpError{status: http.StatusNotFound, msg: "this daemon serves no metrics"})
		return
	}
	c := callerOf(r.Context())
	var allow func(string) bool
	if !c.admin() {
		allow = c.token.Allows
	}
	s.cfg.Metrics.ServeMetrics(w, r, allow)
}

// openDashboard serves POST /v1/dashboard, on the local admin socket only:
// the link it answers logs in as the admin, and the port it opens is on
// the daemon's loopback, of use only to someone on its host.
func (s *server) openDashboard(r *http.Request) (int, any, error) {
	if !isLocal(r.Context()) {
		return 0, nil, forbidden("the dashboard link is only given on the local admin socket (run \"torpor dashboard\" on the daemon's host); over TCP, log in at /ui/ with a token")
	}
	if s.cfg.Dashboard == nil {
		return 0, nil, &httpError{status: http.StatusNotFound, msg: "this daemon serves no dashboard"}
	}
	link, err := s.cfg.Dashboard.OpenLocal(r.Context())
	return http.StatusOK, link, err
}
