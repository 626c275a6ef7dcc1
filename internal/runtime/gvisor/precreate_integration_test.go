package gvisor

import (
	"os"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/runtime"
)

// A sandbox precreated for a spec is restored into: the app's counter goes
// on, the restore runs without the CPU quota (cgroup.go) and gets it once
// it has returned; one precreated for another spec, or discarded, leaves
// nothing behind.
func TestPrecreateThenRestore(t *testing.T) {
	rt := newTestRuntime(t)
	ctx, con, spec := bootApp(t, rt, "warm", counterApp)
	waitFor(t, 20*time.Second, "counter output", func() bool { return len(numbers(con.snapshot())) >= 3 })
	image := t.TempDir()
	if err := rt.Checkpoint(ctx, spec.ID, image); err != nil {
		t.Fatal(err)
	}
	before := numbers(con.settle(100 * time.Millisecond))

	if rt.Precreated(spec) {
		t.Fatal("Precreated before Precreate")
	}
	if err := rt.Precreate(ctx, spec); err != nil {
		t.Fatal(err)
	}
	mustState(t, rt, spec.ID, runtime.StatusCreated)
	if !rt.Precreated(spec) {
		t.Fatal("not Precreated after Precreate")
	}
	other := spec
	other.Env = append([]string{"X=1"}, spec.Env...)
	if rt.Precreated(other) {
		t.Fatal("Precreated for a spec that differs")
	}
	// Precreate again with the same spec keeps it.
	if err := rt.Precreate(ctx, spec); err != nil {
		t.Fatal(err)
	}
	cpu := cgroupDir("cpu", spec.ID)
	if cgroupV1() {
		wantQuota(t, cpu, "-1", true)
	}
	if err := rt.Restore(ctx, spec, image); err != nil {
		t.Fatal(err)
	}
	if rt.Precreated(spec) {
		t.Fatal("still Precreated after the restore")
	}
	if cgroupV1() {
		wantQuota(t, cpu, "100000", true)
	}
	mustState(t, rt, spec.ID, runtime.StatusRunning)
	waitFor(t, 20*time.Second, "output after restore", func() bool { return len(numbers(con.snapshot())) > len(before)+2 })
	after := numbers(con.snapshot())
	last := before[len(before)-1]
	if next := after[len(before)]; next != last+1 {
		t.Fatalf("counter went %d → %d across the restore, want it to go on", last, next)
	}

	// Discarded: nothing left.
	image2 := t.TempDir()
	if err := rt.Checkpoint(ctx, spec.ID, image2); err != nil {
		t.Fatal(err)
	}
	if err := rt.Precreate(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := rt.DiscardPrecreated(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	mustState(t, rt, spec.ID, runtime.StatusAbsent)
	if _, err := os.Stat(cpu); !os.IsNotExist(err) {
		t.Errorf("cpu cgroup after DiscardPrecreated: %v, want it gone", err)
	}

	// Precreated for another spec: the restore deletes it and restores
	// the usual way.
	if err := rt.Precreate(ctx, other); err != nil {
		t.Fatal(err)
	}
	before = numbers(con.settle(100 * time.Millisecond))
	if err := rt.Restore(ctx, spec, image2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "output after the second restore", func() bool { return len(numbers(con.snapshot())) > len(before) })

	// A leftover created sandbox nobody recorded (a dead daemon's) is
	// replaced by Precreate; Kill deletes a precreated one.
	image3 := t.TempDir()
	if err := rt.Checkpoint(ctx, spec.ID, image3); err != nil {
		t.Fatal(err)
	}
	if err := rt.Precreate(ctx, spec); err != nil {
		t.Fatal(err)
	}
	rt.takePrecreated(spec.ID) // forgotten, as by a daemon restart
	if err := rt.Precreate(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := rt.Kill(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	mustState(t, rt, spec.ID, runtime.StatusAbsent)
	if rt.Precreated(spec) {
		t.Fatal("still Precreated after Kill")
	}
}
