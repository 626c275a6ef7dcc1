package gvisor

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"
)

// clockJumpApp reads both clocks every 0.5 ms and prints each read where
// either jumped by more than 0.3 s since the one before: "jump LASTWALL
// WALL LASTMONO MONO".
const clockJumpApp = `
import time
lw, lm = time.time(), time.monotonic()
print("start", flush=True)
while True:
    w, m = time.time(), time.monotonic()
    if w - lw > 0.3 or m - lm > 0.3:
        print("jump %.6f %.6f %.6f %.6f" % (lw, w, lm, m), flush=True)
    lw, lm = w, m
    time.sleep(0.0005)
`

// TestClockJumpsAtFirstReadAfterRestore checks, on a sandbox never frozen,
// that an app's clocks see the time asleep after a restore: the wall clock
// and the monotonic one jump together, on one read, and the wall clock then
// reads no earlier than the restore began. The logs show how soon after
// runsc restore returned that read came (-8 to +7 ms in 30 restores on
// 2026-12-04). A wall clock left at the snapshot's time for the app's first
// reads, together with the monotonic one, would pass here; the datagrams of
// internal/daemon's TestClockRightAfterResume catch that. This is what lets
// a resume continue the app without reading its clock first
// (machine.Config.ClockGate, docs/app-authors.md#the-clock).
func TestClockJumpsAtFirstReadAfterRestore(t *testing.T) {
	rt := newTestRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	con := newConsole(t)
	spec := newSpec(t, rt, "clock", con.path, clockJumpApp)
	if err := rt.Boot(ctx, spec); err != nil {
		t.Fatal(err)
	}
	jumps := func() []string {
		var out []string
		for _, l := range con.snapshot() {
			if strings.HasPrefix(l, "jump ") {
				out = append(out, l)
			}
		}
		return out
	}
	waitFor(t, 20*time.Second, "app started", func() bool {
		return len(con.snapshot()) > 0 && con.snapshot()[0] == "start"
	})
	const asleep = time.Second
	for i := range 4 {
		warm := i%2 == 1 // restore into a sandbox created ahead, as a warm resume does
		time.Sleep(200 * time.Millisecond)
		image := t.TempDir()
		if err := rt.Checkpoint(ctx, spec.ID, image); err != nil {
			t.Fatal(err)
		}
		if warm {
			if err := rt.Precreate(ctx, spec); err != nil {
				t.Fatal(err)
			}
		}
		seen := len(jumps())
		time.Sleep(asleep)
		before := time.Now()
		if err := rt.Restore(ctx, spec, image); err != nil {
			t.Fatal(err)
		}
		returned := time.Now()
		waitFor(t, 20*time.Second, "the app's clock jump", func() bool { return len(jumps()) > seen })
		f := strings.Fields(jumps()[seen])
		var v [4]float64
		for k := range v {
			v[k], _ = strconv.ParseFloat(f[k+1], 64)
		}
		wall := time.Unix(0, int64(v[1]*1e9))
		wallJump := time.Duration((v[1] - v[0]) * 1e9)
		monoJump := time.Duration((v[3] - v[2]) * 1e9)
		t.Logf("restore %d (warm %v): wall clock jumped %v, monotonic %v; first wall reading %v after the restore began, %v after it returned",
			i, warm, wallJump.Round(time.Millisecond), monoJump.Round(time.Millisecond),
			wall.Sub(before).Round(time.Millisecond), wall.Sub(returned).Round(time.Millisecond))
		// Both clocks moved on by at least the time asleep on the same read,
		// and the wall clock then read no earlier than the restore began
		// (50 ms: the bound docs/app-authors.md promises).
		if wallJump < asleep || monoJump < asleep || (wallJump-monoJump).Abs() > 50*time.Millisecond {
			t.Fatalf("restore %d: the clocks did not jump together by the time asleep: %q", i, jumps()[seen])
		}
		if wall.Before(before.Add(-50 * time.Millisecond)) {
			t.Fatalf("restore %d: the first wall reading after the jump is %v before the restore began: the snapshot's time", i, before.Sub(wall))
		}
		if len(jumps()) > seen+1 {
			t.Fatalf("restore %d: the clocks jumped again after the restore: %q", i, jumps()[seen:])
		}
	}
}
