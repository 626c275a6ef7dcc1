package api

import (
	"context"
	"net/http"

	"github.com/torpor-dev/torpor/internal/identifiers"
	"github.com/torpor-dev/torpor/internal/model"
)

// Router sends the requests for a machine that lives on another host of a
// cluster to that host (package cluster implements it; nil on a single
// host). The API authenticates and authorizes a request before it asks.
type Router interface {
	// Route returns the handler that serves r, a request for machine id of
	// app, on the machine's host, or nil when it is served here.
	Route(r *http.Request, app, id string) (http.Handler, error)
}

// Hosts are the hosts of a cluster (package cluster implements it).
type Hosts interface {
	ListHosts(ctx context.Context) ([]model.Host, error)
	CordonHost(ctx context.Context, id string, cordoned bool) error
	// DrainHost cordons the host and moves each of its machines to
	// another host; it returns when every machine has moved or failed to.
	DrainHost(ctx context.Context, id string) (model.DrainReport, error)
}

// WithPeer marks ctx as the context of a connection from another host of
// the cluster, authenticated by its certificate (mutual TLS with the
// cluster's CA): its requests were authorized by the host that forwards
// them and are trusted as admin. Only the cluster's listener code calls it.
func WithPeer(ctx context.Context) context.Context { return WithLocalAdmin(ctx) }

// hostList is the answer of GET /v1/hosts.
type hostList struct {
	Hosts []model.Host `json:"hosts"`
}

// errNoCluster answers the host routes of a daemon outside a cluster.
var errNoCluster = model.Errorf(model.KindPrecondition, "this daemon is not part of a cluster (start it with --cluster-etcd, see docs/cluster.md)")

func (s *server) listHosts(r *http.Request) (int, any, error) {
	if s.cfg.Hosts == nil {
		return 0, nil, errNoCluster
	}
	hosts, err := s.cfg.Hosts.ListHosts(r.Context())
	if hosts == nil {
		hosts = []model.Host{}
	}
	return http.StatusOK, hostList{Hosts: hosts}, err
}

func (s *server) cordonHost(r *http.Request) (int, any, error)   { return s.setHostCordon(r, true) }
func (s *server) uncordonHost(r *http.Request) (int, any, error) { return s.setHostCordon(r, false) }

func (s *server) setHostCordon(r *http.Request, cordoned bool) (int, any, error) {
	id, err := s.hostParam(r)
	if err != nil {
		return 0, nil, err
	}
	return ok(s.cfg.Hosts.CordonHost(r.Context(), id, cordoned))
}

func (s *server) drainHost(r *http.Request) (int, any, error) {
	id, err := s.hostParam(r)
	if err != nil {
		return 0, nil, err
	}
	report, err := s.cfg.Hosts.DrainHost(r.Context(), id)
	return http.StatusOK, report, err
}

// hostParam returns the {host} path parameter, checked.
func (s *server) hostParam(r *http.Request) (string, error) {
	if s.cfg.Hosts == nil {
		return "", errNoCluster
	}
	id := r.PathValue("host")
	if err := identifiers.HostID("path parameter host", id); err != nil {
		return "", err
	}
	return id, nil
}

// route serves r on the host of its machine when the Router says it lives
// elsewhere; it reports whether it did.
func (s *server) route(w http.ResponseWriter, r *http.Request) bool {
	if s.cfg.Router == nil {
		return false
	}
	app, id := r.PathValue("app"), r.PathValue("id")
	if !identifiers.IsAppName(app) || !identifiers.IsMachineID(id) {
		return false // served here, which answers what is wrong with them
	}
	h, err := s.cfg.Router.Route(r, app, id)
	if err != nil {
		s.writeError(w, r, err)
		return true
	}
	if h == nil {
		return false
	}
	h.ServeHTTP(w, r)
	return true
}
