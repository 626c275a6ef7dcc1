package daemon_test

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/identifiers"
	"github.com/torpor-dev/torpor/internal/model"
)

// sandboxes lists the sandboxes of the daemon's runsc (created ones too).
func (d *daemon) sandboxes() []string {
	out, _ := exec.Command(runscPath, "--root", filepath.Join(d.dataDir, "runsc"), "list", "-quiet").Output()
	return strings.Fields(string(out))
}

// sandboxState is runsc's state of machine id's sandbox ("" if none).
func (d *daemon) sandboxState(id string) string {
	return d.runscStatus(identifiers.SandboxID(id))
}

// runscStatus is the status runsc's state gives sandbox sid ("" if it has
// none).
func (d *daemon) runscStatus(sid string) string {
	out, err := exec.Command(runscPath, "--root", filepath.Join(d.dataDir, "runsc"), "state", sid).Output()
	if err != nil {
		return ""
	}
	var st struct{ Status string }
	if json.Unmarshal(out, &st) != nil {
		return ""
	}
	return st.Status
}

// waitPrecreated waits until machine id's sandbox has been created ahead
// of its resume (runsc state "created") and the daemon holds it as warm
// (its torpor_warm_sandboxes gauge counts every created sandbox). runsc's
// state alone comes a moment early: the worker still holds the machine's
// lock, and a start in that moment preempts the precreate and creates a
// sandbox of its own (CI, 2026-12-07: "want from the snapshot into the warm
// sandbox").
func (d *daemon) waitPrecreated(id string) {
	d.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for d.sandboxState(id) != "created" || d.warmGauge() < d.createdSandboxes() {
		if time.Now().After(deadline) {
			d.t.Fatalf("no warm sandbox for machine %s after 60s (sandboxes: %v, the daemon's warm ones: %d)", id, d.sandboxes(), d.warmGauge())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// createdSandboxes counts the daemon's runsc sandboxes in state "created".
func (d *daemon) createdSandboxes() int {
	n := 0
	for _, sid := range d.sandboxes() {
		if d.runscStatus(sid) == "created" {
			n++
		}
	}
	return n
}

// warmGauge is the daemon's torpor_warm_sandboxes, read on its admin
// socket (-1 if it cannot be read).
func (d *daemon) warmGauge() int {
	text, err := d.adminGet("/metrics")
	if err != nil {
		return -1
	}
	v, ok := value(text, "torpor_warm_sandboxes")
	if !ok {
		return -1
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return -1
	}
	return n
}

// wantNoSandbox checks that runsc has no sandbox of machine id.
func (d *daemon) wantNoSandbox(id, after string) {
	d.t.Helper()
	if slices.Contains(d.sandboxes(), identifiers.SandboxID(id)) {
		d.t.Fatalf("after %s, machine %s still has a sandbox (%s): %v", after, id, d.sandboxState(id), d.sandboxes())
	}
}

// withWarm returns the daemon's flags with --warm-sandboxes-memory set to v.
func withWarm(flags []string, v string) []string {
	var out []string
	for i := 0; i < len(flags); i++ {
		if flags[i] == "--warm-sandboxes-memory" {
			i++
			continue
		}
		out = append(out, flags[i])
	}
	return append(out, "--warm-sandboxes-memory", v)
}

// A suspended machine gets a sandbox created ahead; its resume restores
// into it (the event says so), its app goes on where it was (its counter
// and its HTTP answers, over its network) and its log goes on; a stop,
// update or destroy of a suspended machine leaves no sandbox behind. The
// daemon runs with the default --warm-sandboxes-memory: they are on.
func TestWarmSandboxResume(t *testing.T) {
	d := newParallelDaemon(t)
	m := d.create(counterConfig(nil))
	d.waitCount(m.ID, 3)
	before := d.httpGet(m)

	for round := 1; round <= 2; round++ {
		d.suspend(m.ID)
		d.waitPrecreated(m.ID)
		last := d.counts(m.ID)
		d.start(m.ID)
		ev := d.event(m.ID, model.EventResume)
		if st := ev.Start(); st == nil || !st.FromSnapshot || !st.WarmSandbox {
			t.Fatalf("round %d: resume event %+v, want from the snapshot into the warm sandbox", round, ev)
		}
		after := d.httpGet(m)
		if after.PID != before.PID || after.Started != before.Started || after.Count < before.Count {
			t.Fatalf("round %d: the app after the resume is %+v, before %+v: not the same process going on", round, after, before)
		}
		before = after
		counts := d.waitCount(m.ID, last[len(last)-1]+3)
		consecutive(t, counts)
	}

	ops := map[string]func(id string){
		"stop": func(id string) {
			if err := d.c.Stop(ctx(t), d.app, id, model.StopRequest{}); err != nil {
				t.Fatal(err)
			}
		},
		"update": func(id string) {
			cfg := counterConfig(map[string]string{"VERSION": "2"})
			if _, err := d.c.UpdateMachine(ctx(t), d.app, id, model.UpdateMachineRequest{Config: cfg, SkipLaunch: true}); err != nil {
				t.Fatal(err)
			}
		},
		"destroy": func(id string) {
			if err := d.c.Destroy(ctx(t), d.app, id, false); err != nil {
				t.Fatal(err)
			}
		},
	}
	for _, name := range []string{"stop", "update", "destroy"} {
		d.suspend(m.ID)
		d.waitPrecreated(m.ID)
		ops[name](m.ID)
		d.wantNoSandbox(m.ID, name)
		if name != "destroy" {
			d.start(m.ID) // cold: stop and update discard the snapshot
			if ev := d.event(m.ID, model.EventStart); ev.Start() == nil || ev.Start().FromSnapshot {
				t.Fatalf("after %s: start event %+v, want a cold start", name, ev)
			}
		}
	}
}

// A daemon killed with a warm sandbox leaves none once the next daemon
// has started (its recovery deletes it), a daemon with a budget creates
// it again and resumes into it, and one that stops deletes it.
func TestWarmSandboxDaemonCrash(t *testing.T) {
	d := newParallelDaemon(t, "--warm-sandboxes-memory", "256MiB")
	m := d.create(counterConfig(nil))
	d.waitCount(m.ID, 3)
	d.suspend(m.ID)
	d.waitPrecreated(m.ID)

	d.crash()
	d.flags = withWarm(d.flags, "0")
	d.run()
	d.wantNoSandbox(m.ID, "a crash and a restart without warm sandboxes")
	if got := d.sandboxes(); len(got) != 0 {
		t.Fatalf("sandboxes after the restart: %v", got)
	}
	d.wantState(m.ID, model.StateSuspended)

	d.crash()
	d.flags = withWarm(d.flags, "256MiB")
	d.run()
	d.waitPrecreated(m.ID)
	last := d.counts(m.ID)
	d.start(m.ID)
	if st := d.event(m.ID, model.EventResume).Start(); st == nil || !st.WarmSandbox {
		t.Fatalf("resume after the restart: %+v, want it into the warm sandbox", st)
	}
	consecutive(t, d.waitCount(m.ID, last[len(last)-1]+3))

	// A daemon that stops (SIGTERM) deletes its warm sandboxes.
	d.suspend(m.ID)
	d.waitPrecreated(m.ID)
	d.stop()
	if got := d.sandboxes(); len(got) != 0 {
		t.Fatalf("sandboxes after the daemon stopped: %v", got)
	}
	d.run()
	d.waitPrecreated(m.ID)
}
