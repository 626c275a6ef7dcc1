package daemon_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/torpor-dev/torpor/internal/appconfig"
	"github.com/torpor-dev/torpor/internal/deploy"
	"github.com/torpor-dev/torpor/internal/model"
)

// BenchmarkDeployFirstRequest measures what prewarm buys: the app's machine
// is suspended, a new release is deployed, and one request goes through
// the proxy. With prewarm (the default) the deploy has started the machine
// on the new release, passed its checks and suspended it again, so the
// request resumes it; with --no-prewarm (Fly's behaviour) the deploy left
// it stopped, so the request cold-starts it and waits for its first check.
// Each iteration runs both, in turn, so that they meet the same host load.
//
//	TORPOR_INTEGRATION=1 go test -tags faults -run '^$' -bench DeployFirstRequest -benchtime 5x ./internal/daemon/
func BenchmarkDeployFirstRequest(b *testing.B) {
	d := newDaemon(b)
	dir, port := b.TempDir(), freePort(b)
	release := 0
	run := func(noPrewarm bool) (deployTook time.Duration, first time.Duration, resumed bool) {
		release++
		doc, err := os.ReadFile(d.flyToml(dir, port, fmt.Sprintf("r%d", release), false))
		if err != nil {
			b.Fatal(err)
		}
		app, _, err := appconfig.Parse(doc)
		if err != nil {
			b.Fatal(err)
		}
		begin := time.Now()
		if _, err := deploy.Deploy(context.Background(), d.c, app, deploy.Options{NoPrewarm: noPrewarm}); err != nil {
			b.Fatal(err)
		}
		deployTook = time.Since(begin)
		took, got, ev := d.firstRequest(port)
		if got != fmt.Sprintf("r%d", release) {
			b.Fatalf("first request answered by release %s, want r%d", got, release)
		}
		return deployTook, took, fromSnapshot(ev)
	}
	run(false) // the first deploy creates the machine
	var firsts, deploys [2][]time.Duration
	var resumes [2]int
	for b.Loop() {
		for mode, noPrewarm := range []bool{false, true} {
			for _, m := range d.appMachines() {
				if m.State == model.StateStarted {
					d.suspend(m.ID)
				}
			}
			dt, ft, resumed := run(noPrewarm)
			deploys[mode], firsts[mode] = append(deploys[mode], dt), append(firsts[mode], ft)
			if resumed {
				resumes[mode]++
			}
		}
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\none machine, suspended before each deploy, %d deploys per row: p50 / p95 ms\n", len(firsts[0]))
	fmt.Fprintln(tw, "deploy\tdeploy took\tfirst request after it\tfirst request resumed a snapshot")
	for mode, name := range []string{"prewarm (default)", "--no-prewarm (Fly)"} {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d of %d\n", name, pp(deploys[mode]), pp(firsts[mode]), resumes[mode], len(firsts[mode]))
	}
	tw.Flush()
	b.ReportMetric(millis(percentile(firsts[0], 50)), "prewarm-first-p50-ms")
	b.ReportMetric(millis(percentile(firsts[1], 50)), "noprewarm-first-p50-ms")
}
