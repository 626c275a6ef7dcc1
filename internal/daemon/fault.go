//go:build faults

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

	"github.com/torpor-dev/torpor/internal/image"
	"github.com/torpor-dev/torpor/internal/machine"
)

// Fault injection for crash tests (TORPOR_FAULT), in test builds only
// (go build -tags faults; fault_off.go refuses TORPOR_FAULT otherwise).
// With it empty the manager gets no fault function at all.
//
// TORPOR_FAULT is a comma-separated list of rules, each
//
//	POINT[:ACTION][@N][+DELAY]
//
// POINT is one of machine.FaultPoints or image.FaultPoints. ACTION is
//
//	exit          the daemon exits at once with status 75 (default)
//	kill          the daemon sends itself SIGKILL (a true kill -9)
//	kill-sandbox  SIGKILL to the machine's runsc sandbox process; the
//	              daemon goes on (a runtime crash)
//	fail          the store write at the point fails with ENOSPC, as on
//	              a full disk; the daemon goes on. The only action of
//	              machine.FailPoints (and their default), which take no
//	              delay
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
	faultFail        = "fail"
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
	if machine.IsFailPoint(s) {
		r.action = faultFail
	}
	if point, action, ok := strings.Cut(s, ":"); ok {
		s, r.action = point, action
	}
	r.point = s
	if machine.IsFailPoint(r.point) {
		switch {
		case r.action != faultFail:
			return nil, fmt.Errorf("action %q: a store fail point only takes fail", r.action)
		case r.delay > 0:
			return nil, fmt.Errorf("a store fail point takes no delay")
		}
		return r, nil
	}
	switch {
	case r.action == faultFail:
		return nil, fmt.Errorf("action fail only goes with a store fail point (%s)", failPointNames())
	case !machine.IsFaultPoint(r.point) && !image.IsFaultPoint(r.point):
		return nil, fmt.Errorf("unknown fault point %q", r.point)
	case r.action != faultExit && r.action != faultKill && r.action != faultKillSandbox:
		return nil, fmt.Errorf("action %q must be exit, kill or kill-sandbox", r.action)
	case r.delay > 0 && r.action == faultExit:
		return nil, fmt.Errorf("a delay only goes with kill or kill-sandbox")
	}
	return r, nil
}

// checkFaults checks cfg.Fault before anything is opened.
func (s *System) checkFaults(context.Context) error {
	_, err := parseFaults(s.cfg.Fault)
	return err
}

// armFaults arms the fault points of cfg.Fault on the machine manager.
func (s *System) armFaults(context.Context) error {
	rules, err := parseFaults(s.cfg.Fault)
	if err != nil || len(rules) == 0 {
		return err
	}
	pids, ok := s.Runtime.(sandboxPIDs)
	if !ok {
		return fmt.Errorf("TORPOR_FAULT: runtime %s cannot find sandbox processes", s.Runtime.Name())
	}
	var crashes, fails []*faultRule
	for _, r := range rules {
		if r.action == faultFail {
			fails = append(fails, r)
		} else {
			crashes = append(crashes, r)
		}
	}
	if len(fails) > 0 {
		s.Machines.SetFailure(failFunc(fails, s.log))
	}
	fn := faultFunc(crashes, killSandbox(pids), s.log)
	if fn == nil {
		return nil
	}
	s.Machines.SetFault(fn)
	s.Images.SetFault(func(point string) { fn(point, "") })
	return nil
}

// sandboxPIDs is a runtime that can name a sandbox's host process.
type sandboxPIDs interface {
	SandboxPID(ctx context.Context, id string) (int, error)
}

// killSandbox returns a sandboxKiller for a runtime that knows its PIDs.
func killSandbox(rt sandboxPIDs) sandboxKiller {
	return func(ctx context.Context, machineID string) (int, error) {
		pid, err := rt.SandboxPID(ctx, machine.SandboxID(machineID))
		if err != nil || pid == 0 {
			return pid, err
		}
		return pid, syscall.Kill(pid, syscall.SIGKILL)
	}
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

// failFunc returns the manager's fail function for rules (all of action
// fail): the Nth time a rule's point is reached, its store write fails
// with ENOSPC.
func failFunc(rules []*faultRule, log *slog.Logger) func(point, machineID string) error {
	var mu sync.Mutex
	return func(point, machineID string) error {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range rules {
			if r.point == point {
				if r.hits++; r.hits == r.nth {
					log.Error("fail point reached: failing the store write", "point", point, "hit", r.nth, "machine", machineID)
					return fmt.Errorf("store write at %s (injected): %w", point, syscall.ENOSPC)
				}
			}
		}
		return nil
	}
}

// failPointNames lists machine.FailPoints for error messages.
func failPointNames() string {
	names := make([]string, len(machine.FailPoints))
	for i, p := range machine.FailPoints {
		names[i] = p.Name
	}
	return strings.Join(names, ", ")
}
