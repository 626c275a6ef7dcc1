package gvisor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/runtime"
)

// spawnLog is a runsc wrapper that logs each invocation's subcommand.
type spawnLog struct{ path string }

// newSpawnCountingRuntime returns a driver whose runsc is a script that
// notes every invocation, then runs the real runsc.
func newSpawnCountingRuntime(t *testing.T) (*Runtime, *spawnLog) {
	t.Helper()
	requireIntegration(t)
	dir := t.TempDir()
	log := &spawnLog{path: filepath.Join(dir, "spawns")}
	wrapper := filepath.Join(dir, "runsc")
	script := "#!/bin/sh\necho \"$*\" >> " + log.path + "\nexec " + testRunsc + " \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	rt, err := New(Config{RunscPath: wrapper, RootDir: filepath.Join(dir, "root")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Close() })
	return rt, log
}

// take returns the subcommands run since the last take.
func (l *spawnLog) take(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(l.path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	os.Remove(l.path)
	var subs []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		for _, arg := range strings.Fields(line) {
			if !strings.HasPrefix(arg, "-") {
				subs = append(subs, arg)
				break
			}
		}
	}
	return subs
}

// TestResumeSpawnsOnlyRestore checks that the Kill before a restore (the
// manager's prepare) and the Restore itself ask runsc nothing more once a
// Checkpoint has deleted the sandbox: the only runsc process on that path
// is the restore.
func TestResumeSpawnsOnlyRestore(t *testing.T) {
	rt, spawns := newSpawnCountingRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	con := newConsole(t)
	spec := newSpec(t, rt, "spawns", con.path, counterApp)
	if err := rt.Boot(ctx, spec); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "counter output", func() bool { return len(numbers(con.snapshot())) >= 3 })
	image := t.TempDir()
	if err := rt.Checkpoint(ctx, spec.ID, image); err != nil {
		t.Fatal(err)
	}
	spawns.take(t)
	if err := rt.Kill(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	if err := rt.Restore(ctx, spec, image); err != nil {
		t.Fatal(err)
	}
	if got := spawns.take(t); strings.Join(got, " ") != "restore" {
		t.Errorf("runsc subcommands for Kill + Restore after a checkpoint: %q, want only restore", got)
	}
	before := len(numbers(con.snapshot()))
	waitFor(t, 20*time.Second, "output after restore", func() bool { return len(numbers(con.snapshot())) > before })
	// A Kill of the running sandbox asks runsc again.
	if err := rt.Kill(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	if got := spawns.take(t); len(got) == 0 || got[0] != "state" {
		t.Errorf("runsc subcommands for Kill of a running sandbox: %q, want state first", got)
	}
	mustState(t, rt, spec.ID, runtime.StatusAbsent)
}
