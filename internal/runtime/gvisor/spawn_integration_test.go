package gvisor

import (
	"context"
	"errors"
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
	log := &spawnLog{path: filepath.Join(t.TempDir(), "spawns")}
	return newWrappedRuntime(t, `echo "$*" >> `+log.path), log
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
// is the restore. The Checkpoint itself spawns only checkpoint and delete.
func TestResumeSpawnsOnlyRestore(t *testing.T) {
	rt, spawns := newSpawnCountingRuntime(t)
	ctx, con, spec := bootApp(t, rt, "spawns", counterApp)
	waitFor(t, 20*time.Second, "counter output", func() bool { return len(numbers(con.snapshot())) >= 3 })
	image := t.TempDir()
	spawns.take(t)
	if err := rt.Checkpoint(ctx, spec.ID, image); err != nil {
		t.Fatal(err)
	}
	// The checkpoint reads the sandbox's state from runsc's file (runningState).
	if got := spawns.take(t); strings.Join(got, " ") != "checkpoint delete" {
		t.Errorf("runsc subcommands for Checkpoint: %q, want checkpoint, delete", got)
	}
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

// TestExecAndSignalAllSpawnNoRunsc checks that Exec and SignalAll talk to
// the sandbox's control socket instead of spawning runsc (control.go), with
// runsc exec's semantics: the output of both streams, an exit code, the
// container's environment with the caller's added, a cancelled exec's process killed inside the
// sandbox, and a signal to every process.
func TestExecAndSignalAllSpawnNoRunsc(t *testing.T) {
	rt, spawns := newSpawnCountingRuntime(t)
	ctx, con, spec := bootApp(t, rt, "ctl", counterApp)
	waitFor(t, 20*time.Second, "counter output", func() bool { return len(numbers(con.snapshot())) >= 2 })
	spawns.take(t)

	out, err := rt.Exec(ctx, spec.ID, []string{"/bin/sh", "-c", "echo out; echo err >&2; echo \"path=$PATH\"; id -u"})
	if err != nil || !strings.Contains(string(out), "out\n") || !strings.Contains(string(out), "err\n") ||
		!strings.Contains(string(out), "path=/") || !strings.HasSuffix(strings.TrimSpace(string(out)), "0") {
		t.Fatalf("exec = %q, %v; want both streams, the container's PATH and uid 0", out, err)
	}
	// env is added to the container's environment, replacing what it sets
	// (LANG=C.UTF-8), through the control socket and through runsc exec.
	envProbe := []string{"/bin/sh", "-c", `echo "lang=$LANG x=$X path=$PATH"`}
	for name, exec := range map[string]func() ([]byte, error){
		"control socket": func() ([]byte, error) { return rt.Exec(ctx, spec.ID, envProbe, "LANG=C", "X=1") },
		"runsc exec":     func() ([]byte, error) { return rt.spawnExec(ctx, spec.ID, envProbe, []string{"LANG=C", "X=1"}) },
	} {
		out, err := exec()
		if got := strings.TrimSpace(string(out)); err != nil || !strings.HasPrefix(got, "lang=C x=1 path=/") {
			t.Fatalf("exec with env through the %s = %q, %v; want lang=C x=1 and the container's PATH", name, got, err)
		}
	}
	spawns.take(t) // the runsc exec just now
	if _, err := rt.Exec(ctx, spec.ID, envProbe, "NOEQUALS"); err == nil {
		t.Fatal("exec with an env entry that is not KEY=VALUE ran")
	}
	out, err = rt.Exec(ctx, spec.ID, []string{"/bin/sh", "-c", "echo oops >&2; exit 3"})
	var ec interface{ ExitCode() int }
	if !errors.As(err, &ec) || ec.ExitCode() != 3 || !strings.Contains(string(out), "oops") {
		t.Fatalf("failing exec = %q, %v; want exit code 3 and its output", out, err)
	}
	if out, err := rt.Exec(ctx, spec.ID, []string{"/no/such/binary"}); err == nil || !strings.Contains(string(out), "/no/such/binary") {
		t.Fatalf("exec of a missing binary = %q, %v; want an error, and output that says why (as runsc exec prints)", out, err)
	}

	// A cancelled exec: its process (and its group) is killed inside.
	cctx, ccancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = rt.Exec(cctx, spec.ID, []string{"/bin/sh", "-c", "sleep 1234 & sleep 1235"})
	ccancel()
	if err == nil {
		t.Fatal("a cancelled exec returned no error")
	}
	waitFor(t, 10*time.Second, "the cancelled exec's processes gone", func() bool {
		out, err := rt.Exec(ctx, spec.ID, []string{"/bin/sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"})
		return err == nil && !strings.Contains(string(out), "sleep 123")
	})

	// SignalAll: SIGSTOP holds the counter, SIGCONT lets it go on.
	if err := rt.SignalAll(ctx, spec.ID, "SIGSTOP"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // a line in flight may still land
	held := len(numbers(con.snapshot()))
	time.Sleep(1500 * time.Millisecond)
	if got := len(numbers(con.snapshot())); got != held {
		t.Fatalf("the counter went on from %d to %d lines while stopped", held, got)
	}
	if err := rt.SignalAll(ctx, spec.ID, "CONT"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "output after SIGCONT", func() bool { return len(numbers(con.snapshot())) > held })

	if got := spawns.take(t); len(got) != 0 {
		t.Errorf("runsc spawned for Exec and SignalAll: %q, want none", got)
	}
	if err := rt.Kill(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Exec(ctx, spec.ID, []string{"/bin/true"}); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("exec in a deleted sandbox: %v, want ErrNotFound", err)
	}
}
