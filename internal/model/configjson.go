package model

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"sync"
)

// MarshalJSON writes the config with its torpor extensions always present
// (null or empty when unset) and its Fly-only values (FlyOnly) where they
// were given.
func (c MachineConfig) MarshalJSON() ([]byte, error) {
	type plain MachineConfig
	b, err := json.Marshal(plain(c))
	if err != nil {
		return nil, err
	}
	tree, err := genericJSON(b)
	if err != nil {
		return nil, err
	}
	fillExtensions(tree, reflect.ValueOf(c))
	for ptr, raw := range c.FlyOnly {
		v, err := genericJSON(raw)
		if err != nil {
			return nil, err
		}
		insertAt(tree, splitPointer(ptr), v)
	}
	return json.Marshal(tree)
}

// UnmarshalJSON reads a config, keeping the values of the Fly-only names it
// has in FlyOnly. Unlike DecodeJSON it ignores names it does not know (it
// reads what torpor or a newer torpor wrote); requests are checked by
// DecodeJSON before they get here.
func (c *MachineConfig) UnmarshalJSON(b []byte) error {
	type plain MachineConfig
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*c = MachineConfig(p)
	c.FlyOnly = nil
	tree, err := genericJSON(b)
	if err != nil {
		return err
	}
	w := &schemaWalk{scope: scopeMachine, lenient: true, given: map[string]bool{}}
	if err := w.walk(tree, reflect.TypeFor[MachineConfig](), "config", "config", configPointer); err != nil {
		return err
	}
	for _, f := range w.found {
		raw, err := json.Marshal(f.value)
		if err != nil {
			return err
		}
		if c.FlyOnly == nil {
			c.FlyOnly = map[string]json.RawMessage{}
		}
		c.FlyOnly[strings.TrimPrefix(f.pointer, configPointer)] = raw
	}
	return nil
}

// KeepExtensions copies into c the torpor extensions of prev that the
// request c was decoded from did not give (given: JSON pointers relative to
// the config, as Decoded.Given), so that an update by a client that only
// knows Fly's fields loses none of torpor's. Elements of lists are matched
// by index, values of maps by key. A nil given (a config not decoded from
// JSON) keeps nothing.
func (c *MachineConfig) KeepExtensions(prev MachineConfig, given map[string]bool) {
	if given == nil {
		return
	}
	keepExtensions(reflect.ValueOf(c).Elem(), reflect.ValueOf(prev), "", given)
}

func keepExtensions(dst, src reflect.Value, pointer string, given map[string]bool) {
	for dst.Kind() == reflect.Pointer {
		if dst.IsNil() || src.IsNil() {
			return
		}
		dst, src = dst.Elem(), src.Elem()
	}
	t := dst.Type()
	if !hasExtensions(t) {
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		for _, f := range fieldsOf(t).order {
			d, err := dst.FieldByIndexErr(f.index)
			if err != nil {
				continue
			}
			s, err := src.FieldByIndexErr(f.index)
			if err != nil {
				continue
			}
			p := pointer + "/" + escapePointer(f.name)
			if f.extension {
				if !given[p] {
					d.Set(s)
				}
				continue
			}
			keepExtensions(d, s, p, given)
		}
	case reflect.Slice, reflect.Array:
		for i := range min(dst.Len(), src.Len()) {
			keepExtensions(dst.Index(i), src.Index(i), pointer+"/"+strconv.Itoa(i), given)
		}
	case reflect.Map:
		if t.Key().Kind() != reflect.String {
			return
		}
		for _, k := range dst.MapKeys() {
			s := src.MapIndex(k)
			if !s.IsValid() {
				continue
			}
			tmp := reflect.New(t.Elem()).Elem()
			tmp.Set(dst.MapIndex(k))
			keepExtensions(tmp, s, pointer+"/"+escapePointer(k.String()), given)
			dst.SetMapIndex(k, tmp)
		}
	}
}

// hasExtensions reports whether values of t hold extension fields.
func hasExtensions(t reflect.Type) bool {
	if v, ok := extensionCache.Load(t); ok {
		return v.(bool)
	}
	found := false
	seen := map[reflect.Type]bool{}
	var visit func(t reflect.Type)
	visit = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if found || seen[t] || t.Kind() != reflect.Struct || leafType(t) {
			return
		}
		seen[t] = true
		for _, f := range fieldsOf(t).order {
			if f.extension {
				found = true
				return
			}
			visit(f.typ)
		}
	}
	visit(t)
	extensionCache.Store(t, found)
	return found
}

var extensionCache sync.Map // reflect.Type → bool

// fillExtensions adds the extension fields of v missing from node (v's
// JSON, decoded generically) with their zero values.
func fillExtensions(node any, v reflect.Value) {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return
		}
		v = v.Elem()
	}
	if !hasExtensions(v.Type()) {
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		obj, ok := node.(map[string]any)
		if !ok {
			return
		}
		for _, f := range fieldsOf(v.Type()).order {
			fv, err := v.FieldByIndexErr(f.index)
			if err != nil {
				continue
			}
			child, present := obj[f.name]
			if !present {
				if f.extension {
					obj[f.name] = zeroJSON(f.typ)
				}
				continue
			}
			fillExtensions(child, fv)
		}
	case reflect.Slice, reflect.Array:
		arr, ok := node.([]any)
		if !ok {
			return
		}
		for i := range min(len(arr), v.Len()) {
			fillExtensions(arr[i], v.Index(i))
		}
	case reflect.Map:
		obj, ok := node.(map[string]any)
		if !ok || v.Type().Key().Kind() != reflect.String {
			return
		}
		for _, k := range v.MapKeys() {
			fillExtensions(obj[k.String()], v.MapIndex(k))
		}
	}
}

// zeroJSON is the zero value of t as generic JSON.
func zeroJSON(t reflect.Type) any {
	b, err := json.Marshal(reflect.Zero(t).Interface())
	if err != nil {
		return nil
	}
	v, _ := genericJSON(b)
	return v
}

// insertAt sets the value at the path segs of tree (objects and arrays as
// genericJSON decodes them), where the parent exists.
func insertAt(tree any, segs []string, v any) {
	if len(segs) == 0 {
		return
	}
	node := tree
	for _, s := range segs[:len(segs)-1] {
		switch n := node.(type) {
		case map[string]any:
			node = n[s]
		case []any:
			i, err := strconv.Atoi(s)
			if err != nil || i < 0 || i >= len(n) {
				return
			}
			node = n[i]
		default:
			return
		}
	}
	if obj, ok := node.(map[string]any); ok {
		obj[segs[len(segs)-1]] = v
	}
}

// genericJSON decodes b into maps, slices and json.Numbers.
func genericJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err
}

// Signal is a signal given by name ("SIGTERM", "term") or, as Fly's
// clients also send it, by number (9).
type Signal string

// UnmarshalJSON reads a signal name or number.
func (s *Signal) UnmarshalJSON(b []byte) error {
	var name string
	if err := json.Unmarshal(b, &name); err == nil {
		*s = Signal(name)
		return nil
	}
	var n int
	if err := json.Unmarshal(b, &n); err != nil || n < 1 || n > 64 {
		return ruleError[Signal]("signal must be a name such as \"SIGTERM\" or a number from 1 to 64")
	}
	*s = Signal(strconv.Itoa(n))
	return nil
}
