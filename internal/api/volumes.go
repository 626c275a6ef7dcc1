package api

import (
	"context"
	"net/http"

	"github.com/torpor-dev/torpor/internal/identifiers"
	"github.com/torpor-dev/torpor/internal/model"
)

// Volumes is what the API needs from volumes (package volume's Manager
// implements it).
type Volumes interface {
	Create(ctx context.Context, app string, req model.CreateVolumeRequest) (model.Volume, error)
	List(ctx context.Context, app string) ([]model.Volume, error)
	Get(ctx context.Context, app, id string) (model.Volume, error)
	Update(ctx context.Context, app, id string, req model.UpdateVolumeRequest) (model.Volume, error)
	Extend(ctx context.Context, app, id string, req model.ExtendVolumeRequest) (model.ExtendVolumeResponse, error)
	Destroy(ctx context.Context, app, id string) (model.Volume, error)
}

// volumeRoutes registers the volume endpoints (Fly's paths). Update takes
// POST, as Fly's OpenAPI document has it, and PUT, as fly-go sends it;
// extend takes PUT (both) and POST.
func (s *server) volumeRoutes(mux *http.ServeMux) {
	const volume = "/v1/apps/{app}/volumes/{id}"
	s.handle(mux, "POST /v1/apps/{app}/volumes", s.createVolume)
	s.handle(mux, "GET /v1/apps/{app}/volumes", s.listVolumes)
	s.handle(mux, "GET "+volume, s.getVolume)
	s.handle(mux, "PUT "+volume, s.updateVolume)
	s.handle(mux, "POST "+volume, s.updateVolume)
	s.handle(mux, "DELETE "+volume, s.destroyVolume)
	s.handle(mux, "PUT "+volume+"/extend", s.extendVolume)
	s.handle(mux, "POST "+volume+"/extend", s.extendVolume)
}

// volumes returns the volume service, or an error when the daemon has none.
func (s *server) volumes() (Volumes, error) {
	if s.cfg.Volumes == nil {
		return nil, model.Errorf(model.KindUnavailable, "this daemon runs without volumes")
	}
	return s.cfg.Volumes, nil
}

// volumeParams returns the validated {app} and {id} path parameters and
// the volume service.
func (s *server) volumeParams(r *http.Request) (v Volumes, app, id string, err error) {
	if app, err = appParam(r); err != nil {
		return nil, "", "", err
	}
	id = r.PathValue("id")
	if err = identifiers.VolumeID("path parameter id", id); err != nil {
		return nil, "", "", err
	}
	v, err = s.volumes()
	return v, app, id, err
}

func (s *server) createVolume(r *http.Request) (int, any, error) {
	app, err := appParam(r)
	if err != nil {
		return 0, nil, err
	}
	v, err := s.volumes()
	if err != nil {
		return 0, nil, err
	}
	var req model.CreateVolumeRequest
	if err := requireBody(r, &req); err != nil {
		return 0, nil, err
	}
	vol, err := v.Create(r.Context(), app, req)
	return http.StatusOK, vol, err
}

func (s *server) listVolumes(r *http.Request) (int, any, error) {
	app, err := appParam(r)
	if err != nil {
		return 0, nil, err
	}
	v, err := s.volumes()
	if err != nil {
		return 0, nil, err
	}
	list, err := v.List(r.Context(), app)
	return http.StatusOK, list, err
}

func (s *server) getVolume(r *http.Request) (int, any, error) {
	return s.onVolume(r, nil, func(ctx context.Context, v Volumes, app, id string) (any, error) { return v.Get(ctx, app, id) })
}

func (s *server) updateVolume(r *http.Request) (int, any, error) {
	var req model.UpdateVolumeRequest
	return s.onVolume(r, &req, func(ctx context.Context, v Volumes, app, id string) (any, error) { return v.Update(ctx, app, id, req) })
}

func (s *server) extendVolume(r *http.Request) (int, any, error) {
	var req model.ExtendVolumeRequest
	return s.onVolume(r, &req, func(ctx context.Context, v Volumes, app, id string) (any, error) { return v.Extend(ctx, app, id, req) })
}

func (s *server) destroyVolume(r *http.Request) (int, any, error) {
	return s.onVolume(r, nil, func(ctx context.Context, v Volumes, app, id string) (any, error) { return v.Destroy(ctx, app, id) })
}

// onVolume serves a request on one volume: it checks the path parameters,
// decodes the JSON body into body (when not nil) and answers what op
// returns.
func (s *server) onVolume(r *http.Request, body any, op func(ctx context.Context, v Volumes, app, id string) (any, error)) (int, any, error) {
	v, app, id, err := s.volumeParams(r)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		if err := requireBody(r, body); err != nil {
			return 0, nil, err
		}
	}
	out, err := op(r.Context(), v, app, id)
	return http.StatusOK, out, err
}
