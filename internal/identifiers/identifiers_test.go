package identifiers

import (
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

func TestNames(t *testing.T) {
	for _, ok := range []string{"a", "web", "my-app-2", strings.Repeat("a", 63), "0day"} {
		if err := AppName("app_name", ok); err != nil {
			t.Errorf("AppName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", "A", "a_b", "a.b", "a/b", "..", strings.Repeat("a", 64), "é", "a\x00"} {
		err := AppName("app_name", bad)
		if model.KindOf(err) != model.KindInvalid || !strings.Contains(err.Error(), "app_name") {
			t.Errorf("AppName(%q) = %v, want an invalid error naming the field", bad, err)
		}
	}
	if MachineName("name", "") != nil || Slug("org_slug", "") != nil || Region("region", "") != nil {
		t.Error("empty optional names must pass")
	}
	if AppName("app_name", "") == nil {
		t.Error("an empty app name must fail")
	}
}

func TestMachineIDs(t *testing.T) {
	for range 100 {
		id := NewMachineID()
		if err := MachineID("id", id); err != nil || len(id) != 14 {
			t.Fatalf("new ID %q: %v", id, err)
		}
	}
	for _, bad := range []string{"", "ABC", "a-b", "a/b", "..", strings.Repeat("a", 65)} {
		if MachineID("id", bad) == nil {
			t.Errorf("MachineID(%q) passed", bad)
		}
	}
	if SandboxID("abc") != "torpor-abc" || DefaultMachineName("0123456789") != "machine-012345" {
		t.Error("derived names changed: sandboxes of running machines would not be found")
	}
}

func TestNewVersionSortsInCreationOrder(t *testing.T) {
	prev := ""
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range 2000 {
		// Many in the same millisecond, then later ones.
		v := newULID(base.Add(time.Duration(i/500) * time.Millisecond))
		if len(v) != 26 || !IsVersion(v) {
			t.Fatalf("version %q: want 26 letters or digits", v)
		}
		if v <= prev {
			t.Fatalf("version %d %q does not sort after %q", i, v, prev)
		}
		prev = v
	}
	if v := encodeULID([16]byte{}); v != "00000000000000000000000000" {
		t.Fatalf("zero ULID = %q", v)
	}
	all := [16]byte{}
	for i := range all {
		all[i] = 0xff
	}
	if v := encodeULID(all); v != "7ZZZZZZZZZZZZZZZZZZZZZZZZZ" {
		t.Fatalf("max ULID = %q", v)
	}
}
