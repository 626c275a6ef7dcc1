package api

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"strings"

	"github.com/torpor-dev/torpor/internal/identifiers"
	"github.com/torpor-dev/torpor/internal/model"
)

func (s *server) createApp(r *http.Request) (int, any, error) {
	var req model.CreateAppRequest
	if err := requireBody(r, &req); err != nil {
		return 0, nil, err
	}
	if _, err := boolQuery(r, "wait"); err != nil { // creation is synchronous: there is nothing to wait for
		return 0, nil, err
	}
	name, field := req.AppName, "app_name"
	switch {
	case req.AppName == "":
		name, field = req.Name, "name"
	case req.Name != "" && req.Name != req.AppName:
		return 0, nil, model.Errorf(model.KindInvalid, "app_name %q and name %q differ: give one", req.AppName, req.Name)
	}
	if err := identifiers.AppName(field, name); err != nil {
		return 0, nil, err
	}
	if err := identifiers.Slug("org_slug", req.OrgSlug); err != nil {
		return 0, nil, err
	}
	if err := appRole("app_role_id", req.AppRoleID); err != nil {
		return 0, nil, err
	}
	if c := callerOf(r.Context()); !c.allows(name) {
		return 0, nil, forbidden("token %s may only create the apps it is scoped to (%s), not %q",
			c.token.ID, strings.Join(c.token.Apps, ", "), name)
	}
	app, err := s.m.CreateApp(r.Context(), model.App{Name: name, Org: req.OrgSlug, Role: req.AppRoleID})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, withWarnings{viewApp(app, 0, 0), model.Warnings(req.NotActedOn)}, nil
}

// withWarnings is an answer with the warnings of its request.
type withWarnings struct {
	appView
	Warnings []string `json:"warnings,omitempty"`
}

func (s *server) listApps(r *http.Request) (int, any, error) {
	org, role := r.URL.Query().Get("org_slug"), r.URL.Query().Get("app_role")
	if err := identifiers.Slug("query parameter org_slug", org); err != nil {
		return 0, nil, err
	}
	if err := appRole("query parameter app_role", role); err != nil {
		return 0, nil, err
	}
	all, err := s.m.ListApps(r.Context())
	if err != nil {
		return 0, nil, err
	}
	c := callerOf(r.Context())
	apps := []appView{}
	for _, app := range all {
		if !c.allows(app.Name) || (org != "" && app.Org != org) || (role != "" && app.Role != role) {
			continue
		}
		machines, volumes, err := s.counts(r.Context(), app.Name)
		if err != nil && !model.IsNotFound(err) {
			return 0, nil, err
		}
		apps = append(apps, viewApp(app, machines, volumes))
	}
	return http.StatusOK, appList{TotalApps: len(apps), Apps: apps}, nil
}

// counts are the numbers of machines of app that are not destroyed and of
// its volumes.
func (s *server) counts(ctx context.Context, app string) (machines, volumes int, err error) {
	ms, err := s.m.ListMachines(ctx, app, model.ListOptions{})
	if err != nil || s.cfg.Volumes == nil {
		return len(ms), 0, err
	}
	vs, err := s.cfg.Volumes.List(ctx, app)
	return len(ms), len(vs), err
}

func (s *server) getApp(r *http.Request) (int, any, error) {
	name, err := appParam(r)
	if err != nil {
		return 0, nil, err
	}
	app, err := s.m.GetApp(r.Context(), name)
	if err != nil {
		return 0, nil, err
	}
	machines, volumes, err := s.counts(r.Context(), name)
	return http.StatusOK, viewApp(app, machines, volumes), err
}

func (s *server) deleteApp(r *http.Request) (int, any, error) {
	name, err := appParam(r)
	if err != nil {
		return 0, nil, err
	}
	if err := s.m.DeleteApp(r.Context(), name); err != nil {
		return 0, nil, err
	}
	return http.StatusAccepted, okBody{OK: true}, nil
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
	return http.StatusOK, viewMachine(m), err
}

func (s *server) listMachines(r *http.Request) (int, any, error) {
	app, err := appParam(r)
	if err != nil {
		return 0, nil, err
	}
	opts, summary, err := listQuery(r)
	if err != nil {
		return 0, nil, err
	}
	list, err := s.m.ListMachines(r.Context(), app, opts)
	if err != nil {
		return 0, nil, err
	}
	views := viewMachines(list)
	if summary {
		short, err := summarize(views)
		return http.StatusOK, short, err
	}
	return http.StatusOK, views, nil
}

func (s *server) getMachine(r *http.Request) (int, any, error) {
	app, id, err := machineParams(r)
	if err != nil {
		return 0, nil, err
	}
	m, err := s.m.Get(r.Context(), app, id)
	return http.StatusOK, viewMachine(m), err
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
	return http.StatusOK, viewMachine(m), err
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
	if req.ID != "" && req.ID != id {
		return 0, nil, model.Errorf(model.KindInvalid, "id %q in the body is not the machine of the path (%s)", req.ID, id)
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
	// fly-go's kill: kill the machine if it runs, i.e. what force does.
	kill, err := boolQuery(r, "kill")
	if err != nil {
		return 0, nil, err
	}
	return ok(s.m.Destroy(r.Context(), app, id, force || kill))
}

func (s *server) waitMachine(r *http.Request) (int, any, error) {
	app, id, err := machineParams(r)
	if err != nil {
		return 0, nil, err
	}
	opts, err := waitQuery(r)
	if err != nil {
		return 0, nil, err
	}
	timeout, err := waitTimeout(r)
	if err != nil {
		return 0, nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	m, err := s.m.WaitFor(ctx, app, id, opts)
	if err != nil && model.KindOf(err) == model.KindInternal && isDeadline(ctx) {
		err = model.Errorf(model.KindTimeout, "timed out after %s waiting for machine %s to reach state %s",
			timeout, id, strings.Join(opts.States, " or "))
	}
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, waitBody{OK: true, State: m.State, Version: m.Version}, nil
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

// appRoleRe is the rule of app roles ("postgres_cluster").
var appRoleRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// appRole checks an optional app role given as field.
func appRole(field, role string) error {
	if role == "" || appRoleRe.MatchString(role) {
		return nil
	}
	return model.Errorf(model.KindInvalid, "invalid %s %q: must be 1-63 lowercase letters, digits, '_' or '-', starting with a letter or digit", field, role)
}
