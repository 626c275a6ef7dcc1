package daemon_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// Issue 17, F16: a machine killed for exceeding its memory was reported
// as an ordinary exit. The exit event now says oom_killed, in torpor's
// details and in Fly's exit_event.
func TestOOMKillReported(t *testing.T) {
	d := newDaemon(t, "--no-proxy")
	cfg := model.MachineConfig{
		Image: pythonImage,
		// Allocate (and touch) 16 MiB at a time, far past the 128 MiB limit.
		Init:  model.InitConfig{Exec: []string{"python3", "-c", "import time\nprint('allocating', flush=True)\nb = []\nwhile True:\n    b.append(b'x' * (16 << 20))\n    time.sleep(0.01)\n"}},
		Guest: model.Guest{CPUs: 1, MemoryMB: 128},
	}
	m := d.create(cfg)
	deadline := time.Now().Add(60 * time.Second)
	for d.get(m.ID).State != model.StateStopped {
		if time.Now().After(deadline) {
			t.Fatalf("the machine did not die of its allocations in 60 s; console: %v", d.consoleLines(m.ID))
		}
		time.Sleep(100 * time.Millisecond)
	}
	ev := d.event(m.ID, model.EventExit)
	raw, _ := json.Marshal(ev.Request)
	t.Logf("exit event: %s", raw)
	var det model.ExitDetails
	if err := json.Unmarshal(raw, &det); err != nil {
		t.Fatal(err)
	}
	if !det.OOMKilled || det.ExitEvent == nil || !det.ExitEvent.OOMKilled {
		t.Errorf("exit after exceeding memory: %s, want oom_killed", raw)
	}
	// The exit is recorded before the dead sandbox is deleted: give that
	// a moment.
	for wait := time.Now().Add(5 * time.Second); len(leftCgroups(m.ID)) > 0 && time.Now().Before(wait); {
		time.Sleep(50 * time.Millisecond)
	}
	if left := leftCgroups(m.ID); len(left) > 0 {
		t.Errorf("5 s after the OOM kill, %d cgroups are left: %v", len(left), left)
	}
	// An ordinary exit is not an OOM kill.
	cfg.Init.Exec = []string{"python3", "-c", "import sys, time; time.sleep(1); sys.exit(3)"}
	m2, err := d.c.CreateMachine(ctx(t), d.app, model.CreateMachineRequest{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	for d.get(m2.ID).State != model.StateStopped {
		if time.Now().After(deadline) {
			t.Fatal("the exiting machine did not stop")
		}
		time.Sleep(100 * time.Millisecond)
	}
	ev = d.event(m2.ID, model.EventExit)
	raw, _ = json.Marshal(ev.Request)
	det = model.ExitDetails{}
	if err := json.Unmarshal(raw, &det); err != nil || det.OOMKilled || det.ExitCode != 3 {
		t.Errorf("ordinary exit: %s", raw)
	}
}
