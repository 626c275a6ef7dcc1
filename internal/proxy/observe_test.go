package proxy

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// recorder is an Observer that writes down every call.
type recorder struct {
	mu    sync.Mutex
	calls []string
}

func (r *recorder) add(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf(format, args...))
}

func (r *recorder) Request(app string, port, code int) { r.add("request %s %d %d", app, port, code) }
func (r *recorder) Connection(app string, port int)    { r.add("connection %s %d", app, port) }
func (r *recorder) Waiting(app string, delta int)      { r.add("waiting %s %+d", app, delta) }
func (r *recorder) Waited(app string, d time.Duration, timedOut bool) {
	r.add("waited %s timedout=%v", app, timedOut)
}
func (r *recorder) Woke(app string, d time.Duration, result string) { r.add("woke %s %s", app, result) }

func (r *recorder) has(t *testing.T, want ...string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range want {
		if !slices.Contains(r.calls, w) {
			t.Errorf("observer was not told %q; calls: %q", w, r.calls)
		}
	}
}

// TestObserverSeesWakeAndCodes checks that a request that wakes a
// suspended machine is reported as waiting, woken and answered 200.
func TestObserverSeesWakeAndCodes(t *testing.T) {
	f := newFleet(t)
	hp := freePort(t)
	f.add("app1", "m1", model.StateSuspended, false, service(hp))
	obs := &recorder{}
	startProxy(t, f, Config{Observer: obs})
	if code, _ := get(t, client(t), at(hp, "/")); code != 200 {
		t.Fatalf("got %d", code)
	}
	obs.has(t, "waiting app1 +1", "waiting app1 -1", "waited app1 timedout=false", "woke app1 started",
		"request app1 8080 200")
}

// TestObserverSeesWakeTimeout checks that a wake that does not finish in
// time is reported as a timeout, with the request's 503.
func TestObserverSeesWakeTimeout(t *testing.T) {
	f := newFleet(t)
	hp := freePort(t)
	f.add("app1", "m1", model.StateSuspended, false, service(hp))
	f.startHook = func(ctx context.Context, id string) error {
		<-ctx.Done()
		return ctx.Err()
	}
	obs := &recorder{}
	startProxy(t, f, Config{WakeTimeout: 200 * time.Millisecond, Observer: obs})
	if code, _ := get(t, client(t), at(hp, "/")); code != 503 {
		t.Fatalf("got %d", code)
	}
	eventually(t, "the wake to end", func() bool {
		obs.mu.Lock()
		defer obs.mu.Unlock()
		return slices.Contains(obs.calls, "woke app1 timeout")
	})
	obs.has(t, "request app1 8080 503")
}
