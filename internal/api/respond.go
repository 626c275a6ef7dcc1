package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/torpor-dev/torpor/internal/model"
)

// okBody is the answer of operations that return nothing else.
type okBody struct {
	OK bool `json:"ok"`
}

// errorBody is the shape of every error response, as in the Fly API:
// the message and Fly's status code ("unknown", "insufficient_capacity",
// "name_taken").
type errorBody struct {
	Error  string `json:"error"`
	Status string `json:"status"`
}

// flyStatus is Fly's status code of an error.
func flyStatus(err error) string {
	switch {
	case errors.Is(err, model.ErrNameTaken):
		return "name_taken"
	case model.KindOf(err) == model.KindQuota:
		return "insufficient_capacity"
	}
	return "unknown"
}

// errorOf is the body of an error answer.
func errorOf(err error) errorBody { return errorBody{Error: err.Error(), Status: flyStatus(err)} }

// httpError is an error with an explicit HTTP status, for the few statuses
// that no model.Kind describes (401, 404/405 from routing, 413).
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

// writeJSON sends v as JSON with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	if status == http.StatusNoContent {
		w.WriteHeader(status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v) // the client may be gone; nothing to do about it
}

// writeError sends err as {"error": "..."} with the status its kind maps to.
func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status := StatusOf(err)
	var ae *authError
	if errors.As(err, &ae) {
		w.Header().Set("WWW-Authenticate", ae.challenge)
	}
	if status >= 500 {
		s.log.LogAttrs(r.Context(), slog.LevelError, "request failed",
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("status", status), slog.String("error", err.Error()))
	}
	writeJSON(w, status, errorOf(err))
}

// errNoBody is returned by decodeBody for an empty body.
var errNoBody = model.ErrEmptyBody

// decodeBody reads r's body (limited by handle) into v, rejecting unknown
// fields and trailing data (model.DecodeJSON). It returns errNoBody when the
// body is empty.
func decodeBody(r *http.Request, v any) error {
	err := model.DecodeJSON(r.Body, v)
	if err == nil || errors.Is(err, errNoBody) || model.KindOf(err) != model.KindInternal {
		return err
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return &httpError{status: http.StatusRequestEntityTooLarge,
			msg: fmt.Sprintf("request body is larger than %d bytes", tooBig.Limit)}
	}
	return model.Errorf(model.KindInvalid, "reading the request body: %v", err)
}

// requireBody decodes a body that must be present.
func requireBody(r *http.Request, v any) error {
	err := decodeBody(r, v)
	if errors.Is(err, errNoBody) {
		return model.Errorf(model.KindInvalid, "invalid JSON body: the request needs a JSON object body")
	}
	return err
}

// isDeadline reports whether ctx ended because its deadline passed.
func isDeadline(ctx context.Context) bool {
	return errors.Is(ctx.Err(), context.DeadlineExceeded)
}
