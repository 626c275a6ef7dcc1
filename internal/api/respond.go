package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"

	"github.com/torpor-dev/torpor/internal/model"
)

// okBody is the answer of operations that return nothing else.
type okBody struct {
	OK bool `json:"ok"`
}

// errorBody is the shape of every error response, as in the Fly API.
type errorBody struct {
	Error string `json:"error"`
}

// httpError is an error with an explicit HTTP status, for the few statuses
// that no model.Kind describes (401, 404/405 from routing, 413).
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

// writeJSON sends v as JSON with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v) // the client may be gone; nothing to do about it
}

// writeError sends err as {"error": "..."} with the status its kind maps to.
func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status := statusOf(err)
	var ae *authError
	if errors.As(err, &ae) {
		w.Header().Set("WWW-Authenticate", ae.challenge)
	}
	if status >= 500 {
		s.log.LogAttrs(r.Context(), slog.LevelError, "request failed",
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("status", status), slog.String("error", err.Error()))
	}
	writeJSON(w, status, errorBody{Error: err.Error()})
}

// statusOf maps an error to its HTTP status.
func statusOf(err error) int {
	var he *httpError
	if errors.As(err, &he) {
		return he.status
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return http.StatusRequestEntityTooLarge
	}
	return model.KindOf(err).HTTPStatus()
}

// errNoBody is returned by decodeBody for an empty body.
var errNoBody = errors.New("request body is empty")

// decodeBody reads r's body (limited by handle) into v, rejecting unknown
// fields and trailing data. It returns errNoBody when the body is empty.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if errors.Is(err, io.EOF) {
		return errNoBody
	}
	if err != nil {
		return bodyError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return bodyError(err)
		}
		return model.Errorf(model.KindInvalid, "invalid JSON body: unexpected data after the JSON value")
	}
	return nil
}

// requireBody decodes a body that must be present.
func requireBody(r *http.Request, v any) error {
	err := decodeBody(r, v)
	if errors.Is(err, errNoBody) {
		return model.Errorf(model.KindInvalid, "invalid JSON body: the request needs a JSON object body")
	}
	return err
}

// bodyError turns a JSON decoding error into a KindInvalid error naming the
// problem and, where known, the field.
func bodyError(err error) error {
	var tooBig *http.MaxBytesError
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooBig):
		return &httpError{status: http.StatusRequestEntityTooLarge,
			msg: fmt.Sprintf("request body is larger than %d bytes", tooBig.Limit)}
	case errors.As(err, &syntax):
		return model.Errorf(model.KindInvalid, "invalid JSON body: %v (at byte %d)", syntax, syntax.Offset)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return model.Errorf(model.KindInvalid, "invalid JSON body: cannot unmarshal %s into %s", typ.Value, jsonKind(typ.Type))
		}
		return model.Errorf(model.KindInvalid, "invalid JSON body: %s: cannot unmarshal %s into %s", typ.Field, typ.Value, jsonKind(typ.Type))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return model.Errorf(model.KindInvalid, "invalid JSON body: unexpected end of input")
	}
	// Unknown fields ("json: unknown field \"x\"") and errors from custom
	// unmarshalers (durations, autostop) carry a useful message as is.
	return model.Errorf(model.KindInvalid, "invalid JSON body: %s", trimJSONPrefix(err.Error()))
}

// jsonKind names t the way a JSON author thinks of it.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "value"
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "object"
	case reflect.Slice, reflect.Array:
		return "array"
	}
	return t.Kind().String()
}

// trimJSONPrefix drops encoding/json's "json: " prefix.
func trimJSONPrefix(msg string) string {
	const prefix = "json: "
	if len(msg) > len(prefix) && msg[:len(prefix)] == prefix {
		return msg[len(prefix):]
	}
	return msg
}

// isDeadline reports whether ctx ended because its deadline passed.
func isDeadline(ctx context.Context) bool {
	return errors.Is(ctx.Err(), context.DeadlineExceeded)
}
