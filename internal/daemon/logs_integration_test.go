package daemon_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/logs"
)

// TestLogsLoseNothingAcrossSuspendResumeAndRestarts has a machine print
// numbered lines continuously through five suspend/resume cycles and two
// daemon restarts, and checks through the API that every line arrived exactly
// once, in order, with consecutive sequence numbers.
func TestLogsLoseNothingAcrossSuspendResumeAndRestarts(t *testing.T) {
	d := newDaemon(t)
	m := d.create(counterConfig(map[string]string{"TICK": "0.005"}))
	d.waitCount(m.ID, 20)
	for i := 0; i < 5; i++ {
		d.suspend(m.ID)
		time.Sleep(50 * time.Millisecond)
		d.start(m.ID)
		d.waitCount(m.ID, len(d.counts(m.ID))+20)
		if i == 1 || i == 3 {
			d.stop() // the machine keeps printing while no daemon drains its console
			time.Sleep(300 * time.Millisecond)
			d.run()
		}
	}
	d.suspend(m.ID)

	var recs []logs.Record
	err := d.c.Logs(ctx(t), d.app, m.ID, client.LogQuery{Limit: 10000}, func(r logs.Record) error {
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	next := 1
	for i, r := range recs {
		if i > 0 && r.Seq != recs[i-1].Seq+1 {
			t.Fatalf("sequence jumps from %d to %d", recs[i-1].Seq, r.Seq)
		}
		if r.Partial || r.Dropped > 0 {
			t.Fatalf("record %+v is partial or reports dropped lines", r)
		}
		var n int
		if _, err := fmt.Sscanf(r.Line, "count %d", &n); err != nil {
			continue // the app's "ready" line
		}
		if n != next {
			t.Fatalf("line %q where count %d was due: a line was lost, repeated or reordered", r.Line, next)
		}
		next++
	}
	if next < 150 {
		t.Fatalf("only %d numbered lines", next-1)
	}
	t.Logf("%d lines, every one exactly once and in order", next-1)

	// Following the log streams what is appended later.
	d.start(m.ID)
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var followed []logs.Record
	err = d.c.Logs(c, d.app, m.ID, client.LogQuery{FromSeq: recs[len(recs)-1].Seq + 1, Follow: true}, func(r logs.Record) error {
		followed = append(followed, r)
		if len(followed) == 10 {
			cancel()
		}
		return nil
	})
	if err != nil || len(followed) < 10 || followed[0].Seq != recs[len(recs)-1].Seq+1 {
		t.Fatalf("follow: %v, %d records", err, len(followed))
	}
}
