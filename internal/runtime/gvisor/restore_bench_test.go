package gvisor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/runtime"
)

// fastHeapApp is heapAppOf(mb) printing every 2 ms, so that the first
// output after a restore is timed to a few milliseconds.
func fastHeapApp(mb int) string {
	return strings.Replace(heapAppOf(mb), "time.sleep(0.05)", "time.sleep(0.002)", 1)
}

// restoreMode is one way of checkpointing and restoring, compared by
// BenchmarkRestoreModes.
type restoreMode struct {
	name       string
	keepLimits bool // Config.KeepLimits: checkpoint and restore under the quota
	keepMemory bool // Config.KeepMemoryLimit: checkpoint under the memory limit
	ahead      bool // "runsc create" before "runsc restore" with the same ID
	// hugePages: the host lets shmem use transparent huge pages
	// (shmem_enabled "advise", which runsc's -app-huge-pages needs) for
	// the checkpoint and the restore; else "never".
	hugePages bool
}

var restoreModes = []restoreMode{
	{name: "under the limits (before)", keepLimits: true},
	{name: "CPU quota lifted, memory limit kept", keepMemory: true},
	{name: "limits lifted (now)"},
	{name: "limits lifted, sandbox created ahead", ahead: true},
	{name: "limits lifted, huge pages", hugePages: true},
	{name: "limits lifted, huge pages, created ahead", hugePages: true, ahead: true},
}

// BenchmarkRestoreModes compares, in one run and in alternation, for a
// 1-CPU machine with a 64 MiB and a 1 GiB heap: a checkpoint and a restore
// under the machine's CPU quota and memory limit (Config.KeepLimits, as
// before issue 16), with them lifted (cgroup.go), and with them lifted and
// the sandbox created ahead ("runsc create" with the same ID and bundle,
// not timed, then "runsc restore" into it). It prints the medians: the
// checkpoint until the sandbox is gone, a read of the image right after it
// (the page cache kept it, or the seal reads the disk), the restore command
// and the restore until the app's next output.
//
//	TORPOR_INTEGRATION=1 go test -v -run '^$' -bench BenchmarkRestoreModes -benchtime 5x ./internal/runtime/gvisor/
//
// TORPOR_RESTORE_MODES, a regular expression, keeps only the modes whose
// names it matches (e.g. 'now|huge pages$').
func BenchmarkRestoreModes(b *testing.B) {
	modes := restoreModes
	if re := os.Getenv("TORPOR_RESTORE_MODES"); re != "" {
		modes = nil
		for _, m := range restoreModes {
			if regexp.MustCompile(re).MatchString(m.name) {
				modes = append(modes, m)
			}
		}
	}
	type cell struct{ checkpoint, reread, restore, output []time.Duration }
	type row struct {
		name  string
		cells []cell
	}
	var rows []*row
	for _, bc := range []struct {
		name       string
		memMB, mib int
	}{
		{"320MiB-machine/heap64", 320, 64},
		{"1280MiB-machine/heap1024", 1280, 1024},
	} {
		r := &row{name: bc.name, cells: make([]cell, len(modes))}
		rows = append(rows, r)
		b.Run(bc.name, func(b *testing.B) {
			rt := newTestRuntime(b)
			for i := 0; i < b.N; i++ {
				for j := range modes {
					k := (i + j) % len(modes) // rotate the order
					c := &r.cells[k]
					ck, rr, rs, out := restoreModeOnce(b, rt, modes[k], fastHeapApp(bc.mib), bc.memMB)
					c.checkpoint, c.reread = append(c.checkpoint, ck), append(c.reread, rr)
					c.restore, c.output = append(c.restore, rs), append(c.output, out)
				}
			}
		})
	}
	var sb strings.Builder
	sb.WriteString("\n| machine | mode | checkpoint until gone (ms) | image re-read (ms) | runsc restore (ms) | restore to next output (ms) | runs |\n|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		for k, c := range r.cells {
			if len(c.restore) == 0 {
				continue
			}
			fmt.Fprintf(&sb, "| %s | %s | %.0f | %.0f | %.0f | %.0f | %d |\n", r.name, modes[k].name,
				median(c.checkpoint), median(c.reread), median(c.restore), median(c.output), len(c.restore))
		}
	}
	b.Log(sb.String())
}

// restoreModeOnce boots the app, checkpoints it, re-reads the image,
// restores it the mode's way and waits for its next output.
func restoreModeOnce(b *testing.B, rt *Runtime, mode restoreMode, app string, memMB int) (checkpoint, reread, restore, output time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rt.cfg.KeepLimits, rt.cfg.KeepMemoryLimit = mode.keepLimits, mode.keepMemory
	setShmemHugePages(b, mode.hugePages)
	con := newConsole(b)
	spec := newSpec(b, rt, "bench-modes", con.path, app)
	spec.MemoryMB = memMB
	if err := rt.Boot(ctx, spec); err != nil {
		b.Fatal(err)
	}
	waitFor(b, 2*time.Minute, "output", func() bool { return len(numbers(con.snapshot())) >= 2 })
	image := b.TempDir()
	begin := time.Now()
	if err := rt.Checkpoint(ctx, spec.ID, image); err != nil {
		b.Fatal(err)
	}
	checkpoint = time.Since(begin)
	begin = time.Now()
	readDir(b, image)
	reread = time.Since(begin)
	before := len(numbers(con.settle(20 * time.Millisecond)))
	if mode.ahead {
		createAhead(b, rt, spec)
	}
	begin = time.Now()
	if mode.ahead {
		restoreInto(b, rt, spec, image)
	} else if err := rt.Restore(ctx, spec, image); err != nil {
		b.Fatal(err)
	}
	restore = time.Since(begin)
	waitFor(b, time.Minute, "output after restore", func() bool { return len(numbers(con.snapshot())) > before })
	output = time.Since(begin)
	if err := rt.Kill(ctx, spec.ID); err != nil {
		b.Fatal(err)
	}
	return checkpoint, reread, restore, output
}

// createAhead runs "runsc create" for spec, with its console, and lifts
// the CPU quota runsc gave the new sandbox's cgroup.
func createAhead(b *testing.B, rt *Runtime, spec runtime.Spec) {
	b.Helper()
	if err := writeConfig(spec); err != nil {
		b.Fatal(err)
	}
	// The Checkpoint before marked the ID gone; a sandbox exists again, so
	// the Kill after must ask runsc (else it leaks the sandbox).
	rt.takeGone(spec.ID)
	console, err := openConsole(spec.Console)
	if err != nil {
		b.Fatal(err)
	}
	defer console.Close()
	cmd := rt.command(context.Background(), append(rt.bundleFlags(spec.Bundle), networkFlag(spec.NetNS)), "create", "--bundle="+spec.Bundle, spec.ID)
	cmd.Stdout, cmd.Stderr = console, console
	if err := cmd.Run(); err != nil {
		b.Fatalf("runsc create: %v: %s", err, logTail(filepath.Join(spec.Bundle, logFile)))
	}
	if err := setCPUQuota(cgroupDir("cpu", spec.ID), 0); err != nil {
		b.Fatal(err)
	}
}

// restoreInto runs "runsc restore" into the sandbox createAhead made, then
// puts the quota back.
func restoreInto(b *testing.B, rt *Runtime, spec runtime.Spec, image string) {
	b.Helper()
	console, err := openConsole(spec.Console)
	if err != nil {
		b.Fatal(err)
	}
	defer console.Close()
	cmd := rt.command(context.Background(), append(rt.bundleFlags(spec.Bundle), networkFlag(spec.NetNS)), "restore", rt.restoreArgs(spec, image)...)
	cmd.Stdout, cmd.Stderr = console, console
	if err := cmd.Run(); err != nil {
		b.Fatalf("runsc restore into a created sandbox: %v: %s", err, logTail(filepath.Join(spec.Bundle, logFile)))
	}
	if err := setCPUQuota(cgroupDir("cpu", spec.ID), spec.CPUs); err != nil {
		b.Fatal(err)
	}
}

// readDir reads every file in dir once.
func readDir(b *testing.B, dir string) {
	b.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for _, e := range entries {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			b.Fatal(err)
		}
		for {
			n, err := f.Read(buf)
			if n == 0 || err != nil {
				break
			}
		}
		f.Close()
	}
}

// setShmemHugePages sets the host's shmem huge page policy to "advise"
// (on) or "never" (off) and puts the original back when the benchmark ends.
func setShmemHugePages(b *testing.B, on bool) {
	b.Helper()
	cur, err := ShmemHugePages(ShmemEnabledPath)
	if err != nil {
		b.Skipf("no transparent huge pages: %v", err)
	}
	want := map[bool]string{true: "advise", false: "never"}[on]
	if cur == want {
		return
	}
	if err := os.WriteFile(ShmemEnabledPath, []byte(want), 0o644); err != nil {
		b.Fatalf("setting %s to %s: %v", ShmemEnabledPath, want, err)
	}
	b.Cleanup(func() { os.WriteFile(ShmemEnabledPath, []byte(cur), 0o644) })
}
