package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/torpor-dev/torpor/internal/identifiers"
	"github.com/torpor-dev/torpor/internal/image"
	"github.com/torpor-dev/torpor/internal/model"
)

// Images is what the API needs of the daemon's OCI images (package image's
// Manager implements it). Errors carry a model.Kind.
type Images interface {
	Pull(ctx context.Context, scope image.Scope, ref string, opts image.PullOptions) (model.Image, error)
	Import(ctx context.Context, scope image.Scope, r io.Reader, opts image.ImportOptions) ([]model.Image, error)
	List(ctx context.Context, scope image.Scope) ([]model.Image, error)
	Get(ctx context.Context, scope image.Scope, ref string) (model.Image, error)
	Remove(ctx context.Context, scope image.Scope, ref string, force bool) (model.PruneImagesResult, error)
	Prune(ctx context.Context, scope image.Scope, all bool) (model.PruneImagesResult, error)
}

// maxImportBytes bounds an import's body; the daemon's --image-max-size
// bounds it further.
const maxImportBytes = 64 << 30

// imageList is the answer of GET /v1/images.
type imageList struct {
	Images []model.Image `json:"images"`
}

// pruneRequest is the body of POST /v1/images/prune.
type pruneRequest struct {
	App string `json:"app,omitempty"`
	All bool   `json:"all,omitempty"`
}

// imageRoutes registers the image endpoints. They have no {app} in their
// path: the app is a query parameter or a body field, checked by
// imageScope against the caller.
func (s *server) imageRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/images/pull", s.pullImage)
	mux.HandleFunc("POST /v1/images/import", s.importImage)
	s.handle(mux, "POST /v1/images/prune", s.pruneImages)
	s.handle(mux, "GET /v1/images", s.listImages, "app")
	s.handle(mux, "GET /v1/images/{ref...}", s.getImage, "app")
	s.handle(mux, "DELETE /v1/images/{ref...}", s.removeImage, "app", "force")
}

// imageScope is the scope of the caller's request about app's images. An
// empty app means the admin's own images, for the admin; for a token of
// one app, that app; a token of several apps must name one.
func imageScope(r *http.Request, app string) (image.Scope, error) {
	c := callerOf(r.Context())
	if app == "" {
		switch {
		case c.admin():
			return image.Scope{Admin: true}, nil
		case len(c.token.Apps) == 1:
			app = c.token.Apps[0]
		default:
			return image.Scope{}, model.Errorf(model.KindInvalid, "app is required: token %s may use several apps (%s); say which one's images",
				c.token.ID, strings.Join(c.token.Apps, ", "))
		}
	}
	if err := identifiers.AppName("app", app); err != nil {
		return image.Scope{}, err
	}
	if !c.allows(app) {
		return image.Scope{}, forbidden("token %s is not allowed to use app %q", c.token.ID, app)
	}
	return image.Scope{App: app, Admin: c.admin()}, nil
}

func (s *server) listImages(r *http.Request) (int, any, error) {
	scope, err := imageScope(r, r.URL.Query().Get("app"))
	if err != nil {
		return 0, nil, err
	}
	list, err := s.cfg.Images.List(r.Context(), scope)
	if list == nil {
		list = []model.Image{}
	}
	return http.StatusOK, imageList{Images: list}, err
}

func (s *server) getImage(r *http.Request) (int, any, error) {
	scope, err := imageScope(r, r.URL.Query().Get("app"))
	if err != nil {
		return 0, nil, err
	}
	img, err := s.cfg.Images.Get(r.Context(), scope, r.PathValue("ref"))
	return http.StatusOK, img, err
}

func (s *server) removeImage(r *http.Request) (int, any, error) {
	scope, err := imageScope(r, r.URL.Query().Get("app"))
	if err != nil {
		return 0, nil, err
	}
	force, err := boolQuery(r, "force")
	if err != nil {
		return 0, nil, err
	}
	res, err := s.cfg.Images.Remove(r.Context(), scope, r.PathValue("ref"), force)
	return http.StatusOK, res, err
}

func (s *server) pruneImages(r *http.Request) (int, any, error) {
	var req pruneRequest
	if err := decodeBody(r, &req); err != nil && err != errNoBody {
		return 0, nil, err
	}
	scope, err := imageScope(r, req.App)
	if err != nil {
		return 0, nil, err
	}
	res, err := s.cfg.Images.Prune(r.Context(), scope, req.All)
	return http.StatusOK, res, err
}

// pullImage serves POST /v1/images/pull. With ?progress=true it streams the
// pull's progress as JSON lines (model.PullProgress), ending with a line of
// phase "end" or "error"; otherwise it answers the image once pulled.
// Everything that can be checked before the pull starts is answered with
// its own status in both cases.
func (s *server) pullImage(w http.ResponseWriter, r *http.Request) {
	if err := s.imageRequest(w, r, "progress"); err != nil {
		s.writeError(w, r, err)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	var req model.PullImageRequest
	if err := requireBody(r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	scope, err := imageScope(r, req.App)
	if err == nil {
		_, err = image.ParseReference(req.Image)
		err = imageFieldError("image", err)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.runImageOp(w, r, func(progress image.Progress) (any, error) {
		return s.cfg.Images.Pull(r.Context(), scope, req.Image, image.PullOptions{Public: req.Public, Progress: progress})
	})
}

// importImage serves POST /v1/images/import: the body is the tarball;
// name, app and public are query parameters; progress as for pull. It
// answers the imported images.
func (s *server) importImage(w http.ResponseWriter, r *http.Request) {
	if err := s.imageRequest(w, r, "progress", "name", "app", "public"); err != nil {
		s.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	scope, err := imageScope(r, q.Get("app"))
	public := false
	if err == nil {
		public, err = boolQuery(r, "public")
	}
	if err == nil && q.Get("name") != "" {
		_, err = image.ParseReference(q.Get("name"))
		err = imageFieldError("name", err)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxImportBytes)
	// Progress lines go out while the tarball is still being read.
	_ = http.NewResponseController(w).EnableFullDuplex()
	s.runImageOp(w, r, func(progress image.Progress) (any, error) {
		imgs, err := s.cfg.Images.Import(r.Context(), scope, r.Body, image.ImportOptions{Name: q.Get("name"), Public: public, Progress: progress})
		return imageList{Images: imgs}, err
	})
}

// imageRequest checks the query of a streaming image endpoint.
func (s *server) imageRequest(w http.ResponseWriter, r *http.Request, query ...string) error {
	if err := authorize(r, false); err != nil {
		return err
	}
	if err := checkQuery(r, query...); err != nil {
		return err
	}
	_, err := boolQuery(r, "progress")
	return err
}

// imageFieldError names field in a reference's parse error.
func imageFieldError(field string, err error) error {
	if err == nil {
		return nil
	}
	return model.Errorf(model.KindInvalid, "%s: %w", field, err)
}

// runImageOp runs op, streaming its progress when the request asks for it.
func (s *server) runImageOp(w http.ResponseWriter, r *http.Request, op func(image.Progress) (any, error)) {
	if stream, _ := boolQuery(r, "progress"); !stream {
		res, err := op(nil)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flush := http.NewResponseController(w).Flush
	var mu sync.Mutex
	enc := json.NewEncoder(w)
	send := func(p model.PullProgress) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(p) // the client may be gone; the operation goes on
		_ = flush()
	}
	_, err := op(send)
	if err != nil {
		status := StatusOf(err)
		if status >= 500 {
			s.log.Warn("image operation failed", "path", r.URL.Path, "status", status, "error", err)
		}
		send(model.PullProgress{Phase: "error", Error: err.Error(), Status: status})
		return
	}
	send(model.PullProgress{Phase: "end", Message: fmt.Sprintf("%s done", strings.TrimPrefix(r.URL.Path, "/v1/images/"))})
}
