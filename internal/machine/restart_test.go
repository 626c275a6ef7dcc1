package machine

import (
	"context"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// restartEnv is an env whose restart policy waits backoff, doubling up to
// backoffMax, and calls a run of stable long stable.
func restartEnv(t *testing.T, backoff, backoffMax, stable time.Duration) *env {
	e := newEnv(t)
	e.cfg.RestartBackoff, e.cfg.RestartBackoffMax, e.cfg.RestartStableAfter = backoff, backoffMax, stable
	e.restart()
	return e
}

func (e *env) createRestarting(restart *model.RestartPolicy) model.Machine {
	e.t.Helper()
	cfg := e.config()
	cfg.Restart = restart
	mc, err := e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: cfg})
	e.must(err)
	return mc
}

// waitBoot waits until machine id runs in boot generation gen and returns
// when it got there.
func (e *env) waitBoot(id string, gen uint64, within time.Duration) time.Time {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for {
		mc := e.get(id)
		if mc.BootGeneration >= gen && mc.State == model.StateStarted {
			if mc.BootGeneration > gen {
				e.t.Fatalf("machine %s at boot generation %d, want %d", id, mc.BootGeneration, gen)
			}
			return time.Now()
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("machine %s not started in generation %d within %v: %s gen %d", id, gen, within, mc.State, mc.BootGeneration)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// restartEvents returns the machine's restart events, oldest first.
func (e *env) restartEvents(id string) []model.Event {
	e.t.Helper()
	evs, err := e.m.Events(context.Background(), "app", id)
	e.must(err)
	var out []model.Event
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Type == model.EventRestart {
			out = append(out, evs[i])
		}
	}
	return out
}

// TestRestartPolicyHonoursMaxRetriesWithBackoff is issue 17's F11 on the
// fake runtime: a process that fails at once is restarted
// restart.max_retries times, each restart waiting twice as long as the one
// before (capped), then the machine stays stopped and an event says the
// policy gave up. Before the fix it was restarted at once, for ever.
func TestRestartPolicyHonoursMaxRetriesWithBackoff(t *testing.T) {
	e := restartEnv(t, 40*time.Millisecond, 100*time.Millisecond, time.Hour)
	mc := e.createRestarting(&model.RestartPolicy{Policy: "on-failure", MaxRetries: 3})
	for gen := uint64(1); gen <= 4; gen++ {
		if gen > 1 {
			e.waitBoot(mc.ID, gen, 5*time.Second)
		}
		e.rt.Exit(sandboxID(mc.ID), 1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := e.m.Wait(ctx, "app", mc.ID, []model.State{model.StateStopped})
	e.must(err)
	time.Sleep(300 * time.Millisecond) // longer than any backoff: no fifth boot comes
	if got := e.get(mc.ID); got.State != model.StateStopped || got.BootGeneration != 4 {
		t.Fatalf("after 3 restarts and a 4th failure: %s gen %d, want stopped gen 4", got.State, got.BootGeneration)
	}
	var pending []int64
	var gaveUp bool
	for _, ev := range e.restartEvents(mc.ID) {
		switch ev.Status {
		case "pending":
			pending = append(pending, int64(ev.Field("backoff_ms").(float64)))
		case "failed":
			gaveUp = true
			if ev.Field("max_retries") != float64(3) {
				t.Fatalf("give-up event = %+v", ev)
			}
		}
	}
	if want := []int64{40, 80, 100}; len(pending) != 3 || pending[0] != want[0] || pending[1] != want[1] || pending[2] != want[2] {
		t.Fatalf("backoffs = %v ms, want %v", pending, want)
	}
	if !gaveUp {
		t.Fatal("no restart event says the policy gave up")
	}
	if ev := e.lastEvent(mc.ID, model.EventExit); ev.Field("exit_event").(map[string]any)["restarting"] != false {
		t.Fatalf("last exit event says restarting: %+v", ev)
	}
}

// TestRestartSeriesResetsAfterAStableRun: a run that lasted
// RestartStableAfter ends the series, so its exit is restarted after the
// first backoff again and the retries count anew.
func TestRestartSeriesResetsAfterAStableRun(t *testing.T) {
	e := restartEnv(t, 30*time.Millisecond, time.Second, 200*time.Millisecond)
	mc := e.createRestarting(&model.RestartPolicy{Policy: "always", MaxRetries: 2})
	e.rt.Exit(sandboxID(mc.ID), 0)
	e.waitBoot(mc.ID, 2, 5*time.Second)
	e.rt.Exit(sandboxID(mc.ID), 0)
	e.waitBoot(mc.ID, 3, 5*time.Second)
	time.Sleep(250 * time.Millisecond) // a stable run
	e.rt.Exit(sandboxID(mc.ID), 0)
	e.waitBoot(mc.ID, 4, 5*time.Second) // a third restart: the series began again
	var backoffs []int64
	for _, ev := range e.restartEvents(mc.ID) {
		if ev.Status == "pending" {
			backoffs = append(backoffs, int64(ev.Field("backoff_ms").(float64)))
		}
	}
	if len(backoffs) != 3 || backoffs[0] != 30 || backoffs[1] != 60 || backoffs[2] != 30 {
		t.Fatalf("backoffs = %v ms, want [30 60 30] (reset after the stable run)", backoffs)
	}
}

// TestStopCancelsTheWaitingRestart: a stop of a machine waiting for its
// restart cancels it; the machine stays stopped.
func TestStopCancelsTheWaitingRestart(t *testing.T) {
	e := restartEnv(t, 200*time.Millisecond, time.Second, time.Hour)
	mc := e.createRestarting(&model.RestartPolicy{Policy: "always"})
	e.rt.Exit(sandboxID(mc.ID), 0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := e.m.Wait(ctx, "app", mc.ID, []model.State{model.StateStopped})
	e.must(err)
	e.must(e.m.Stop(context.Background(), "app", mc.ID, model.StopRequest{}))
	time.Sleep(400 * time.Millisecond)
	if got := e.get(mc.ID); got.State != model.StateStopped || got.BootGeneration != 1 {
		t.Fatalf("after a stop during the backoff: %s gen %d, want stopped gen 1", got.State, got.BootGeneration)
	}
	// A start afterwards begins a fresh series.
	e.start(mc.ID)
	e.rt.Exit(sandboxID(mc.ID), 0)
	e.waitBoot(mc.ID, 3, 5*time.Second)
}
