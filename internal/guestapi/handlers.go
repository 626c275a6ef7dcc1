package guestapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/torpor-dev/torpor/internal/api"
	"github.com/torpor-dev/torpor/internal/model"
)

// Info is the body of GET /v1/machine: what a machine may learn about itself.
type Info struct {
	ID             string            `json:"id"`
	Name           string            `json:"name"`
	App            string            `json:"app"`
	State          model.State       `json:"state"`
	Region         string            `json:"region,omitempty"`
	BootGeneration uint64            `json:"boot_generation"`
	PrivateIP      string            `json:"private_ip,omitempty"`
	Metadata       map[string]string `json:"metadata,omitempty"`
}

// maxBody bounds request bodies (only stop has one).
const maxBody = 64 << 10

// route is an action of the API. Handlers only ever act on their endpoint's
// own machine: nothing in a request names the machine acted on.
type route struct {
	method string
	handle func(e *endpoint, w http.ResponseWriter, r *http.Request)
}

// routes are the native paths.
var routes = map[string]route{
	"/v1/machine": {http.MethodGet, (*endpoint).info},
	"/v1/suspend": {http.MethodPost, (*endpoint).suspend},
	"/v1/stop":    {http.MethodPost, (*endpoint).stop},
}

// flyRoutes are the Fly-style paths below /v1/apps/{app}/machines/{id},
// accepted only when app and id are the endpoint's own.
var flyRoutes = map[string]route{
	"":         {http.MethodGet, (*endpoint).machine},
	"/suspend": {http.MethodPost, (*endpoint).suspend},
	"/stop":    {http.MethodPost, (*endpoint).stop},
}

// ServeHTTP routes a request from the machine.
func (e *endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt, status, msg := e.lookup(r.URL.Path)
	if status != 0 {
		writeError(w, status, msg)
		return
	}
	if r.Method != rt.method {
		w.Header().Set("Allow", rt.method)
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: method not allowed (use %s)", r.Method, r.URL.Path, rt.method))
		return
	}
	rt.handle(e, w, r)
}

// lookup finds the route of path; on failure it returns the status and
// message to answer.
func (e *endpoint) lookup(path string) (route, int, string) {
	if rt, ok := routes[path]; ok {
		return rt, 0, ""
	}
	rest, ok := strings.CutPrefix(path, "/v1/apps/")
	if !ok {
		return route{}, http.StatusNotFound, "no such path: " + path
	}
	// rest is "{app}/machines/{id}" plus an optional action.
	parts := strings.SplitN(rest, "/", 4)
	if len(parts) < 3 || parts[1] != "machines" {
		return route{}, http.StatusNotFound, "no such path: " + path
	}
	if parts[0] != e.app || parts[2] != e.id {
		return route{}, http.StatusForbidden, fmt.Sprintf("this socket only serves machine %s of app %s", e.id, e.app)
	}
	action := ""
	if len(parts) == 4 {
		action = "/" + parts[3]
	}
	if rt, ok := flyRoutes[action]; ok {
		return rt, 0, ""
	}
	return route{}, http.StatusNotFound, "no such path: " + path
}

// info answers GET /v1/machine.
func (e *endpoint) info(w http.ResponseWriter, r *http.Request) {
	m, err := e.s.machines.Get(r.Context(), e.app, e.id)
	if err != nil {
		e.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, Info{
		ID:             m.ID,
		Name:           m.Name,
		App:            m.App,
		State:          m.State,
		Region:         m.Region,
		BootGeneration: m.BootGeneration,
		PrivateIP:      m.PrivateIP,
		Metadata:       m.Config.Metadata,
	})
}

// machine answers Fly's GET /v1/apps/{app}/machines/{id} with the machine
// as the Machines API shows it.
func (e *endpoint) machine(w http.ResponseWriter, r *http.Request) {
	m, err := e.s.machines.Get(r.Context(), e.app, e.id)
	if err != nil {
		e.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, m)
}

// suspend answers POST /v1/suspend: 202, then the machine is suspended.
func (e *endpoint) suspend(w http.ResponseWriter, r *http.Request) {
	e.accept(w, r, "suspend", func(ctx context.Context) error {
		return e.s.machines.Suspend(ctx, e.app, e.id)
	})
}

// stop answers POST /v1/stop (optional body: a model.StopRequest): 202,
// then the machine is stopped.
func (e *endpoint) stop(w http.ResponseWriter, r *http.Request) {
	var req model.StopRequest
	if err := readOptionalJSON(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid stop request: "+err.Error())
		return
	}
	e.accept(w, r, "stop", func(ctx context.Context) error {
		return e.s.machines.Stop(ctx, e.app, e.id, req)
	})
}

// readOptionalJSON decodes r's body into v; an empty body leaves v alone.
func readOptionalJSON(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		return err
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return nil
	}
	return json.Unmarshal(body, v)
}

// writeErr answers err from Machines with the status of its kind. Internal
// errors are logged, not shown.
func (e *endpoint) writeErr(w http.ResponseWriter, err error) {
	status := statusOf(err)
	msg := err.Error()
	if status == http.StatusInternalServerError {
		e.s.log.Error("in-machine API request failed", "machine", e.id, "error", err)
		msg = "internal error"
	}
	writeError(w, status, msg)
}

// statusOf maps an error to an HTTP status as the REST API does.
func statusOf(err error) int { return api.StatusOf(err) }

// writeError answers {"error": msg}.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// writeJSON answers v as JSON with an explicit Content-Length, so that the
// response is complete once flushed (see accept).
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	body = append(body, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
