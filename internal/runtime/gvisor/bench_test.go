package gvisor

import (
	"context"
	"testing"
	"time"
)

// heapApp is counterApp with 64 MiB of dirtied heap, the size of the app
// DESIGN.md's measurements were made with.
const heapApp = `
import sys, time
heap = bytearray(64 << 20)
for j in range(0, len(heap), 4096):
    heap[j] = 1 + j % 251
i = 0
while True:
    print(i, flush=True)
    i += 1
    time.sleep(0.05)
`

// BenchmarkLifecycle times, for the counter app (and one with a 64 MiB
// heap): Boot until Boot returns and until the first output, Checkpoint,
// Restore until it returns and until the next output, and the image size.
// The background variants restore with --background (see restoreArgs).
func BenchmarkLifecycle(b *testing.B) {
	for _, bc := range []struct {
		name       string
		app        string
		background bool
	}{
		{"counter", counterApp, false},
		{"counter/background", counterApp, true},
		{"heap64", heapApp, false},
		{"heap64/background", heapApp, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			rt := newTestRuntime(b)
			rt.cfg.BackgroundRestore = bc.background
			benchLifecycle(b, rt, bc.app)
		})
	}
}

// lifecycleTimes are one iteration's measurements.
type lifecycleTimes struct {
	boot, bootOutput, checkpoint, restore, restoreOutput time.Duration
	imageBytes                                           int64
}

func benchLifecycle(b *testing.B, rt *Runtime, app string) {
	var sum lifecycleTimes
	for i := 0; i < b.N; i++ {
		t := lifecycleOnce(b, rt, app)
		sum.boot += t.boot
		sum.bootOutput += t.bootOutput
		sum.checkpoint += t.checkpoint
		sum.restore += t.restore
		sum.restoreOutput += t.restoreOutput
		sum.imageBytes += t.imageBytes
	}
	n := float64(b.N)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / n }
	b.ReportMetric(ms(sum.boot), "boot-ms")
	b.ReportMetric(ms(sum.bootOutput), "boot-to-output-ms")
	b.ReportMetric(ms(sum.checkpoint), "checkpoint-ms")
	b.ReportMetric(ms(sum.restore), "restore-ms")
	b.ReportMetric(ms(sum.restoreOutput), "restore-to-output-ms")
	b.ReportMetric(float64(sum.imageBytes)/n/(1<<20), "image-MiB")
}

// lifecycleOnce boots, checkpoints, restores and kills one sandbox.
func lifecycleOnce(b *testing.B, rt *Runtime, app string) lifecycleTimes {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	con := newConsole(b)
	spec := newSpec(b, rt, "bench", con.path, app)
	var t lifecycleTimes
	var err error
	seen := func(n int) func() bool { return func() bool { return len(numbers(con.snapshot())) >= n } }

	start := time.Now()
	if err := rt.Boot(ctx, spec); err != nil {
		b.Fatal(err)
	}
	t.boot = time.Since(start)
	waitFor(b, time.Minute, "first output", seen(1))
	t.bootOutput = time.Since(start)
	waitFor(b, time.Minute, "some output", seen(3))

	image := b.TempDir()
	start = time.Now()
	if err := rt.Checkpoint(ctx, spec.ID, image); err != nil {
		b.Fatal(err)
	}
	t.checkpoint = time.Since(start)
	t.imageBytes = dirSize(b, image)
	before := numbers(con.settle(100 * time.Millisecond))

	start = time.Now()
	if err = rt.Restore(ctx, spec, image); err != nil {
		b.Fatal(err)
	}
	t.restore = time.Since(start)
	waitFor(b, time.Minute, "output after restore", seen(len(before)+1))
	t.restoreOutput = time.Since(start)
	if got, want := numbers(con.snapshot())[len(before)], before[len(before)-1]+1; got != want {
		b.Fatalf("counter after restore = %d, want %d", got, want)
	}
	if err := rt.Kill(ctx, spec.ID); err != nil {
		b.Fatal(err)
	}
	return t
}
