package cluster

import (
	"strings"
	"testing"

	"github.com/torpor-dev/torpor/internal/model"
)

// TestPlace: placement takes a live, uncordoned host with room, prefers
// hosts that can restore the snapshot, then the most free memory, and
// says why nothing fits.
func TestPlace(t *testing.T) {
	v := newView()
	host := func(id, version string, mem int, alive, cordoned bool) {
		h := hostRecord{ID: id, CPUs: 4, MemoryMB: mem, Runtime: "gvisor", RuntimeVersion: version, CPU: "x"}
		v.hostCfg[id] = hostConfig{Host: h, Cordoned: cordoned}
		if alive {
			v.hosts[id] = h
		}
	}
	host("a", "v1", 2048, true, false)
	host("b", "v1", 8192, true, true) // cordoned
	host("c", "v2", 8192, true, false)
	host("d", "v1", 8192, false, false) // down
	host("e", "v1", 4096, true, false)
	v.owners["m1"], v.machines["m1"] = "e", entry{Machine: model.Machine{ID: "m1", Config: model.MachineConfig{Guest: model.Guest{CPUs: 1, MemoryMB: 3072}}}}
	g := model.Guest{CPUs: 1, MemoryMB: 512}
	if h, _, err := v.place(g, nil, nil, ""); err != nil || h != "c" {
		t.Fatalf("most free memory: %q %v", h, err)
	}
	want := &compat{runtime: "gvisor", version: "v1", cpu: "x"}
	if h, ok, err := v.place(g, want, nil, ""); err != nil || h != "a" || !ok {
		t.Fatalf("compatible first: %q %v %v", h, ok, err)
	}
	if h, ok, err := v.place(g, want, map[string]bool{"a": true}, ""); err != nil || h != "e" || !ok {
		t.Fatalf("compatible with room (e has 1024 MB free): %q %v %v", h, ok, err)
	}
	if h, ok, err := v.place(g, want, map[string]bool{"a": true, "e": true}, ""); err != nil || h != "c" || ok {
		t.Fatalf("only an incompatible host: %q %v %v", h, ok, err)
	}
	// Moving m1 itself: its own reservation does not count.
	if h, _, err := v.place(model.Guest{CPUs: 1, MemoryMB: 4096}, want, map[string]bool{"c": true}, "m1"); err != nil || h != "e" {
		t.Fatalf("the moving machine's own room: %q %v", h, err)
	}
	_, _, err := v.place(model.Guest{CPUs: 1, MemoryMB: 16384}, nil, nil, "")
	if model.KindOf(err) != model.KindQuota || !strings.Contains(err.Error(), "b is cordoned") || !strings.Contains(err.Error(), "d is down") {
		t.Fatalf("nothing fits: %v", err)
	}
}
