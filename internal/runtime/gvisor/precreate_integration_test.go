package gvisor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
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

// TestPrecreatePreemptedMidCreateKeepsTheSandbox: a precreate whose ctx
// ends while `runsc create` runs (an operation on the machine preempted
// it) lets the create finish, as always, and keeps the sandbox for the
// operation that waited for it; one whose ctx ended before the create
// makes nothing.
func TestPrecreatePreemptedMidCreateKeepsTheSandbox(t *testing.T) {
	marks := t.TempDir()
	rt := newWrappedRuntime(t, `if [ "$sub" = create ]; then
	touch `+marks+`/create
	sleep 0.3
fi`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	spec := newSpec(t, rt, "preempt", newConsole(t).path, counterApp)
	go func() {
		for {
			if _, err := os.Stat(filepath.Join(marks, "create")); err == nil {
				cancel()
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	if err := rt.Precreate(ctx, spec); err != nil {
		t.Fatalf("Precreate preempted mid-create: %v, want the sandbox kept", err)
	}
	if ctx.Err() == nil {
		t.Fatal("the create ended before the preempt: the test proves nothing")
	}
	mustState(t, rt, spec.ID, runtime.StatusCreated)
	if !rt.Precreated(spec) {
		t.Fatal("not Precreated after a create that finished")
	}
	bg := context.Background()
	if err := rt.DiscardPrecreated(bg, spec.ID); err != nil {
		t.Fatal(err)
	}

	other := newSpec(t, rt, "preempt", newConsole(t).path, counterApp)
	if err := rt.Precreate(ctx, other); !errors.Is(err, context.Canceled) {
		t.Fatalf("Precreate with its ctx already ended = %v, want context.Canceled", err)
	}
	mustState(t, rt, other.ID, runtime.StatusAbsent)
}
