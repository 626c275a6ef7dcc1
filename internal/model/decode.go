package model

import (
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
)

// ErrEmptyBody is returned by DecodeJSON when the input holds no JSON value.
var ErrEmptyBody = errors.New("request body is empty")

// DecodeJSON decodes exactly one JSON value from r into v, strictly: unknown
// object fields and any data after the value are refused. A JSON problem is a
// KindInvalid *Error that names the field and the rule; an empty input is
// ErrEmptyBody; an error of r itself (such as *http.MaxBytesError) is returned
// as is, so that the caller can tell a body too large from a bad one.
func DecodeJSON(r io.Reader, v any) error {
	src := &readErrs{r: r}
	dec := json.NewDecoder(src)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if src.err != nil {
		return src.err
	}
	if errors.Is(err, io.EOF) {
		return ErrEmptyBody
	}
	if err != nil {
		return jsonError(err)
	}
	_, err = dec.Token()
	if src.err != nil {
		return src.err
	}
	if !errors.Is(err, io.EOF) {
		return Errorf(KindInvalid, "invalid JSON body: unexpected data after the JSON value (at byte %d)", dec.InputOffset())
	}
	return nil
}

// readErrs remembers the first error of its reader other than io.EOF.
type readErrs struct {
	r   io.Reader
	err error
}

func (e *readErrs) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && e.err == nil {
		e.err = err
	}
	return n, err
}

// jsonError turns an encoding/json error into a KindInvalid error naming the
// problem and, where known, the field.
func jsonError(err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return Errorf(KindInvalid, "invalid JSON body: %v (at byte %d)", syntax, syntax.Offset)
	case errors.As(err, &typ) && hasRule(typ.Type):
		if typ.Field == "" {
			return Errorf(KindInvalid, "invalid JSON body: %s", typ.Value)
		}
		return Errorf(KindInvalid, "invalid JSON body: %s: %s", typ.Field, typ.Value)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return Errorf(KindInvalid, "invalid JSON body: expected %s, got %s", jsonKind(typ.Type), typ.Value)
		}
		return Errorf(KindInvalid, "invalid JSON body: %s: expected %s, got %s", typ.Field, jsonKind(typ.Type), typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return Errorf(KindInvalid, "invalid JSON body: unexpected end of input")
	}
	// Unknown fields ("json: unknown field \"x\"") and errors of the custom
	// unmarshalers (durations, autostop) carry a useful message as is.
	return Errorf(KindInvalid, "invalid JSON body: %s", strings.TrimPrefix(err.Error(), "json: "))
}

// hasRule reports whether t is one of the types whose unmarshalers report
// their rule in UnmarshalTypeError.Value (see ruleError).
func hasRule(t reflect.Type) bool {
	return t == reflect.TypeFor[Duration]() || t == reflect.TypeFor[Autostop]()
}

// jsonKind names t the way a JSON author thinks of it.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "a value"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer in range"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer in range"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return t.Kind().String()
}
