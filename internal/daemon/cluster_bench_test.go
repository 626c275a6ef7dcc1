package daemon_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/torpor-dev/torpor/internal/bench"
	"github.com/torpor-dev/torpor/internal/model"
)

// BenchmarkClusterMove measures what a move costs a suspended machine with
// 256 MiB resident (internal/bench's app, ~0.1 s and ~2 s init): the drain that
// copies its snapshot to another host, the resume there and the whole
// move-and-resume to the app's first HTTP byte, side by side with a cold
// start of the same app on that host (to its first byte), alternating in
// one run. It prints a table; it asserts no time.
//
//	go test -tags faults -run '^$' -bench ClusterMove -benchtime 5x ./internal/daemon/
func BenchmarkClusterMove(b *testing.B) {
	for _, init := range []string{"0.1", "2"} {
		b.Run("init="+init+"s", func(b *testing.B) { benchMove(b, init) })
	}
}

func benchMove(b *testing.B, initSeconds string) {
	tc := newTestCluster(b, false)
	app := tc.app("bmove")
	cfg := model.MachineConfig{
		Image: rootfs,
		Init:  model.InitConfig{Exec: []string{"python3", "-c", bench.AppSource}},
		Env:   map[string]string{"INIT_SECONDS": initSeconds, "RESIDENT_MB": "256", "PORT": "8080"},
		Guest: model.Guest{CPUs: 1, MemoryMB: 512},
	}
	if err := tc.hosts[0].c.CordonHost(ctx(b), "h2", true); err != nil { // moves go between h0 and h1
		b.Fatal(err)
	}
	m := tc.createOn(0, app, "h0", cfg)
	waitFirstByte(b, tc, app, m.ID)
	var move, resume, total, cold []time.Duration
	var size int64
	from, to := 0, 1
	for b.Loop() {
		// Move and resume: drain the machine's host, start it on the other.
		if err := tc.hosts[from].c.Suspend(ctx(b), app, m.ID); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		report, err := tc.hosts[from].c.DrainHost(ctx(b), fmt.Sprintf("h%d", from))
		if err != nil || len(report.Moves) != 1 || report.Moves[0].Snapshot != "carried" {
			b.Fatalf("drain: %+v %v", report, err)
		}
		t1 := time.Now()
		target := report.Moves[0].To
		resp, err := tc.hosts[to].c.Start(ctx(b), app, m.ID)
		if err != nil || !resp.FromSnapshot {
			b.Fatalf("resume on %s: %+v %v", target, resp, err)
		}
		t2 := time.Now()
		waitFirstByte(b, tc, app, m.ID)
		t3 := time.Now()
		move, resume, total = append(move, t1.Sub(t0)), append(resume, t2.Sub(t1)), append(total, t3.Sub(t0))
		evs := clusterEvents(b, tc, to, app, m.ID)
		for _, e := range evs {
			if d := e.Suspend(); d != nil && d.SizeBytes > 0 {
				size = d.SizeBytes
				break
			}
		}
		for _, e := range evs {
			if d := e.Start(); d != nil && d.FromSnapshot && d.ResumePhases != nil {
				b.Logf("resume on %s: %+v, whole %d ms", target, *d.ResumePhases, d.DurationMS)
				break
			}
		}
		tc.hosts[to].c.CordonHost(ctx(b), fmt.Sprintf("h%d", from), false)
		// Cold start on the same host: stop (drops the snapshot), start.
		if err := tc.hosts[to].c.Stop(ctx(b), app, m.ID, model.StopRequest{}); err != nil {
			b.Fatal(err)
		}
		t4 := time.Now()
		if _, err := tc.hosts[to].c.Start(ctx(b), app, m.ID); err != nil {
			b.Fatal(err)
		}
		waitFirstByte(b, tc, app, m.ID)
		cold = append(cold, time.Since(t4))
		from, to = to, from
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\nsuspended machine, app init ~%s s, 256 MiB resident, snapshot %.0f MiB, %d runs: p50 / p95 ms\n", initSeconds, float64(size)/(1<<20), len(total))
	fmt.Fprintln(tw, "drain (copy the snapshot to the other host, adopt)\tresume there\tmove + resume, to first byte\tcold start there, to first byte\tcold / move+resume")
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.1f×\n", pp(move), pp(resume), pp(total), pp(cold),
		millis(percentile(cold, 50))/millis(percentile(total, 50)))
	tw.Flush()
	b.ReportMetric(millis(percentile(total, 50)), "move+resume-p50-ms")
	b.ReportMetric(millis(percentile(cold, 50)), "cold-p50-ms")
}

func pp(d []time.Duration) string {
	return fmt.Sprintf("%.0f / %.0f", millis(percentile(d, 50)), millis(percentile(d, 95)))
}

func clusterEvents(b *testing.B, tc *testCluster, via int, app, id string) []model.Event {
	evs, err := tc.hosts[via].c.Events(ctx(b), app, id)
	if err != nil {
		b.Fatal(err)
	}
	return evs
}

// waitFirstByte waits until the machine's app answers on its private address.
func waitFirstByte(b *testing.B, tc *testCluster, app, id string) {
	b.Helper()
	m, err := tc.hosts[0].c.GetMachine(ctx(b), app, id)
	if err != nil {
		b.Fatal(err)
	}
	cl := http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := cl.Get("http://" + m.PrivateIP + ":8080/")
		if err == nil {
			var st map[string]any
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("machine %s never answered: %v", id, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
