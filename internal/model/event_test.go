package model

import "testing"

func TestNewestPicksLatestOfTypeAndStatus(t *testing.T) {
	evs := []Event{
		{Type: "resume", Status: "started", Timestamp: 5, Request: &StartDetails{BootGeneration: 1}},
		{Type: "resume", Status: "started", Timestamp: 9, Request: &StartDetails{BootGeneration: 2}},
		{Type: "resume", Status: "failed", Timestamp: 12},
		{Type: "start", Status: "started", Timestamp: 11},
	}
	ev, ok := Newest(evs, "resume", "started")
	if !ok || ev.Field("boot_generation") != 2.0 {
		t.Errorf("newest = %+v, %v", ev, ok)
	}
	if _, ok := Newest(evs, "suspend", "suspended"); ok {
		t.Error("found a suspend event that is not there")
	}
}
