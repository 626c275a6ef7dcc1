package api

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/torpor-dev/torpor/internal/model"
)

// createAppRequest is the body of POST /v1/apps.
type createAppRequest struct {
	AppName string `json:"app_name"`
	OrgSlug string `json:"org_slug"`
}

// appList is the answer of GET /v1/apps.
type appList struct {
	TotalApps int         `json:"total_apps"`
	Apps      []model.App `json:"apps"`
}

// waitBody is the answer of a successful wait.
type waitBody struct {
	OK    bool        `json:"ok"`
	State model.State `json:"state"`
}

func (s *server) createApp(r *http.Request) (int, any, error) {
	var req createAppRequest
	if err := requireBody(r, &req); err != nil {
		return 0, nil, err
	}
	if !ValidAppName(req.AppName) {
		return 0, nil, model.Errorf(model.KindInvalid, "invalid app_name %q: %s", req.AppName, appNameRule)
	}
	if !validSlug(req.OrgSlug) {
		return 0, nil, model.Errorf(model.KindInvalid,
			"invalid org_slug %q: must be up to 63 lowercase letters, digits or dashes, starting with a letter or digit", req.OrgSlug)
	}
	if c := callerOf(r.Context()); !c.allows(req.AppName) {
		return 0, nil, forbidden("token %s may only create the apps it is scoped to (%s), not %q",
			c.token.ID, strings.Join(c.token.Apps, ", "), req.AppName)
	}
	app, err := s.m.CreateApp(r.Context(), model.App{Name: req.AppName, Org: req.OrgSlug})
	return http.StatusCreated, app, err
}

func (s *server) listApps(r *http.Request) (int, any, error) {
	org := r.URL.Query().Get("org_slug")
	if !validSlug(org) {
		return 0, nil, model.Errorf(model.KindInvalid,
			"invalid query parameter org_slug %q: must be up to 63 lowercase letters, digits or dashes", org)
	}
	all, err := s.m.ListApps(r.Context())
	c := callerOf(r.Context())
	apps := []model.App{}
	for _, app := range all {
		if c.allows(app.Name) && (org == "" || app.Org == org) {
			apps = append(apps, app)
		}
	}
	return http.StatusOK, appList{TotalApps: len(apps), Apps: apps}, err
}

func (s *server) getApp(r *http.Request) (int, any, error) {
	name, err := appParam(r)
	if err != nil {
		return 0, nil, err
	}
	app, err := s.m.GetApp(r.Context(), name)
	return http.StatusOK, app, err
}

func (s *server) deleteApp(r *http.Request) (int, any, error) {
	name, err := appParam(r)
	if err != nil {
		return 0, nil, err
	}
	return ok(s.m.DeleteApp(r.Context(), name))
}

func (s *server) createMachine(r *http.Request) (int, any, error) {
	app, err := appParam(r)
	if err != nil {
		return 0, nil, err
	}
	var req model.CreateMachineRequest
	if err := requireBody(r, &req); err != nil {
		return 0, nil, err
	}
	m, err := s.m.Create(r.Context(), app, req)
	return http.StatusOK, m, err
}

func (s *server) listMachines(r *http.Request) (int, any, error) {
	app, err := appParam(r)
	if err != nil {
		return 0, nil, err
	}
	list, err := s.m.List(r.Context(), app)
	if list == nil {
		list = []model.Machine{}
	}
	return http.StatusOK, list, err
}

func (s *server) getMachine(r *http.Request) (int, any, error) {
	app, id, err := machineParams(r)
	if err != nil {
		return 0, nil, err
	}
	m, err := s.m.Get(r.Context(), app, id)
	return http.StatusOK, m, err
}

func (s *server) updateMachine(r *http.Request) (int, any, error) {
	app, id, err := machineParams(r)
	if err != nil {
		return 0, nil, err
	}
	var req model.UpdateMachineRequest
	if err := requireBody(r, &req); err != nil {
		return 0, nil, err
	}
	m, err := s.m.Update(r.Context(), app, id, req)
	return http.StatusOK, m, err
}

func (s *server) startMachine(r *http.Request) (int, any, error) {
	app, id, err := machineParams(r)
	if err != nil {
		return 0, nil, err
	}
	resp, err := s.m.Start(r.Context(), app, id)
	return http.StatusOK, resp, err
}

func (s *server) stopMachine(r *http.Request) (int, any, error) {
	app, id, err := machineParams(r)
	if err != nil {
		return 0, nil, err
	}
	var req model.StopRequest
	if err := decodeBody(r, &req); err != nil && !errors.Is(err, errNoBody) {
		return 0, nil, err
	}
	if req.Timeout.Duration < 0 {
		return 0, nil, model.Errorf(model.KindInvalid, "invalid timeout %s: must not be negative", req.Timeout.Duration)
	}
	return ok(s.m.Stop(r.Context(), app, id, req))
}

func (s *server) suspendMachine(r *http.Request) (int, any, error) {
	app, id, err := machineParams(r)
	if err != nil {
		return 0, nil, err
	}
	return ok(s.m.Suspend(r.Context(), app, id))
}

func (s *server) destroyMachine(r *http.Request) (int, any, error) {
	app, id, err := machineParams(r)
	if err != nil {
		return 0, nil, err
	}
	force, err := boolQuery(r, "force")
	if err != nil {
		return 0, nil, err
	}
	return ok(s.m.Destroy(r.Context(), app, id, force))
}

func (s *server) waitMachine(r *http.Request) (int, any, error) {
	app, id, err := machineParams(r)
	if err != nil {
		return 0, nil, err
	}
	states, err := waitStates(r)
	if err != nil {
		return 0, nil, err
	}
	timeout, err := waitTimeout(r)
	if err != nil {
		return 0, nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	m, err := s.m.Wait(ctx, app, id, states)
	if err != nil && model.KindOf(err) == model.KindInternal && isDeadline(ctx) {
		err = model.Errorf(model.KindTimeout, "timed out after %s waiting for machine %s to reach state %s",
			timeout, id, joinStates(states))
	}
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, waitBody{OK: true, State: m.State}, nil
}

func (s *server) machineEvents(r *http.Request) (int, any, error) {
	app, id, err := machineParams(r)
	if err != nil {
		return 0, nil, err
	}
	limit, err := intQuery(r, "limit", 1, maxEventsLimit, 0)
	if err != nil {
		return 0, nil, err
	}
	events, err := s.m.Events(r.Context(), app, id)
	if events == nil {
		events = []model.Event{}
	}
	if limit > 0 && len(events) > limit {
		events = events[:limit] // newest first
	}
	return http.StatusOK, events, err
}

func (s *server) cordonMachine(r *http.Request) (int, any, error) {
	return s.setCordon(r, true)
}

func (s *server) uncordonMachine(r *http.Request) (int, any, error) {
	return s.setCordon(r, false)
}

func (s *server) setCordon(r *http.Request, cordoned bool) (int, any, error) {
	app, id, err := machineParams(r)
	if err != nil {
		return 0, nil, err
	}
	return ok(s.m.Cordon(r.Context(), app, id, cordoned))
}

// ok answers {"ok": true} when err is nil.
func ok(err error) (int, any, error) {
	return http.StatusOK, okBody{OK: true}, err
}

// joinStates lists states as "started or suspended".
func joinStates(states []model.State) string {
	names := make([]string, len(states))
	for i, s := range states {
		names[i] = string(s)
	}
	return strings.Join(names, " or ")
}
