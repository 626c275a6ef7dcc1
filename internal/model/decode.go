package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
)

// ErrEmptyBody is returned by DecodeJSON when the input holds no JSON value.
var ErrEmptyBody = errors.New("request body is empty")

// Decoded is what DecodeRequest learnt of a body besides its value. Request
// types that embed it get it filled in.
type Decoded struct {
	// NotActedOn lists the names of Fly's API the body gave a value to that
	// torpor accepted without acting on them (see flyNames).
	NotActedOn []NotActedOn `json:"-"`
	// Given holds the JSON pointers, relative to the body's config, of the
	// torpor extensions the body gave (null included): an update keeps
	// the others (MachineConfig.KeepExtensions). Nil when the request was
	// not decoded from JSON.
	Given map[string]bool `json:"-"`
}

func (d *Decoded) setDecoded(v Decoded) { *d = v }

// DecodeJSON decodes exactly one JSON value from r into v, strictly: object
// names that are neither fields of v's type nor names of Fly's API torpor
// accepts (flyNames) are refused, and so is any data after the value. A
// JSON problem is a KindInvalid *Error that names the field and the rule;
// an empty input is ErrEmptyBody; an error of r itself (such as
// *http.MaxBytesError) is returned as is, so that the caller can tell a
// body too large from a bad one.
func DecodeJSON(r io.Reader, v any) error {
	_, err := DecodeRequest(r, v)
	return err
}

// DecodeRequest is DecodeJSON that also returns what it learnt of the body
// (and stores it in v when v's type embeds Decoded).
func DecodeRequest(r io.Reader, v any) (Decoded, error) {
	src := &readErrs{r: r}
	data, _ := io.ReadAll(src)
	if src.err != nil {
		return Decoded{}, src.err
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return Decoded{}, ErrEmptyBody
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return Decoded{}, jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Decoded{}, Errorf(KindInvalid, "invalid JSON body: unexpected data after the JSON value (at byte %d)", dec.InputOffset())
	}
	t := reflect.TypeOf(v)
	if t == nil || t.Kind() != reflect.Pointer {
		return Decoded{}, Errorf(KindInternal, "DecodeJSON needs a pointer, not %T", v)
	}
	w := &schemaWalk{scope: scopes[t.Elem()], given: map[string]bool{}}
	if t.Elem() == reflect.TypeFor[MachineConfig]() {
		// A config alone (a file the CLI reads): the names of a machine
		// request's config.
		w.scope = scopeMachine
		if err := w.walk(tree, t.Elem(), "", "config", configPointer); err != nil {
			return Decoded{}, err
		}
	} else if err := w.walk(tree, t.Elem(), "", "", ""); err != nil {
		return Decoded{}, err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return Decoded{}, jsonError(err)
	}
	d := Decoded{NotActedOn: w.notActedOn(), Given: w.given}
	if s, ok := v.(interface{ setDecoded(Decoded) }); ok {
		s.setDecoded(d)
	}
	return d, nil
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
	// Errors of the custom unmarshalers carry a useful message as is.
	return Errorf(KindInvalid, "invalid JSON body: %s", strings.TrimPrefix(err.Error(), "json: "))
}

// hasRule reports whether t is one of the types whose unmarshalers report
// their rule in UnmarshalTypeError.Value (see ruleError).
func hasRule(t reflect.Type) bool {
	return t == reflect.TypeFor[Duration]() || t == reflect.TypeFor[Autostop]() || t == reflect.TypeFor[Signal]()
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
