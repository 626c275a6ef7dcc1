// Package fence owns the host's fencing watchdog (issue 15): a small
// process, started by a cluster daemon and outliving it, that freezes the
// host's sandboxes when the daemon dies or hangs without another daemon
// taking over its data directory, before the daemon's cluster lease can
// expire on etcd and other hosts restart its machines. The daemon fences
// itself while it lives (package cluster); the watchdog covers the daemon
// that cannot: killed with SIGKILL, or stuck.
//
// The daemon talks to its watchdog through a pipe (the watchdog's fd 3):
// one line per turn of its lease loop, "renewed <unix nanoseconds>" (when
// the last successful renewal was sent), and "stop" when it shuts down
// cleanly (it froze its machines itself). End of file with no "stop" is a
// dead daemon. Before it freezes anything the watchdog writes the marker
// (MarkerFile: what it freezes and why) and then appends to its log
// (LogFile); the next daemon reads the marker and thaws the machines it
// still owns, as after its own fence.
//
// It does not own what a freeze is (package gvisor signals the sandboxes),
// nor the lease (package cluster), nor the data directory's lock (package
// hostlock, whose file it only reads).
package fence

import (
	"time"
)

// Files in the data directory.
const (
	PIDFile    = "fence-watch.pid"  // the watchdog's pid
	MarkerFile = "fence-watch.json" // what the watchdog froze (Marker), until a daemon thaws it
	LogFile    = "fence-watch.log"  // the watchdog's log
)

// Margin is how long before its lease can expire a host fences itself:
// the live daemon (cluster keepAlive) and the watchdog use the same one.
func Margin(ttl time.Duration) time.Duration { return max(ttl/4, time.Second) }

// View is what the watchdog knows at an instant.
type View struct {
	// Renewed is when the daemon sent its last successful lease renewal,
	// as it reported it (zero: none reported yet).
	Renewed time.Time
	// Heard is when the daemon last wrote to the pipe.
	Heard time.Time
	// Gone: the pipe reached end of file without "stop" (the daemon died).
	Gone bool
	// Stopped: the daemon said "stop" (a clean shutdown, it froze its machines).
	Stopped bool
	// Replaced: another live daemon holds the data directory's lock.
	Replaced bool
}

// Action is what the watchdog does next.
type Action int

const (
	Wait  Action = iota // nothing yet: look again by the time returned
	Fence               // freeze every sandbox now
	Exit                // nothing left to guard
)

func (a Action) String() string {
	return [...]string{"wait", "fence", "exit"}[a]
}

// Decide is the watchdog's rule. The lease expires TTL after the renewal
// was sent; the watchdog freezes at Renewed + TTL - Margin (the live
// daemon's own deadline) if by then the daemon is gone. A daemon that is
// alive and talking fences itself, and the watchdog leaves it alone: it
// reports before and after each renewal, so a live one is never silent for
// more than one renewal call or one pause (TTL/4 each) and its own fence. One
// silent for TTL/2 is taken for hung and frozen at the later of that and
// the deadline; that can be as late as about the lease's expiry (its last
// word may come TTL/2 after the renewal), so the hang is covered on a best
// effort, the death strictly before the expiry. A stopped or replaced
// daemon, or one gone before it ever held a lease, leaves nothing to guard.
func Decide(now time.Time, v View, ttl time.Duration) (Action, time.Time) {
	switch {
	case v.Stopped, v.Replaced:
		return Exit, time.Time{}
	case v.Renewed.IsZero():
		if v.Gone {
			return Exit, time.Time{}
		}
		return Wait, now.Add(ttl / 4)
	}
	deadline := v.Renewed.Add(ttl - Margin(ttl))
	if !v.Gone {
		deadline = maxTime(deadline, v.Heard.Add(ttl/2))
	}
	if !now.Before(deadline) {
		return Fence, time.Time{}
	}
	return Wait, deadline
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
