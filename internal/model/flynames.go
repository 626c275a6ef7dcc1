package model

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
)

// Fly's clients (fly-go's flaps package, flyctl) send names torpor has no
// use for: fields of Fly's Machines API for features torpor does not have
// (DNS options, statics, files from secrets, ...). torpor accepts them, so
// that those clients work unchanged, and says so: each one given a value is
// reported back as "accepted, not acted on" in the answer and in the
// machine's event. Names in neither Fly's API nor torpor's are still
// refused with a 400 that names them, so a typo never goes unnoticed.
//
// flyNames is that set, the one place it is declared. Each entry is a path
// from the root of a request body of one scope; "[]" stands for any element
// of an array and "*" for any value of an object used as a map. A field
// torpor models (a Go struct field) always wins over an entry, so an entry
// made stale by a feature landing is harmless (and TestFlyNamesNotStale
// asks for its removal).
var flyNames = []flyName{
	// CreateMachineRequest / UpdateMachineRequest (spec, fly-go's LaunchMachineInput).
	{scopeMachine, "lsvd", kindBool, "Fly's log-structured virtual disks do not exist here: the root filesystem is the image's shared read-only tree, with a writable layer in memory", false},
	{scopeMachine, "skip_secrets", kindBool, "torpor has no app secrets, so there are none to skip or inject", true},
	{scopeMachine, "min_secrets_version", kindNumber, "torpor has no app secrets", false},

	// api.MachineConfig.
	{scopeMachine, "config.dns", kindObject, "machines get the resolver torpor writes to /etc/resolv.conf; DNS options and forward rules are not configurable", false},
	{scopeMachine, "config.files", kindArray, "files written into the machine are not supported yet; put them in the image", false},
	{scopeMachine, "config.processes", kindArray, "process groups are not supported: a machine runs config.init", false},
	{scopeMachine, "config.statics", kindArray, "the proxy does not serve static files", false},
	{scopeMachine, "config.standbys", kindArray, "standby machines are not implemented: a stopped or suspended machine is started on demand instead", false},
	{scopeMachine, "config.metrics", kindObject, "metrics are not scraped from machines", false},
	{scopeMachine, "config.disable_machine_autostart", kindBool, "deprecated by Fly; use services[].autostart: false", false},
	{scopeMachine, "config.containers", kindArray, "multi-container machines are not supported", false},
	{scopeMachine, "config.volumes", kindArray, "container volumes are not supported", false},
	{scopeMachine, "config.rootfs", kindObject, "the root filesystem is the image's shared read-only tree, with a writable layer in memory; use a volume for data", false},
	{scopeMachine, "config.cache_drive", kindObject, "cache drives are not supported", false},
	{scopeMachine, "config.spot", kindObject, "there is no spot pricing", false},
	{scopeMachine, "config.checks.*.kind", kindString, "top-level checks are informational: a failing one takes no machine out of routing", false},
	{scopeMachine, "config.services[].checks[].kind", kindString, "a service's checks always decide whether the proxy routes to the machine", false},
	// api.MachineInit.
	{scopeMachine, "config.init.tty", kindBool, "the console is a pipe, not a TTY", false},
	{scopeMachine, "config.init.kernel_args", kindArray, "gVisor has no guest kernel to pass arguments to", false},
	// api.MachineGuest.
	{scopeMachine, "config.guest.host_dedication_id", kindString, "every machine runs on this host", false},
	{scopeMachine, "config.guest.kernel_args", kindArray, "gVisor has no guest kernel to pass arguments to", false},
	{scopeMachine, "config.guest.max_memory_mb", kindNumber, "memory does not grow beyond guest.memory_mb", false},
	{scopeMachine, "config.guest.persist_rootfs", kindAny, "the root filesystem is the image's shared read-only tree, with a writable layer in memory; use a volume for data", false},
	// api.MachineService and api.MachinePort.
	{scopeMachine, "config.services[].force_instance_key", kindString, "the proxy balances between machines on its own", false},
	{scopeMachine, "config.services[].force_instance_description", kindString, "the proxy balances between machines on its own", false},
	{scopeMachine, "config.services[].ports[].start_port", kindNumber, "port ranges are not published; give ports[].port", false},
	{scopeMachine, "config.services[].ports[].end_port", kindNumber, "port ranges are not published; give ports[].port", false},
	{scopeMachine, "config.services[].ports[].force_https", kindBool, "the proxy does not terminate TLS", false},
	{scopeMachine, "config.services[].ports[].tls_options", kindObject, "the proxy does not terminate TLS", false},
	{scopeMachine, "config.services[].ports[].http_options", kindObject, "the proxy passes HTTP through unchanged", false},
	{scopeMachine, "config.services[].ports[].proxy_proto_options", kindObject, "the proxy does not speak the PROXY protocol", false},

	// POST /v1/apps (spec's CreateAppRequest).
	{scopeApp, "network", kindString, "every app has a network of its own; apps cannot share a named network", false},

	// POST .../exec (fly-go's MachineExecRequest).
	{scopeExec, "container", kindString, "a machine runs one container; commands run in it", false},
	{scopeExec, "machine", kindBool, "a machine runs one container, so its namespace is the container's", true},
}

// Scopes of request bodies, each with its own names.
const (
	scopeMachine = "machine" // create and update of a machine (and a machine config read alone)
	scopeApp     = "app"     // create an app
	scopeExec    = "exec"    // exec in a machine
)

// scopes maps the Go types of request bodies to their scope in flyNames.
// A type not listed has no Fly-only names: every name must be a field.
var scopes = map[reflect.Type]string{
	reflect.TypeFor[CreateMachineRequest](): scopeMachine,
	reflect.TypeFor[UpdateMachineRequest](): scopeMachine,
	reflect.TypeFor[CreateAppRequest]():     scopeApp,
	reflect.TypeFor[ExecRequest]():          scopeExec,
}

// flyName is one name of Fly's API that torpor accepts without acting on it.
type flyName struct {
	scope  string
	path   string
	kind   jsonType
	reason string
	// quiet: torpor already behaves as any value asks, so no warning is given.
	quiet bool
}

// jsonType is the JSON type a Fly-only name must have.
type jsonType int

const (
	kindAny jsonType = iota
	kindObject
	kindArray
	kindString
	kindBool
	kindNumber
)

func (k jsonType) String() string {
	return [...]string{"a value", "an object", "an array", "a string", "a boolean", "a number"}[k]
}

// matches reports whether the generic JSON value v has type k.
func (k jsonType) matches(v any) bool {
	switch k {
	case kindObject:
		_, ok := v.(map[string]any)
		return ok
	case kindArray:
		_, ok := v.([]any)
		return ok
	case kindString:
		_, ok := v.(string)
		return ok
	case kindBool:
		_, ok := v.(bool)
		return ok
	case kindNumber:
		_, ok := v.(json.Number)
		return ok
	}
	return true
}

// flyIndex is flyNames by scope and path.
var flyIndex = func() map[string]map[string]flyName {
	idx := map[string]map[string]flyName{}
	for _, n := range flyNames {
		if idx[n.scope] == nil {
			idx[n.scope] = map[string]flyName{}
		}
		idx[n.scope][n.path] = n
	}
	return idx
}()

// NotActedOn is a name of Fly's API that a request gave a value to and that
// torpor accepted without acting on it.
type NotActedOn struct {
	// Path names it in the request, e.g. "config.dns" or
	// "config.services[0].ports[1].tls_options".
	Path   string
	Reason string
}

// Warning is how the API reports n.
func (n NotActedOn) Warning() string {
	return n.Path + ": accepted, not acted on: " + n.Reason
}

// Warnings returns the warnings of ns, sorted by path.
func Warnings(ns []NotActedOn) []string {
	if len(ns) == 0 {
		return nil
	}
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.Warning()
	}
	sort.Strings(out)
	return out
}

// Extension marks a torpor field that Fly's API does not have, in the
// struct tag `torpor:"extension"`. A client that only knows Fly's types
// drops such fields when it reads a machine, so an update that does not
// give one keeps its value (see MachineConfig.KeepExtensions); send it
// explicitly (null to clear it) to change it.
const extensionTag = "extension"

// isExtension reports whether a struct field is a torpor extension.
func isExtension(f reflect.StructField) bool { return f.Tag.Get("torpor") == extensionTag }

// schemaWalk checks a request body, decoded generically (objects as
// map[string]any, numbers as json.Number), against the Go type it decodes
// into. Every object key must be a field of the struct (matched as
// encoding/json matches them) or a Fly-only name of the scope; anything
// else is refused, naming it. It collects the Fly-only names given a
// value, where they are (pointers relative to the config, for
// MachineConfig.notActedOn) and which torpor extensions were given.
type schemaWalk struct {
	scope   string
	found   []foundName
	given   map[string]bool // JSON pointers (relative to config) of extensions present
	lenient bool            // ignore unknown names (reading what torpor itself wrote)
}

// foundName is a Fly-only name given a value.
type foundName struct {
	name    flyName
	path    string // dotted, from the root
	pointer string // JSON pointer from the root
	value   any
}

// walk checks v, of Go type t, found at the dotted path (pattern is the
// path with indexes as "[]" and map keys as "*", pointer the JSON pointer).
func (w *schemaWalk) walk(v any, t reflect.Type, path, pattern, pointer string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if leafType(t) {
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			return nil // the decoder names the wrong type
		}
		return w.object(obj, t, path, pattern, pointer)
	case reflect.Slice, reflect.Array:
		arr, ok := v.([]any)
		if !ok {
			return nil
		}
		for i, e := range arr {
			if err := w.walk(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i), pattern+"[]", fmt.Sprintf("%s/%d", pointer, i)); err != nil {
				return err
			}
		}
	case reflect.Map:
		obj, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		for _, k := range sortedKeys(obj) {
			if err := w.walk(obj[k], t.Elem(), join(path, k), join(pattern, "*"), pointer+"/"+escapePointer(k)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *schemaWalk) object(obj map[string]any, t reflect.Type, path, pattern, pointer string) error {
	fields := fieldsOf(t)
	for _, k := range sortedKeys(obj) {
		v := obj[k]
		if f, ok := fields.lookup(k); ok {
			fp := pointer + "/" + escapePointer(f.name)
			if f.extension {
				w.given[strings.TrimPrefix(fp, configPointer)] = true
			}
			if err := w.walk(v, f.typ, join(path, f.name), join(pattern, f.name), fp); err != nil {
				return err
			}
			continue
		}
		n, ok := flyIndex[w.scope][join(pattern, k)]
		switch {
		case !ok && w.lenient:
			continue
		case !ok:
			return Errorf(KindInvalid, "invalid JSON body: unknown field %q: neither torpor nor Fly's Machines API has it", join(path, k))
		case !n.kind.matches(v) && v != nil:
			return Errorf(KindInvalid, "invalid JSON body: %s: expected %s", join(path, k), n.kind)
		}
		if !isZero(v) {
			w.found = append(w.found, foundName{name: n, path: join(path, k), pointer: pointer + "/" + escapePointer(k), value: v})
		}
	}
	return nil
}

// configPointer is the JSON pointer of a machine request's config.
const configPointer = "/config"

// notActedOn returns the warnings-worthy names found.
func (w *schemaWalk) notActedOn() []NotActedOn {
	var out []NotActedOn
	for _, f := range w.found {
		if !f.name.quiet {
			out = append(out, NotActedOn{Path: f.path, Reason: f.name.reason})
		}
	}
	return out
}

// leafType reports whether values of t are not walked into: types with
// their own JSON decoding (durations, autostop, times) and interfaces.
// MachineConfig decodes itself too, but as an ordinary object.
func leafType(t reflect.Type) bool {
	if t == reflect.TypeFor[MachineConfig]() {
		return false
	}
	if t.Kind() == reflect.Interface {
		return true
	}
	return reflect.PointerTo(t).Implements(reflect.TypeFor[json.Unmarshaler]())
}

// isZero reports whether a generic JSON value is null, false, 0, "", {} or [].
func isZero(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case bool:
		return !x
	case string:
		return x == ""
	case json.Number:
		f, err := x.Float64()
		return err == nil && f == 0
	case map[string]any:
		return len(x) == 0
	case []any:
		return len(x) == 0
	}
	return false
}

// structFields are a struct type's JSON fields by name.
type structFields struct {
	byName map[string]fieldInfo
	order  []fieldInfo
}

type fieldInfo struct {
	name      string
	index     []int
	typ       reflect.Type
	extension bool
}

// lookup finds the field named k as encoding/json does: exactly, else
// ignoring case.
func (s structFields) lookup(k string) (fieldInfo, bool) {
	if f, ok := s.byName[k]; ok {
		return f, true
	}
	for _, f := range s.order {
		if strings.EqualFold(f.name, k) {
			return f, true
		}
	}
	return fieldInfo{}, false
}

// fieldsOf lists t's JSON fields, embedded structs' promoted.
func fieldsOf(t reflect.Type) structFields {
	s := structFields{byName: map[string]fieldInfo{}}
	var add func(t reflect.Type, index []int)
	add = func(t reflect.Type, index []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			idx := append(append([]int{}, index...), i)
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			ft := f.Type
			if f.Anonymous && name == "" {
				if ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if ft.Kind() == reflect.Struct {
					add(ft, idx)
					continue
				}
			}
			if !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			if _, dup := s.byName[name]; dup {
				continue
			}
			fi := fieldInfo{name: name, index: idx, typ: f.Type, extension: isExtension(f)}
			s.byName[name] = fi
			s.order = append(s.order, fi)
		}
	}
	add(t, nil)
	return s
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// escapePointer escapes a JSON pointer segment (RFC 6901).
func escapePointer(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}

// splitPointer splits a JSON pointer into its unescaped segments.
func splitPointer(p string) []string {
	if p == "" {
		return nil
	}
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	r := strings.NewReplacer("~1", "/", "~0", "~")
	for i, s := range parts {
		parts[i] = r.Replace(s)
	}
	return parts
}

// FlyName is a name of Fly's API torpor accepts without acting on it, as
// FlyNames lists them.
type FlyName struct {
	// Scope is the kind of request body ("machine": create and update of
	// a machine; "app": create an app; "exec").
	Scope string
	// Path is the name's path in the body ("config.dns",
	// "config.services[].ports[].tls_options").
	Path   string
	Reason string
	// Quiet: torpor already behaves as any value asks; no warning.
	Quiet bool
}

// FlyNames lists the names of Fly's API torpor accepts without acting on
// them, for documentation and tests.
func FlyNames() []FlyName {
	out := make([]FlyName, len(flyNames))
	for i, n := range flyNames {
		out[i] = FlyName{Scope: n.scope, Path: n.path, Reason: n.reason, Quiet: n.quiet}
	}
	return out
}

// FlyScope is the scope of Fly-only names of request bodies of v's type
// ("" when they take none).
func FlyScope(v any) string {
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return scopes[t]
}
