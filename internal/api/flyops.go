package api

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// Handlers of Fly's machine endpoints beyond the lifecycle: restart,
// signal, exec, ps, versions, metadata and leases.

func (s *server) restartMachine(r *http.Request) (int, any, error) {
	app, id, err := machineParams(r)
	if err != nil {
		return 0, nil, err
	}
	var req model.RestartRequest
	q := r.URL.Query()
	if v := q.Get("timeout"); v != "" {
		// A Go duration ("10s", as fly-go sends it) or a number of seconds.
		if err := req.Timeout.UnmarshalJSON([]byte(strconv.Quote(v))); err != nil || req.Timeout.Duration < 0 {
			return 0, nil, model.Errorf(model.KindInvalid, "invalid query parameter timeout %q: must be a duration such as \"10s\" or a number of seconds", v)
		}
	}
	req.Signal = q.Get("signal")
	if req.ForceStop, err = boolQuery(r, "force_stop"); err != nil {
		return 0, nil, err
	}
	return ok(s.m.Restart(r.Context(), app, id, req))
}

func (s *server) signalMachine(r *http.Request) (int, any, error) {
	app, id, err := machineParams(r)
	if err != nil {
		return 0, nil, err
	}
	var req model.SignalRequest
	if err := requireBody(r, &req); err != nil {
		return 0, nil, err
	}
	return ok(s.m.Signal(r.Context(), app, id, string(req.Signal)))
}

func (s *server) execMachine(r *http.Request) (int, any, error) {
	app, id, err := machineParams(r)
	if err != nil {
		return 0, nil, err
	}
	var req model.ExecRequest
	if err := requireBody(r, &req); err != nil {
		return 0, nil, err
	}
	res, err := s.m.Exec(r.Context(), app, id, req)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, execAnswer{res, model.Warnings(req.NotActedOn)}, nil
}

// execAnswer is an exec's answer with the warnings of its request.
type execAnswer struct {
	model.ExecResponse
	Warnings []string `json:"warnings,omitempty"`
}

func (s *server) machineProcesses(r *http.Request) (int, any, error) {
	app, id, err := machineParams(r)
	if err != nil {
		return 0, nil, err
	}
	order := model.ProcessSort{By: r.URL.Query().Get("sort_by")}
	switch o := r.URL.Query().Get("order"); o {
	case "", "asc":
	case "desc":
		order.Desc = true
	default:
		return 0, nil, model.Errorf(model.KindInvalid, "invalid query parameter order %q: must be asc or desc", o)
	}
	procs, err := s.m.Processes(r.Context(), app, id, order)
	if procs == nil {
		procs = []model.ProcessStat{}
	}
	return http.StatusOK, procs, err
}

func (s *server) machineVersions(r *http.Request) (int, any, error) {
	app, id, err := machineParams(r)
	if err != nil {
		return 0, nil, err
	}
	vs, err := s.m.Versions(r.Context(), app, id)
	if vs == nil {
		vs = []model.MachineVersion{}
	}
	return http.StatusOK, vs, err
}

func (s *server) getMetadata(r *http.Request) (int, any, error) {
	app, id, err := machineParams(r)
	if err != nil {
		return 0, nil, err
	}
	md, err := s.m.Metadata(r.Context(), app, id)
	return http.StatusOK, md, err
}

func (s *server) setMetadata(r *http.Request) (int, any, error) {
	app, id, err := machineParams(r)
	if err != nil {
		return 0, nil, err
	}
	var req model.MetadataRequest
	if err := requireBody(r, &req); err != nil {
		return 0, nil, err
	}
	return noContent(s.m.SetMetadata(r.Context(), app, id, r.PathValue("key"), req.Value, false))
}

func (s *server) deleteMetadata(r *http.Request) (int, any, error) {
	app, id, err := machineParams(r)
	if err != nil {
		return 0, nil, err
	}
	return noContent(s.m.SetMetadata(r.Context(), app, id, r.PathValue("key"), "", true))
}

// noContent answers 204, as Fly does for metadata changes.
func noContent(err error) (int, any, error) { return http.StatusNoContent, nil, err }

// acquireLease takes a lease (no nonce header) or refreshes the one whose
// nonce the header gives. The TTL comes from the query (fly-go) or the body
// (Fly's spec).
func (s *server) acquireLease(r *http.Request) (int, any, error) {
	app, id, err := machineParams(r)
	if err != nil {
		return 0, nil, err
	}
	p, err := leaseParams(r)
	if err != nil {
		return 0, nil, err
	}
	l, err := s.m.AcquireLease(r.Context(), app, id, p)
	return http.StatusOK, viewLease(l), err
}

// leaseParams reads a lease request's TTL (query or body) and description.
func leaseParams(r *http.Request) (model.LeaseParams, error) {
	var req model.LeaseRequest
	if err := decodeBody(r, &req); err != nil && !errors.Is(err, errNoBody) {
		return model.LeaseParams{}, err
	}
	ttl, err := intQuery(r, "ttl", 1, maxLeaseTTL, 0)
	if err != nil {
		return model.LeaseParams{}, err
	}
	switch {
	case req.TTL < 0 || req.TTL > maxLeaseTTL:
		return model.LeaseParams{}, model.Errorf(model.KindInvalid, "ttl must be between 1 and %d seconds, got %d", maxLeaseTTL, req.TTL)
	case ttl != 0 && req.TTL != 0 && ttl != req.TTL:
		return model.LeaseParams{}, model.Errorf(model.KindInvalid, "ttl is %d in the query and %d in the body: give one", ttl, req.TTL)
	case ttl == 0:
		ttl = req.TTL
	}
	return model.LeaseParams{TTL: time.Duration(ttl) * time.Second, Description: req.Description, Owner: callerOf(r.Context()).String()}, nil
}

// acquireAppLease takes or refreshes an app's lease (a torpor extension
// that serializes deploys: machine/applease.go).
func (s *server) acquireAppLease(r *http.Request) (int, any, error) {
	app, err := appParam(r)
	if err != nil {
		return 0, nil, err
	}
	p, err := leaseParams(r)
	if err != nil {
		return 0, nil, err
	}
	l, err := s.m.AcquireAppLease(r.Context(), app, p)
	return http.StatusOK, viewLease(l), err
}

func (s *server) getAppLease(r *http.Request) (int, any, error) {
	app, err := appParam(r)
	if err != nil {
		return 0, nil, err
	}
	l, err := s.m.GetAppLease(r.Context(), app)
	return http.StatusOK, viewLease(l), err
}

func (s *server) releaseAppLease(r *http.Request) (int, any, error) {
	app, err := appParam(r)
	if err != nil {
		return 0, nil, err
	}
	return ok(s.m.ReleaseAppLease(r.Context(), app))
}

// maxLeaseTTL bounds a lease's TTL in seconds (one day).
const maxLeaseTTL = 24 * 60 * 60

func (s *server) getLease(r *http.Request) (int, any, error) {
	app, id, err := machineParams(r)
	if err != nil {
		return 0, nil, err
	}
	l, err := s.m.GetLease(r.Context(), app, id)
	return http.StatusOK, viewLease(l), err
}

func (s *server) releaseLease(r *http.Request) (int, any, error) {
	app, id, err := machineParams(r)
	if err != nil {
		return 0, nil, err
	}
	return ok(s.m.ReleaseLease(r.Context(), app, id))
}
