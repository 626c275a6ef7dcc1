package gvisor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRestoreWithoutQuotaThenLimited checks the CPU quota's life across a
// checkpoint and a restore (cgroup.go): a booted sandbox has runsc's own cpu
// cgroup with the quota; a restored one runs in the cgroup the driver
// created, and has the quota again once Restore has returned; Kill removes
// that cgroup; a Boot after a leftover directory gets runsc's limited one.
func TestRestoreWithoutQuotaThenLimited(t *testing.T) {
	rt := newTestRuntime(t)
	if !cgroupV1() {
		t.Skip("cgroup v1 only: the driver leaves limits to runsc on this host")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	con := newConsole(t)
	spec := newSpec(t, rt, "quota", con.path, counterApp)
	cpu := cgroupDir("cpu", spec.ID)

	// A leftover directory without a quota (a restore's, after a crash)
	// must not be what a boot runs in.
	if err := os.MkdirAll(cpu, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := rt.Boot(ctx, spec); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "counter output", func() bool { return len(numbers(con.snapshot())) >= 3 })
	wantQuota(t, cpu, "100000", true)

	image := t.TempDir()
	if err := rt.Checkpoint(ctx, spec.ID, image); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cpu); !os.IsNotExist(err) {
		t.Errorf("cpu cgroup after a checkpoint: %v, want it gone", err)
	}
	before := numbers(con.settle(100 * time.Millisecond))
	if err := rt.Restore(ctx, spec, image); err != nil {
		t.Fatal(err)
	}
	wantQuota(t, cpu, "100000", true)
	waitFor(t, 20*time.Second, "output after restore", func() bool { return len(numbers(con.snapshot())) > len(before) })

	// A daemon that died before writing the quota leaves none; the Wait
	// of the daemon that adopts the sandbox puts it back.
	if err := setCPUQuota(cpu, 0); err != nil {
		t.Fatal(err)
	}
	wctx, stopWait := context.WithCancel(ctx)
	waited := make(chan struct{})
	go func() { rt.Wait(wctx, spec.ID); close(waited) }()
	waitFor(t, 10*time.Second, "the quota back", func() bool {
		data, _ := os.ReadFile(filepath.Join(cpu, "cpu.cfs_quota_us"))
		return strings.TrimSpace(string(data)) == "100000"
	})
	stopWait()
	<-waited

	// A live checkpoint lifts the quota and puts it back.
	if err := rt.CheckpointLive(ctx, spec.ID, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	wantQuota(t, cpu, "100000", true)

	if err := rt.Kill(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cpu); !os.IsNotExist(err) {
		t.Errorf("cpu cgroup after Kill: %v, want it gone", err)
	}
}

// wantQuota checks the cgroup's quota and that the sandbox runs in it.
func wantQuota(t *testing.T, dir, quota string, tasks bool) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "cpu.cfs_quota_us"))
	if err != nil {
		t.Fatalf("cpu cgroup: %v", err)
	}
	if got := strings.TrimSpace(string(data)); got != quota {
		t.Errorf("cpu.cfs_quota_us = %s, want %s", got, quota)
	}
	procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(procs)) != ""; got != tasks {
		t.Errorf("processes in %s: %v, want %v", dir, got, tasks)
	}
}
