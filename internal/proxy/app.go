package proxy

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/torpor-dev/torpor/internal/connlimit"
	"github.com/torpor-dev/torpor/internal/model"
)

// app is the proxy's view of one app: its machines, their load, the wake in
// flight and the requests waiting. Everything is guarded by mu.
type app struct {
	name   string
	health Health

	mu       sync.Mutex
	machines map[string]*backend
	// version is bumped by every state change the proxy makes itself, so that
	// a machine list taken before it is not applied over it.
	version uint64
	changed chan struct{} // closed and replaced by broadcast
	waiting int           // requests and connections in the queue
	wake    *wake         // the wake in flight, if any
	stats   counters
	conns   *connlimit.Group // client connections to the app's ports
}

// backend is one machine as the proxy sees it.
type backend struct {
	m          model.Machine
	load       map[int]int // in-flight requests or open connections per internal port
	active     int         // sum of load
	lastActive time.Time   // last time a request or connection began or ended
	warmUntil  time.Time   // refused dials are retried until then: the machine just started
	busy       bool        // the proxy is stopping or suspending it
	rescuing   bool        // the proxy is waking it for the traffic in flight (rescue)
}

// wake is a Start in flight; done is closed when it ends, err says how.
type wake struct {
	machine string
	done    chan struct{}
	err     error
}

func newApp(name string, maxConns int, health Health) *app {
	return &app{name: name, health: health, machines: map[string]*backend{}, changed: make(chan struct{}),
		conns: connlimit.NewGroup(fmt.Sprintf("app %q (its published ports)", name), maxConns, 0)}
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
// changed a machine's state since. It returns the machines that someone
// else (the API, the machine itself, a dying sandbox) took out of service
// while the proxy may hold connections to them (see strandedBy).
func (a *app) update(ms []model.Machine, version uint64, now time.Time, warm time.Duration) []stranded {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.version != version {
		return nil
	}
	var out []stranded
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
		if s, ok := b.strandedBy(m); ok {
			out = append(out, s)
		}
		b.m = m
	}
	for id := range a.machines {
		if !seen[id] {
			delete(a.machines, id)
			out = append(out, stranded{id: id})
		}
	}
	if a.waiting > 0 {
		a.broadcast()
	}
	return out
}

// apply records the state the machine layer has just committed for m (see
// Proxy.MachineChanged) and returns what it means for the connections to
// the machine, as update does. A machine the proxy does not know yet, or
// is stopping or suspending itself (busy: it records the outcome), is left
// to the next list. The version is bumped, so that a list taken before the
// change is not applied over it.
func (a *app) apply(m model.Machine, now time.Time, warm time.Duration) []stranded {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.machines[m.ID]
	if b == nil || b.busy || b.m.State == m.State {
		return nil
	}
	a.version++
	a.broadcast()
	if m.State == model.StateDestroying || m.State == model.StateDestroyed {
		delete(a.machines, m.ID)
		return []stranded{{id: m.ID}}
	}
	// Only the state: the rest of the proxy's copy (e.g. the host that
	// a cluster's list names) comes from the lists.
	next := b.m
	next.State = m.State
	var out []stranded
	if s, ok := b.strandedBy(next); ok {
		out = append(out, s)
	}
	if next.State == model.StateStarted {
		b.lastActive = now
		b.warmUntil = now.Add(warm)
	}
	b.m = next
	return out
}

// stranded is a machine taken out of service under the proxy's feet: its
// connections are closed, or, if rescue, the machine is woken so that the
// requests and connections in flight to it are served (issue 17, F9).
type stranded struct {
	id     string
	rescue bool
}

// strandedBy says what the change of b to m (from the machine layer, not
// the proxy, which marks its own changes busy) means for the connections to
// b:
//   - suspending or suspended with requests or connections in flight, which
//     the snapshot froze: wake the machine if their service has autostart
//     and it is not cordoned (a new request would wake it anyway), else
//     close them (nothing will wake it);
//   - stopped, created, failed or any other state where nothing listens:
//     close every connection, idle ones too;
//   - stopping: nothing yet, the app may finish them while it shuts down.
func (b *backend) strandedBy(m model.Machine) (stranded, bool) {
	if b.busy || m.State == b.m.State || b.m.ID == "" {
		return stranded{}, false
	}
	switch m.State {
	case model.StateStarted, model.StateStarting, model.StateStopping:
		return stranded{}, false
	case model.StateSuspending, model.StateSuspended:
		if b.active == 0 {
			return stranded{}, false // kept-alive idle connections survive the resume
		}
		return stranded{id: m.ID, rescue: !m.Cordoned && b.autostartInFlight(m)}, true
	}
	return stranded{id: m.ID}, true
}

// autostartInFlight reports whether every service of m with traffic in
// flight lets the proxy start the machine.
func (b *backend) autostartInFlight(m model.Machine) bool {
	for port, n := range b.load {
		if n == 0 {
			continue
		}
		s := serviceOf(m, port)
		if s == nil || !autostart(s) {
			return false
		}
	}
	return true
}

// stateOf returns the state of machine id as the proxy sees it (a machine
// it is waking for the traffic in flight counts as started), and whether
// the app has it.
func (a *app) stateOf(id string) (model.State, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.machines[id]
	if b == nil {
		return "", false
	}
	if b.rescuing {
		return model.StateStarted, true
	}
	return b.m.State, true
}

// orGone names a state for an error, "gone" for a machine the app no longer has.
func orGone(st model.State, ok bool) string {
	if !ok {
		return "gone"
	}
	return string(st)
}

// service returns the machine's service on internal port, nil if none.
func (b *backend) service(port int) *model.Service { return serviceOf(b.m, port) }

func serviceOf(m model.Machine, port int) *model.Service {
	for i := range m.Config.Services {
		if m.Config.Services[i].InternalPort == port {
			return &m.Config.Services[i]
		}
	}
	return nil
}

// routable reports whether b may get new traffic for port: it is started,
// not cordoned, not being stopped and serves port, and that service's
// health checks pass. Call with a.mu held.
func (a *app) routable(b *backend, port int) bool {
	return a.available(b, port) && a.health.ServicePassing(b.m, port)
}

// available is routable but for health checks.
func (a *app) available(b *backend, port int) bool {
	return b.m.State == model.StateStarted && !b.m.Cordoned && !b.busy && b.service(port) != nil
}

// pick returns the least loaded routable machine for port that is under its
// hard limit, and whether it is at or over its soft limit. Call with mu held.
//
// Machines equally loaded are picked at random, each as likely as the
// other. Taking the first one in map order was far from that: a Go map
// of a few entries starts its iteration at a random slot of 8, so of two
// machines the one in the first slot came first 7 times in 8, and
// sequential requests (a load of 0 each time) all went to one machine
// now and then (TestChecksDecideWhereTheProxyRoutes: 40 of 40 once).
func (a *app) pick(port int) (best *backend, overSoft bool) {
	ties := 0
	for _, b := range a.machines {
		if !a.routable(b, port) {
			continue
		}
		lim := serviceLimits(b.service(port))
		if lim.hard > 0 && b.load[port] >= lim.hard {
			continue
		}
		switch {
		case best == nil || b.load[port] < best.load[port]:
			best, ties = b, 1
		case b.load[port] == best.load[port]:
			ties++
			if rand.IntN(ties) == 0 { // each of the ties kept with chance 1/ties
				best = b
			}
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
