package identifiers

import (
	"strings"
	"testing"

	"github.com/torpor-dev/torpor/internal/model"
)

func TestVolumeIDsAndNames(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := NewVolumeID()
		if err := VolumeID("id", id); err != nil || len(id) != 20 || seen[id] {
			t.Fatalf("new volume ID %q: %v", id, err)
		}
		seen[id] = true
	}
	for _, bad := range []string{"", "vol_", "vol-abc", "VOL_abc", "vol_ABC", "vol_a/b", "abc", "vol_" + strings.Repeat("a", 65)} {
		if err := VolumeID("source_volume_id", bad); model.KindOf(err) != model.KindInvalid || !strings.Contains(err.Error(), "source_volume_id") {
			t.Errorf("VolumeID(%q) = %v", bad, err)
		}
	}
	for _, ok := range []string{"data", "pg_data", "a", strings.Repeat("a", 30), "0"} {
		if err := VolumeName("name", ok); err != nil {
			t.Errorf("VolumeName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Data", "my-data", "a b", strings.Repeat("a", 31), "é"} {
		if err := VolumeName("name", bad); model.KindOf(err) != model.KindInvalid || !strings.Contains(err.Error(), "name") {
			t.Errorf("VolumeName(%q) = %v", bad, err)
		}
	}
}
