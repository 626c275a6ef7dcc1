package daemon_test

import (
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// TestResumeThawsEveryProcess checks that a resume continues every process
// the checkpoint froze, not only the app's init: the clock-check exec thaws
// them itself (kill -CONT -1 1) once the clock is right. The machine's init
// is a shell that prints, with a child shell that prints too, and both
// start sleep processes all the time (some are frozen mid-sleep).
func TestResumeThawsEveryProcess(t *testing.T) {
	d := newDaemon(t)
	cfg := counterConfig(nil)
	cfg.Init = model.InitConfig{Exec: []string{"/bin/sh", "-c",
		"(n=0; while :; do n=$((n+1)); echo \"child $n\"; sleep 0.02; done) & " +
			"n=0; while :; do n=$((n+1)); echo \"count $n\"; sleep 0.02; done"}}
	m := d.create(cfg)
	d.waitCount(m.ID, 10)
	for i := 0; i < 3; i++ {
		d.suspend(m.ID)
		children := d.childLines(m.ID)
		counts := len(d.counts(m.ID))
		if resp := d.start(m.ID); !resp.FromSnapshot {
			t.Fatalf("resume %d fell back to a cold start", i)
		}
		deadline := time.Now().Add(10 * time.Second)
		for d.childLines(m.ID) < children+5 || len(d.counts(m.ID)) < counts+5 {
			if time.Now().After(deadline) {
				t.Fatalf("resume %d: init printed %d lines and the child %d since the resume: a process stayed frozen",
					i, len(d.counts(m.ID))-counts, d.childLines(m.ID)-children)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if d := d.event(m.ID, model.EventResume).Start(); d == nil || d.AppNotice == nil || d.AppNotice.ThawError != "" {
			t.Fatalf("resume %d: event notice %+v", i, d)
		}
	}
}

// childLines counts the "child N" lines the machine printed.
func (d *daemon) childLines(id string) int {
	n := 0
	for _, l := range d.consoleLines(id) {
		if strings.HasPrefix(l, "child ") {
			n++
		}
	}
	return n
}
