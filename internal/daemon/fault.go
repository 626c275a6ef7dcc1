package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/torpor-dev/torpor/internal/machine"
)

// Fault injection for crash tests (TORPOR_FAULT). Never set in production:
// with it empty the manager gets no fault function at all.
//
// TORPOR_FAULT is a comma-separated list of rules, each
//
//	POINT[:ACTION][@N][+DELAY]
//
// POINT is one of machine.FaultPoints. ACTION is
//
//	exit          the daemon exits at once with status 75 (default)
//	kill          the daemon sends itself SIGKILL (a true kill -9)
//	kill-sandbox  SIGKILL to the machine's runsc sandbox process; the
//	              daemon goes on (a runtime crash)
//
// @N fires the rule at the Nth time the point is reached (default 1); each
// rule fires once. +DELAY (a Go duration; kill and kill-sandbox) kills that
// long after the point, while the operation goes on (e.g. during a
// checkpoint).

// faultExitCode is the exit status of a daemon stopped by the exit action.
const faultExitCode = 75

// Fault actions.
const (
	faultExit        = "exit"
	faultKill        = "kill"
	faultKillSandbox = "kill-sandbox"
)

// faultRule is one parsed rule of TORPOR_FAULT.
type faultRule struct {
	point  string
	action string
	nth    int
	delay  time.Duration
	hits   int
}

// parseFaults parses TORPOR_FAULT.
func parseFaults(spec string) ([]*faultRule, error) {
	var rules []*faultRule
	for _, s := range strings.Split(spec, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		r, err := parseFaultRule(s)
		if err != nil {
			return nil, fmt.Errorf("TORPOR_FAULT rule %q: %w", s, err)
		}
		rules = append(rules, r)
	}
	return rules, nil
}

func parseFaultRule(s string) (*faultRule, error) {
	r := &faultRule{action: faultExit, nth: 1}
	if i := strings.LastIndexByte(s, '+'); i >= 0 {
		d, err := time.ParseDuration(s[i+1:])
		if err != nil || d < 0 {
			return nil, fmt.Errorf("delay %q must be a duration such as 50ms", s[i+1:])
		}
		r.delay, s = d, s[:i]
	}
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		n, err := strconv.Atoi(s[i+1:])
		if err != nil || n < 1 {
			return nil, fmt.Errorf("hit number %q must be a positive integer", s[i+1:])
		}
		r.nth, s = n, s[:i]
	}
	if point, action, ok := strings.Cut(s, ":"); ok {
		s, r.action = point, action
	}
	r.point = s
	switch {
	case !machine.IsFaultPoint(r.point):
		return nil, fmt.Errorf("unknown fault point %q", r.point)
	case r.action != faultExit && r.action != faultKill && r.action != faultKillSandbox:
		return nil, fmt.Errorf("action %q must be exit, kill or kill-sandbox", r.action)
	case r.delay > 0 && r.action == faultExit:
		return nil, fmt.Errorf("a delay only goes with kill or kill-sandbox")
	}
	return r, nil
}

// sandboxKiller finds and kills a machine's sandbox process.
type sandboxKiller func(ctx context.Context, machineID string) (pid int, err error)

// faultFunc returns the manager's fault function for rules, or nil.
func faultFunc(rules []*faultRule, kill sandboxKiller, log *slog.Logger) func(point, machineID string) {
	if len(rules) == 0 {
		return nil
	}
	var mu sync.Mutex
	return func(point, machineID string) {
		mu.Lock()
		var fire []*faultRule
		for _, r := range rules {
			if r.point == point {
				if r.hits++; r.hits == r.nth {
					fire = append(fire, r)
				}
			}
		}
		mu.Unlock()
		for _, r := range fire {
			r.fire(machineID, kill, log)
		}
	}
}

func (r *faultRule) fire(machineID string, kill sandboxKiller, log *slog.Logger) {
	log.Error("fault point reached", "point", r.point, "action", r.action, "hit", r.nth, "machine", machineID)
	switch r.action {
	case faultExit:
		os.Exit(faultExitCode)
	case faultKill:
		if r.delay > 0 { // die while the operation goes on (e.g. mid-checkpoint)
			time.AfterFunc(r.delay, func() { syscall.Kill(os.Getpid(), syscall.SIGKILL) })
			return
		}
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	case faultKillSandbox:
		do := func() {
			pid, err := kill(context.Background(), machineID)
			log.Error("fault: killed the sandbox", "point", r.point, "machine", machineID, "pid", pid, "err", err)
		}
		if r.delay == 0 {
			do()
			return
		}
		time.AfterFunc(r.delay, do)
	}
}
