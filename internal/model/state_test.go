package model

import (
	"encoding/json"
	"testing"
)

func TestTransitionTable(t *testing.T) {
	// Every state but created can be reached, and every state but
	// destroyed can be left (a machine is never stuck).
	reached := map[State]bool{}
	for _, from := range States {
		if from != StateDestroyed && len(transitions[from]) == 0 {
			t.Errorf("%s has no way out", from)
		}
		for _, to := range transitions[from] {
			if !to.Valid() {
				t.Errorf("%s → unknown state %q", from, to)
			}
			reached[to] = true
		}
	}
	for _, s := range States {
		if s != StateCreated && !reached[s] {
			t.Errorf("%s cannot be reached", s)
		}
	}
	for _, c := range []struct {
		from, to State
		ok       bool
	}{
		{StateSuspended, StateStarting, true},  // resume
		{StateSuspending, StateStarted, true},  // failed or cancelled suspend
		{StateStarted, StateStarted, true},     // adoption: not a transition
		{StateCreated, StateSuspended, false},  // a snapshot out of nowhere
		{StateStopped, StateSuspended, false},  // ditto
		{StateSuspended, StateStarted, false},  // a resume always passes through starting
		{StateDestroyed, StateStarting, false}, // destroyed is final
		{StateDestroying, StateStopped, false},
		{State("bogus"), State("bogus"), false},
	} {
		if got := c.from.CanBecome(c.to); got != c.ok {
			t.Errorf("%s.CanBecome(%s) = %v, want %v", c.from, c.to, got, c.ok)
		}
		if err := c.from.CheckTransition("m1", c.to); (err == nil) != c.ok || err != nil && KindOf(err) != KindInternal {
			t.Errorf("CheckTransition(%s → %s) = %v", c.from, c.to, err)
		}
	}
}

func TestEventDetailsRoundTrip(t *testing.T) {
	skew := 1.5
	in := []Event{
		{ID: "1", Type: EventResume, Status: "started", Request: &StartDetails{FromSnapshot: true, SnapshotID: "s",
			BootGeneration: 3, DurationMS: 90, ResumePhases: &ResumePhases{ClaimMS: 2, RuntimeRestoreMS: 70},
			AppNotice: &AppNotice{ResumeCount: 4, ClockSkewMS: &skew, PostResume: &HookResult{Status: "ok"}}}},
		{ID: "2", Type: EventResume, Status: "started", Request: &StartDetails{Reason: "image changed", BootGeneration: 4}},
		{ID: "3", Type: EventSuspend, Status: "failed", Request: &SuspendDetails{Error: "disk full", MachineState: StateStarted}},
		{ID: "4", Type: EventStop, Status: "stopped", Request: &StopDetails{SnapshotDiscarded: true}},
		{ID: "5", Type: EventDestroy, Status: "destroyed"},
		{ID: "6", Type: "something-new", Status: "x", Request: &RawDetails{"k": "v"}},
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out []Event
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	again, _ := json.Marshal(out)
	if string(again) != string(b) {
		t.Fatalf("round trip changed the events:\n%s\n%s", b, again)
	}
	if d := out[0].Start(); d == nil || d.ResumePhases.RuntimeRestoreMS != 70 || *d.ClockSkewMS != 1.5 || d.PostResume.Status != "ok" {
		t.Errorf("resume details = %+v", out[0].Request)
	}
	if d := out[1].Start(); d == nil || d.ResumePhases != nil || d.Reason != "image changed" {
		t.Errorf("fallback details = %+v", out[1].Request)
	}
	if out[0].Field("post_resume.status") != "ok" || out[0].Field("claim_ms") != 2.0 || out[4].Request != nil {
		t.Errorf("fields: %v", out[0].Fields())
	}
	if _, ok := out[5].Request.(*RawDetails); !ok {
		t.Errorf("unknown type read as %T", out[5].Request)
	}
}
