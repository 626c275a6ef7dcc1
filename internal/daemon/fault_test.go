//go:build faults

package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"syscall"
	"testing"
	"time"
)

func TestParseFaults(t *testing.T) {
	rules, err := parseFaults("resume/after-claim, suspend/after-freeze:kill@2,suspend/before-checkpoint:kill-sandbox+30ms")
	if err != nil {
		t.Fatal(err)
	}
	want := []faultRule{
		{point: "resume/after-claim", action: faultExit, nth: 1},
		{point: "suspend/after-freeze", action: faultKill, nth: 2},
		{point: "suspend/before-checkpoint", action: faultKillSandbox, nth: 1, delay: 30 * time.Millisecond},
	}
	if len(rules) != len(want) {
		t.Fatalf("rules = %+v", rules)
	}
	for i, r := range rules {
		if *r != want[i] {
			t.Errorf("rule %d = %+v, want %+v", i, *r, want[i])
		}
	}
	for _, bad := range []string{"no/such-point", "resume/after-claim:explode", "resume/after-claim@0", "resume/after-claim+soon", "resume/after-claim:exit+1s"} {
		if _, err := parseFaults(bad); err == nil {
			t.Errorf("parseFaults(%q) accepted", bad)
		}
	}
	if rules, err := parseFaults(""); err != nil || rules != nil {
		t.Fatalf("empty spec = %v, %v", rules, err)
	}
}

func TestFaultFuncFiresOnNthHitOnce(t *testing.T) {
	rules, _ := parseFaults("stop/after-signal:kill-sandbox@2")
	var killed []string
	f := faultFunc(rules, func(_ context.Context, id string) (int, error) {
		killed = append(killed, id)
		return 1, nil
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, id := range []string{"a", "b", "c"} {
		f("stop/after-signal", id)
		f("stop/after-kill", id)
	}
	if len(killed) != 1 || killed[0] != "b" {
		t.Fatalf("killed %v, want only b (the 2nd hit)", killed)
	}
	if faultFunc(nil, nil, nil) != nil {
		t.Fatal("no rules must mean no fault function at all")
	}
}

// TestFailRules: a store fail point takes the fail action (its default) and
// fails its Nth write once, with ENOSPC; fail goes with fail points only.
func TestFailRules(t *testing.T) {
	rules, err := parseFaults("store/commit-suspended@2,store/claim:fail")
	if err != nil {
		t.Fatal(err)
	}
	if rules[0].action != faultFail || rules[0].nth != 2 || rules[1].action != faultFail {
		t.Fatalf("rules = %+v %+v", *rules[0], *rules[1])
	}
	for _, bad := range []string{"store/claim:kill", "store/claim:fail+1s", "resume/after-claim:fail"} {
		if _, err := parseFaults(bad); err == nil {
			t.Errorf("parseFaults(%q) accepted", bad)
		}
	}
	f := failFunc(rules, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var failed []int
	for i := 1; i <= 3; i++ {
		if err := f("store/commit-suspended", "m"); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fail error = %v, want ENOSPC", err)
			}
			failed = append(failed, i)
		}
	}
	if len(failed) != 1 || failed[0] != 2 {
		t.Fatalf("failed writes %v, want only the 2nd", failed)
	}
}
