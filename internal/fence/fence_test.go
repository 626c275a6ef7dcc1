package fence

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	ttl := 8 * time.Second // margin 2s
	t0 := time.Unix(1000, 0)
	cases := []struct {
		name  string
		now   time.Time
		v     View
		act   Action
		until time.Time
	}{
		{"alive, talking, renewed", t0.Add(time.Second), View{Renewed: t0, Heard: t0.Add(time.Second)}, Wait, t0.Add(6 * time.Second)},
		{"alive, talking, lease stale: the daemon fences itself", t0.Add(7 * time.Second), View{Renewed: t0, Heard: t0.Add(6500 * time.Millisecond)}, Wait, t0.Add(10500 * time.Millisecond)},
		{"alive, silent for TTL/2 (hung)", t0.Add(6 * time.Second), View{Renewed: t0, Heard: t0.Add(time.Second)}, Fence, time.Time{}},
		{"alive, silent for TTL/2 after the deadline", t0.Add(7 * time.Second), View{Renewed: t0, Heard: t0.Add(3 * time.Second)}, Fence, time.Time{}},
		{"died, before the deadline", t0.Add(3 * time.Second), View{Renewed: t0, Heard: t0.Add(3 * time.Second), Gone: true}, Wait, t0.Add(6 * time.Second)},
		{"died, at the deadline", t0.Add(6 * time.Second), View{Renewed: t0, Heard: t0.Add(time.Second), Gone: true}, Fence, time.Time{}},
		{"died and replaced", t0.Add(6 * time.Second), View{Renewed: t0, Gone: true, Replaced: true}, Exit, time.Time{}},
		{"stopped cleanly", t0.Add(9 * time.Second), View{Renewed: t0, Stopped: true, Gone: true}, Exit, time.Time{}},
		{"died before any lease", t0, View{Gone: true}, Exit, time.Time{}},
		{"no lease yet", t0, View{Heard: t0}, Wait, t0.Add(2 * time.Second)},
	}
	for _, c := range cases {
		act, until := Decide(c.now, c.v, ttl)
		if act != c.act || !until.Equal(c.until) {
			t.Errorf("%s: %s until %s, want %s until %s", c.name, act, until.Sub(t0), c.act, c.until.Sub(t0))
		}
		if act == Fence && c.v.Gone && !c.now.Before(c.v.Renewed.Add(ttl)) {
			t.Errorf("%s: fence at or after the lease expired", c.name)
		}
	}
}

// rig runs Watch on a pipe with fake sandboxes.
type rig struct {
	t      *testing.T
	dir    string
	w      *io.PipeWriter
	mu     sync.Mutex
	frozen []string
	held   bool
	log    bytes.Buffer
	done   chan error
}

func newRig(t *testing.T, ttl time.Duration) *rig {
	r := &rig{t: t, dir: t.TempDir(), done: make(chan error, 1)}
	pr, pw := io.Pipe()
	r.w = pw
	cfg := Config{DataDir: r.dir, TTL: ttl, In: pr, Log: &syncWriter{w: &r.log, mu: &r.mu},
		LockHeld: func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.held },
		List:     func(context.Context) ([]string, error) { return []string{"torpor-a", "torpor-b"}, nil },
		Freeze: func(_ context.Context, id string) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.frozen = append(r.frozen, id)
			return nil
		}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	go func() { r.done <- Watch(ctx, cfg) }()
	return r
}

type syncWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (r *rig) renewed(at time.Time) { fmt.Fprintf(r.w, "renewed %d\n", at.UnixNano()) }

func (r *rig) wait() time.Time {
	select {
	case err := <-r.done:
		if err != nil {
			r.t.Fatalf("watch: %v", err)
		}
	case <-time.After(10 * time.Second):
		r.t.Fatal("the watchdog did not exit")
	}
	return time.Now()
}

func (r *rig) frozenNow() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.frozen)
}

func TestWatchDiedNotReplaced(t *testing.T) {
	ttl := 2 * time.Second // margin 1s
	r := newRig(t, ttl)
	renewed := time.Now()
	r.renewed(renewed)
	r.w.Close() // SIGKILL
	exited := r.wait()
	if got := r.frozenNow(); !slices.Equal(got, []string{"torpor-a", "torpor-b"}) {
		t.Fatalf("froze %v\n%s", got, r.log.String())
	}
	if at := exited.Sub(renewed); at < ttl-Margin(ttl) || at >= ttl {
		t.Fatalf("fenced %s after the renewal, want in [TTL-margin, TTL) = [%s, %s)", at, ttl-Margin(ttl), ttl)
	}
	m, ok, err := ReadMarker(r.dir)
	if err != nil || !ok || !slices.Equal(m.Sandboxes, []string{"torpor-a", "torpor-b"}) || m.FrozenAt.IsZero() {
		t.Fatalf("marker %+v %v %v", m, ok, err)
	}
}

func TestWatchDiedAndReplaced(t *testing.T) {
	r := newRig(t, 2*time.Second)
	r.renewed(time.Now())
	r.mu.Lock()
	r.held = true // a new daemon took the data directory
	r.mu.Unlock()
	r.w.Close()
	r.wait()
	if got := r.frozenNow(); len(got) != 0 {
		t.Fatalf("froze %v after the daemon was replaced", got)
	}
	if _, ok, _ := ReadMarker(r.dir); ok {
		t.Fatal("marker written")
	}
}

func TestWatchAliveThenStops(t *testing.T) {
	ttl := 2 * time.Second
	r := newRig(t, ttl)
	end := time.Now().Add(2 * ttl)
	for time.Now().Before(end) { // alive, renewing: never fenced
		r.renewed(time.Now())
		time.Sleep(ttl / 4)
	}
	if got := r.frozenNow(); len(got) != 0 {
		t.Fatalf("froze %v while the daemon renewed its lease", got)
	}
	fmt.Fprintln(r.w, "stop")
	r.w.Close()
	r.wait()
	if got := r.frozenNow(); len(got) != 0 {
		t.Fatalf("froze %v after a clean stop", got)
	}
}

func TestWatchHung(t *testing.T) {
	ttl := 2 * time.Second
	r := newRig(t, ttl)
	renewed := time.Now()
	r.renewed(renewed) // then silence, pipe open
	deadline := time.Now().Add(5 * time.Second)
	for len(r.frozenNow()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("a hung daemon's sandboxes not frozen\n%s", r.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if at := time.Since(renewed); at >= ttl {
		t.Fatalf("fenced %s after the renewal, at or after the TTL %s", at, ttl)
	}
	r.w.Close()
	r.wait()
}
