package api_test

import (
	"context"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/torpor-dev/torpor/internal/model"
)

// Fly's Machines API as its clients see it: the 2024-01 OpenAPI spec
// (testdata/fly-openapi) and what fly-go and flyctl send or read beyond it.

const flySpecFile = "testdata/fly-openapi/machines-openapi-2024-01.yaml"

// flyGoAdditions are the names fly-go's types (superfly/fly-go
// machine_types.go and flaps/*.go, read at commit 22d6e51) have that the
// 2024-01 spec lacks, by spec schema: Fly's clients send and read them too.
var flyGoAdditions = map[string][]string{
	"CreateMachineRequest": {"skip_secrets", "min_secrets_version"},
	"UpdateMachineRequest": {"skip_secrets", "min_secrets_version"},
	"StopRequest":          {"id"},
	"CreateAppRequest":     {"name"},
	"MachineExecRequest":   {"container", "machine", "stdin"},
	"api.MachineConfig":    {"containers", "volumes", "rootfs", "cache_drive", "spot"},
	"api.MachineGuest":     {"gpus", "max_memory_mb", "persist_rootfs"},
	"api.MachineMetrics":   {"https"},
	"api.MachineCheck":     {"kind"},
	"Machine":              {"version", "host_status", "cordoned", "containers", "incomplete_config"},
	"App":                  {"machine_count", "volume_count", "network", "app_role", "internal_numeric_id", "cname_target"},
}

// flyGoSpec is the spec with the changes of what fly-go sends beyond it
// that its validation would otherwise refuse: Kill sends the signal as a
// number, autostop may be "suspend", force_instance_key null, a lease
// request has no body, waits name the states "suspended" and "settled",
// errors may say "name_taken", a volume's attachments may be null.
var flyGoSpec = sync.OnceValues(func() (*openapi3.T, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile(flySpecFile)
	if err != nil {
		return nil, err
	}
	if err := doc.Validate(context.Background(), openapi3.DisableExamplesValidation()); err != nil { // its examples are placeholders ("{}" for objects)
		return nil, err
	}
	schemas := doc.Components.Schemas
	anything := func() *openapi3.SchemaRef { return &openapi3.SchemaRef{Value: &openapi3.Schema{}} }
	schemas["SignalRequest"].Value.Properties["signal"] = anything()
	// fly-go's autostop is a boolean or "off", "stop", "suspend"; its
	// force_instance_key a nullable string.
	service := schemas["api.MachineService"].Value
	service.Properties["autostop"] = anything()
	service.Properties["force_instance_key"].Value.Nullable = true
	// fly-go's Volume has *string attachments and IsAttached tests them
	// against nil: an unattached volume must say null (or nothing), never "".
	for _, f := range []string{"attached_machine_id", "attached_alloc_id"} {
		schemas["Volume"].Value.Properties[f].Value.Nullable = true
	}
	status := schemas["main.statusCode"].Value
	status.Enum = append(status.Enum, "name_taken")
	// fly-go's AcquireLease and RefreshLease give the ttl in the query and no body.
	doc.Paths.Find("/apps/{app_name}/machines/{machine_id}/lease").Post.RequestBody.Value.Required = false
	wait := doc.Paths.Find("/apps/{app_name}/machines/{machine_id}/wait").Get
	for _, p := range wait.Parameters {
		if p.Value.Name == "state" {
			s := p.Value.Schema.Value
			s.Enum = append(s.Enum, "suspended", "settled", "failed", "started,stopped")
		}
	}
	return doc, nil
})

func loadFlySpec(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := flyGoSpec()
	if err != nil {
		t.Fatalf("loading Fly's spec: %v", err)
	}
	return doc
}

// refName is the schema name a $ref points to ("" for an inline schema).
func refName(r *openapi3.SchemaRef) string {
	if r == nil || r.Ref == "" {
		return ""
	}
	return r.Ref[strings.LastIndex(r.Ref, "/")+1:]
}

// objectSchema returns the object schema r stands for (through allOf) and
// its name, if it is one.
func objectSchema(r *openapi3.SchemaRef) (*openapi3.Schema, string) {
	if r == nil || r.Value == nil {
		return nil, ""
	}
	if len(r.Value.AllOf) == 1 {
		return objectSchema(r.Value.AllOf[0])
	}
	return r.Value, refName(r)
}

// flyNamesOf lists the property names Fly's clients know in schema s
// (named name): the spec's and fly-go's additions.
func flyNamesOf(s *openapi3.Schema, name string) []string {
	var names []string
	for k := range s.Properties {
		names = append(names, k)
	}
	names = append(names, flyGoAdditions[name]...)
	sort.Strings(names)
	return slices.Compact(names)
}

// jsonFields maps the JSON names of t's fields (embedded structs'
// promoted) to their types.
func jsonFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			for k, v := range jsonFields(ft) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f
	}
	return out
}

// deref strips pointers, slices and maps off t.
func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	return t
}

// TestFlySchemaIsAcceptedOrImplemented walks every request body of Fly's
// API (the spec's schemas with fly-go's additions) alongside the Go type
// torpor decodes it into: every name must be a field torpor implements or
// an entry of the not-acted-on table (model.FlyNames), and every entry of
// that table must be a name of Fly's API that torpor does not implement (a
// feature that lands makes its entry stale: remove it).
func TestFlySchemaIsAcceptedOrImplemented(t *testing.T) {
	doc := loadFlySpec(t)
	table := map[string]model.FlyName{}
	for _, n := range model.FlyNames() {
		table[n.Scope+" "+n.Path] = n
	}
	used := map[string]bool{}
	var walk func(scope, pattern string, s *openapi3.Schema, name string, t reflect.Type)
	walk = func(scope, pattern string, s *openapi3.Schema, name string, gt reflect.Type) {
		fields := jsonFields(deref(gt))
		for _, prop := range flyNamesOf(s, name) {
			p := strings.TrimPrefix(pattern+"."+prop, ".")
			f, implemented := fields[prop]
			key := scope + " " + p
			if _, ok := table[key]; ok {
				used[key] = true
				if implemented {
					t.Errorf("%s is implemented now (field %s): remove it from the not-acted-on table", key, f.Name)
				}
				continue
			}
			if !implemented {
				t.Errorf("%s (schema %s) of Fly's API is neither implemented nor in the not-acted-on table (model/flynames.go): a Fly client sending it gets a 400", key, name)
				continue
			}
			ps := s.Properties[prop]
			sub, subName := objectSchema(ps)
			if sub == nil {
				continue
			}
			elem := p
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			switch {
			case sub.Items != nil:
				sub, subName = objectSchema(sub.Items)
				elem += "[]"
			case sub.AdditionalProperties.Schema != nil:
				sub, subName = objectSchema(sub.AdditionalProperties.Schema)
				elem += ".*"
			}
			if sub != nil && len(sub.Properties) > 0 && deref(ft).Kind() == reflect.Struct {
				walk(scope, elem, sub, subName, ft)
			}
		}
	}
	roots := []struct {
		schema string
		body   any
	}{
		{"CreateMachineRequest", model.CreateMachineRequest{}},
		{"UpdateMachineRequest", model.UpdateMachineRequest{}},
		{"StopRequest", model.StopRequest{}},
		{"CreateAppRequest", model.CreateAppRequest{}},
		{"CreateLeaseRequest", model.LeaseRequest{}},
		{"SignalRequest", model.SignalRequest{}},
		{"MachineExecRequest", model.ExecRequest{}},
	}
	for _, r := range roots {
		ref := doc.Components.Schemas[r.schema]
		if ref == nil {
			t.Fatalf("no schema %s in Fly's spec", r.schema)
		}
		walk(model.FlyScope(r.body), "", ref.Value, r.schema, reflect.TypeOf(r.body))
	}
	for key := range table {
		if !used[key] {
			t.Errorf("table entry %q names nothing in Fly's API", key)
		}
	}
}
