package gvisor

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// heapAppOf is counterApp with mb MiB of dirtied heap.
func heapAppOf(mb int) string {
	return strings.Replace(heapApp, "64 << 20", fmt.Sprintf("%d << 20", mb), 1)
}

// BenchmarkCheckpointLive measures what an interruptible suspend costs:
// for a machine of 256 MiB with a 64 MiB heap and one of 1 GiB with a
// 768 MiB heap, the time until the sandbox is saved and gone, with the
// plain "runsc checkpoint" (gVisor stops the sandbox; wait for it, delete
// it) and with "runsc checkpoint --leave-running" then Kill (what a suspend
// does since a start may cancel it), in alternation on the same host in one
// run. It prints a table of the medians; the live-ms and plain-ms metrics
// are the means.
//
//	TORPOR_INTEGRATION=1 go test -run '^$' -bench BenchmarkCheckpointLive -benchtime 5x ./internal/runtime/gvisor/
func BenchmarkCheckpointLive(b *testing.B) {
	type row struct {
		name                 string
		plain, live, liveRun []time.Duration
		image                int64
	}
	var rows []*row
	for _, bc := range []struct {
		name       string
		memMB, mib int
	}{
		{"256MiB-machine/heap64", 256, 64},
		{"1GiB-machine/heap768", 1024, 768},
	} {
		r := &row{name: bc.name}
		rows = append(rows, r)
		b.Run(bc.name, func(b *testing.B) {
			rt := newTestRuntime(b)
			for i := 0; i < b.N; i++ {
				plain, _, _ := checkpointOnce(b, rt, heapAppOf(bc.mib), bc.memMB, false)
				live, saved, image := checkpointOnce(b, rt, heapAppOf(bc.mib), bc.memMB, true)
				r.plain, r.live, r.liveRun, r.image = append(r.plain, plain), append(r.live, live), append(r.liveRun, saved), image
			}
			b.ReportMetric(mean(r.plain), "plain-ms")
			b.ReportMetric(mean(r.live), "live-ms")
		})
	}
	var sb strings.Builder
	sb.WriteString("\n| machine | plain checkpoint, until gone (ms) | live checkpoint (ms) | live checkpoint + kill (ms) | image (MiB) | runs |\n|---|---|---|---|---|---|\n")
	for _, r := range rows {
		if len(r.plain) == 0 {
			continue
		}
		fmt.Fprintf(&sb, "| %s | %.0f | %.0f | %.0f | %.0f | %d |\n", r.name, median(r.plain), median(r.liveRun), median(r.live),
			float64(r.image)/(1<<20), len(r.plain))
	}
	b.Log(sb.String())
}

// checkpointOnce boots a frozen app and checkpoints it plainly or live
// (then kills it), returning the time until the sandbox was gone, the time
// the live save alone took and the image size.
func checkpointOnce(b *testing.B, rt *Runtime, app string, memMB int, live bool) (total, save time.Duration, image int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	con := newConsole(b)
	spec := newSpec(b, rt, "bench-live", con.path, app)
	spec.MemoryMB = memMB
	if err := rt.Boot(ctx, spec); err != nil {
		b.Fatal(err)
	}
	waitFor(b, 2*time.Minute, "output", func() bool { return len(numbers(con.snapshot())) >= 2 })
	if err := rt.SignalAll(ctx, spec.ID, "SIGSTOP"); err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	begin := time.Now()
	if live {
		if err := rt.CheckpointLive(ctx, spec.ID, dir); err != nil {
			b.Fatal(err)
		}
		save = time.Since(begin)
		if err := rt.Kill(ctx, spec.ID); err != nil {
			b.Fatal(err)
		}
	} else if err := rt.Checkpoint(ctx, spec.ID, dir); err != nil {
		b.Fatal(err)
	}
	total = time.Since(begin)
	return total, save, dirSize(b, dir)
}

func mean(ds []time.Duration) float64 {
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return float64(sum) / float64(len(ds)) / float64(time.Millisecond)
}

func median(ds []time.Duration) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[len(s)/2]) / float64(time.Millisecond)
}
