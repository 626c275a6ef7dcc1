package proxy

import (
	"sort"
	"sync"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// app is the proxy's view of one app: its machines, their load, the wake in
// flight and the requests waiting. Everything is guarded by mu.
type app struct {
	name string

	mu       sync.Mutex
	machines map[string]*backend
	// version is bumped by every state change the proxy makes itself, so that
	// a machine list taken before it is not applied over it.
	version uint64
	changed chan struct{} // closed and replaced by broadcast
	waiting int           // requests and connections in the queue
	wake    *wake         // the wake in flight, if any
	stats   counters
}

// backend is one machine as the proxy sees it.
type backend struct {
	m          model.Machine
	load       map[int]int // in-flight requests or open connections per internal port
	active     int         // sum of load
	lastActive time.Time   // last time a request or connection began or ended
	warmUntil  time.Time   // refused dials are retried until then: the machine just started
	busy       bool        // the proxy is stopping or suspending it
}

// wake is a Start in flight; done is closed when it ends, err says how.
type wake struct {
	machine string
	done    chan struct{}
	err     error
}

func newApp(name string) *app {
	return &app{name: name, machines: map[string]*backend{}, changed: make(chan struct{})}
}

// broadcast wakes every waiter so it looks again. Call with mu held.
func (a *app) broadcast() {
	close(a.changed)
	a.changed = make(chan struct{})
}

func (a *app) currentVersion() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.version
}

// update applies a machine list taken at version; it is dropped if the proxy
// changed a machine's state since.
func (a *app) update(ms []model.Machine, version uint64, now time.Time, warm time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.version != version {
		return
	}
	seen := make(map[string]bool, len(ms))
	for _, m := range ms {
		if m.State == model.StateDestroying || m.State == model.StateDestroyed {
			continue
		}
		seen[m.ID] = true
		b := a.machines[m.ID]
		if b == nil {
			b = &backend{load: map[int]int{}, lastActive: now}
			a.machines[m.ID] = b
		}
		if m.State == model.StateStarted && b.m.State != model.StateStarted {
			b.lastActive = now
			b.warmUntil = now.Add(warm)
		}
		b.m = m
	}
	for id := range a.machines {
		if !seen[id] {
			delete(a.machines, id)
		}
	}
	if a.waiting > 0 {
		a.broadcast()
	}
}

// service returns the machine's service on internal port, nil if none.
func (b *backend) service(port int) *model.Service {
	for i := range b.m.Config.Services {
		if b.m.Config.Services[i].InternalPort == port {
			return &b.m.Config.Services[i]
		}
	}
	return nil
}

// routable reports whether b may get new traffic for port.
func (b *backend) routable(port int) bool {
	return b.m.State == model.StateStarted && !b.m.Cordoned && !b.busy && b.service(port) != nil
}

// pick returns the least loaded routable machine for port that is under its
// hard limit, and whether it is at or over its soft limit. Call with mu held.
func (a *app) pick(port int) (best *backend, overSoft bool) {
	for _, b := range a.machines {
		if !b.routable(port) {
			continue
		}
		lim := serviceLimits(b.service(port))
		if lim.hard > 0 && b.load[port] >= lim.hard {
			continue
		}
		if best == nil || b.load[port] < best.load[port] {
			best = b
		}
	}
	if best == nil {
		return nil, false
	}
	return best, best.load[port] >= serviceLimits(best.service(port)).soft
}

// candidate returns the machine to wake for port: a suspended one first,
// then stopped, then created, among uncordoned machines with autostart on.
// Call with mu held.
func (a *app) candidate(port int) *backend {
	var out []*backend
	for _, b := range a.machines {
		s := b.service(port)
		if s == nil || b.m.Cordoned || b.busy || wakeRank(b.m.State) < 0 || !autostart(s) {
			continue
		}
		out = append(out, b)
	}
	if len(out) == 0 {
		return nil
	}
	sort.Slice(out, func(i, j int) bool {
		ri, rj := wakeRank(out[i].m.State), wakeRank(out[j].m.State)
		if ri != rj {
			return ri < rj
		}
		return out[i].m.ID < out[j].m.ID
	})
	return out[0]
}

// wakeRank orders the states a machine can be woken from; -1 means it
// cannot be.
func wakeRank(s model.State) int {
	switch s {
	case model.StateSuspended:
		return 0
	case model.StateStopped:
		return 1
	case model.StateCreated:
		return 2
	}
	return -1
}

// mayServeSoon reports whether waiting for port can end well: a wake is in
// flight, or some machine serving it is started (at its hard limit) or in
// transition. Call with mu held.
func (a *app) mayServeSoon(port int) bool {
	if a.wake != nil {
		return true
	}
	for _, b := range a.machines {
		if b.service(port) == nil || b.m.Cordoned {
			continue
		}
		if b.busy || b.m.State == model.StateStarted || !b.m.State.Settled() {
			return true
		}
	}
	return false
}

// take counts a new request or connection on b. Call with mu held.
func (a *app) take(b *backend, port int, now time.Time) lease {
	b.load[port]++
	b.active++
	b.lastActive = now
	return lease{a: a, b: b, port: port, machine: b.m, warmUntil: b.warmUntil}
}

// lease is one request or connection routed to a machine.
type lease struct {
	a         *app
	b         *backend
	port      int
	machine   model.Machine
	warmUntil time.Time
}

// release ends the request or connection.
func (l lease) release() {
	a := l.a
	a.mu.Lock()
	defer a.mu.Unlock()
	l.b.load[l.port]--
	l.b.active--
	l.b.lastActive = time.Now()
	if a.waiting > 0 {
		a.broadcast()
	}
}
