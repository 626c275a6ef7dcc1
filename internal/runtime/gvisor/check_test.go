package gvisor

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestRunningWithoutRunsc: with runsc missing, Running answers from the
// sandbox process runsc last reported: alive while it runs, not once it
// has exited, and an error for a sandbox never seen.
func TestRunningWithoutRunsc(t *testing.T) {
	r := &Runtime{cfg: Config{RunscPath: filepath.Join(t.TempDir(), "missing-runsc"), RootDir: t.TempDir()}}
	ctx := context.Background()
	if _, err := r.Running(ctx, "never-seen"); err == nil {
		t.Fatal("Running of a sandbox never seen, without runsc: no error")
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.remember("sb", cmd.Process.Pid)
	if ok, err := r.Running(ctx, "sb"); err != nil || !ok {
		t.Fatalf("Running of a live sandbox process = %v, %v; want true", ok, err)
	}
	cmd.Process.Kill()
	deadline := time.Now().Add(5 * time.Second)
	for ok, _ := r.Running(ctx, "sb"); ok && time.Now().Before(deadline); ok, _ = r.Running(ctx, "sb") {
		time.Sleep(5 * time.Millisecond) // the signal takes a moment to land
	}
	if ok, err := r.Running(ctx, "sb"); err != nil || ok {
		t.Fatalf("Running of an exited (zombie) sandbox process = %v, %v; want false", ok, err)
	}
	cmd.Wait()
	if ok, err := r.Running(ctx, "sb"); err != nil || ok {
		t.Fatalf("Running of a reaped sandbox process = %v, %v; want false", ok, err)
	}
	r.remember("self", os.Getpid())
	r.mu.Lock()
	p := r.procs["self"]
	p.start += "0" // another process that got the same pid later
	r.procs["self"] = p
	r.mu.Unlock()
	if ok, _ := r.Running(ctx, "self"); ok {
		t.Fatal("Running took a process with the same pid but another start time for the sandbox")
	}
}
