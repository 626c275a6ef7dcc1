package api

import (
	"encoding/json"
	"testing"

	"github.com/torpor-dev/torpor/internal/model"
)

// TestUnreachableHostAnswersIncompleteConfig: a machine whose cluster host
// is down answers Fly's incomplete_config beside its config (fly-go falls
// back on it); a machine whose host answers has none, and a single host's
// machines say host_status "ok".
func TestUnreachableHostAnswersIncompleteConfig(t *testing.T) {
	cfg := model.MachineConfig{Image: "app:v1", Guest: model.Guest{CPUs: 1, MemoryMB: 256}}
	for _, tc := range []struct {
		status, want string
		incomplete   bool
	}{
		{"", model.HostOK, false},
		{model.HostOK, model.HostOK, false},
		{model.HostUnreachable, model.HostUnreachable, true},
	} {
		b, err := json.Marshal(viewMachine(model.Machine{ID: "m1", Config: cfg, HostStatus: tc.status}))
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			HostStatus       string               `json:"host_status"`
			Config           *model.MachineConfig `json:"config"`
			IncompleteConfig *model.MachineConfig `json:"incomplete_config"`
		}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if got.HostStatus != tc.want || got.Config == nil || got.Config.Image != "app:v1" {
			t.Errorf("host %q: answered %s", tc.status, b)
		}
		if (got.IncompleteConfig != nil) != tc.incomplete ||
			(tc.incomplete && (got.IncompleteConfig.Image != "app:v1" || got.IncompleteConfig.Guest.MemoryMB != 256)) {
			t.Errorf("host %q: incomplete_config in %s", tc.status, b)
		}
	}
}
