package proxy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// acquire routes one request or connection for port of app a: to the least
// loaded started machine, waking a machine if there is none or all are over
// their soft limit, and waiting in the app's queue (at most WakeTimeout) while
// no machine can take it. The caller must release the lease. Errors are
// meant for a 503 answer.
func (p *Proxy) acquire(ctx context.Context, a *app, port int) (lease, error) {
	begin := time.Now()
	deadline := time.NewTimer(p.cfg.WakeTimeout)
	defer deadline.Stop()
	queued, timedOut := false, false
	defer func() {
		if queued {
			a.mu.Lock()
			a.waiting--
			a.mu.Unlock()
			p.cfg.Observer.Waiting(a.name, -1)
			p.cfg.Observer.Waited(a.name, time.Since(begin), timedOut)
		}
	}()
	for {
		l, changed, w, err := p.route(a, port, &queued)
		if err != nil || l.b != nil {
			return l, err
		}
		var wakeDone chan struct{}
		if w != nil {
			wakeDone = w.done
		}
		select {
		case <-changed:
		case <-wakeDone:
		case <-deadline.C:
			timedOut = true
			return lease{}, p.timeoutError(a, port, w)
		case <-ctx.Done():
			return lease{}, ctx.Err()
		}
		// A failed wake ends the wait whichever case the select picked:
		// it also changes the app, and looking again would wake again.
		if w != nil && closed(w.done) && w.err != nil {
			return lease{}, w.err
		}
	}
}

// route takes one look at the app. It returns a lease on a machine, or an
// error, or else what to wait on: the app's next change and the wake in
// flight (if any), after putting the caller in the queue (*queued).
func (p *Proxy) route(a *app, port int, queued *bool) (l lease, changed chan struct{}, w *wake, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b, overSoft := a.pick(port)
	if b == nil || overSoft {
		p.maybeWake(a, port)
	}
	switch {
	case b != nil:
		return a.take(b, port, time.Now()), nil, nil, nil
	case !a.mayServeSoon(port):
		return lease{}, nil, nil, a.noMachineError(port)
	case !*queued && a.waiting >= p.cfg.QueueLimit:
		return lease{}, nil, nil, fmt.Errorf("app %q: too many requests waiting for a machine (queue limit %d)", a.name, p.cfg.QueueLimit)
	case !*queued:
		a.waiting++
		a.stats.QueuedTotal.Add(1)
		*queued = true
		p.cfg.Observer.Waiting(a.name, 1)
	}
	return lease{}, a.changed, a.wake, nil
}

// maybeWake starts waking a machine for port unless a wake is in flight or
// no machine can be woken. Call with a.mu held.
func (p *Proxy) maybeWake(a *app, port int) {
	if a.wake != nil {
		return
	}
	c := a.candidate(port)
	if c == nil {
		return
	}
	w := &wake{machine: c.m.ID, done: make(chan struct{})}
	a.wake = w
	a.version++
	a.stats.Wakes.Add(1)
	from := c.m.State
	if !p.spawn(func() { p.runWake(a, w, from) }) {
		a.finishWakeLocked(w, fmt.Errorf("app %q: the proxy is shutting down", a.name), time.Now(), 0)
	}
}

// runWake starts the machine and tells the waiters how it went.
func (p *Proxy) runWake(a *app, w *wake, from model.State) {
	begin := time.Now()
	p.log.Info("waking machine", "app", a.name, "machine", w.machine, "from", from)
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.WakeTimeout)
	defer cancel()
	resp, err := p.m.Start(model.WithSource(ctx, model.SourceProxy), a.name, w.machine)
	if model.KindOf(err) == model.KindConflict {
		err = p.confirmStarted(ctx, a.name, w.machine, err)
	}
	result := WakeStarted
	if err != nil {
		result = WakeFailed
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			result = WakeTimeout
		}
		err = p.wakeError(a.name, w.machine, ctx, err)
		p.log.Warn("wake failed", "app", a.name, "machine", w.machine, "err", err)
	} else {
		p.log.Info("machine woke", "app", a.name, "machine", w.machine, "from", from,
			"from_snapshot", resp.FromSnapshot, "took", time.Since(begin).Round(time.Millisecond))
	}
	p.cfg.Observer.Woke(a.name, time.Since(begin), result)
	a.finishWake(w, err, time.Now(), p.cfg.WakeTimeout)
}

// rescue wakes machine id, which someone suspended while the proxy had
// requests or connections in flight to it: the snapshot froze them, and
// they go on where they were once the machine resumes. A wake that fails
// closes them (they would never be answered). One rescue per machine at a
// time.
func (p *Proxy) rescue(a *app, id string) {
	a.mu.Lock()
	b := a.machines[id]
	if b == nil || b.rescuing {
		a.mu.Unlock()
		return
	}
	b.rescuing = true
	a.mu.Unlock()
	ok := p.spawn(func() {
		p.log.Info("waking a machine suspended with traffic in flight", "app", a.name, "machine", id)
		ctx, cancel := context.WithTimeout(p.ctx, p.cfg.WakeTimeout)
		defer cancel()
		_, err := p.m.Start(model.WithSource(ctx, model.SourceProxy), a.name, id)
		if model.KindOf(err) == model.KindConflict {
			err = p.confirmStarted(ctx, a.name, id, err)
		}
		if err != nil {
			p.log.Warn("could not wake a machine suspended with traffic in flight: closing its connections",
				"app", a.name, "machine", id, "err", p.wakeError(a.name, id, ctx, err))
			p.closeMachine(id)
		}
		a.endRescue(id, err == nil, time.Now(), p.cfg.WakeTimeout)
	})
	if !ok {
		a.endRescue(id, false, time.Now(), 0)
	}
}

// endRescue records the end of a rescue and lets waiters look again.
func (a *app) endRescue(id string, started bool, now time.Time, warm time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.machines[id]
	if b == nil {
		return
	}
	b.rescuing = false
	if started {
		a.stats.Wakes.Add(1)
		b.m.State = model.StateStarted
		b.lastActive = now
		b.warmUntil = now.Add(warm)
	}
	a.version++
	a.broadcast()
}

// confirmStarted turns a conflict from Start into success when the machine
// turns out to be started already (someone else started it).
func (p *Proxy) confirmStarted(ctx context.Context, app, id string, conflict error) error {
	if m, err := p.m.Get(ctx, app, id); err == nil && m.State == model.StateStarted {
		return nil
	}
	return conflict
}

func (p *Proxy) wakeError(app, id string, ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("app %q: machine %s did not start within %s", app, id, p.cfg.WakeTimeout)
	}
	return fmt.Errorf("app %q: waking machine %s failed: %v", app, id, err)
}

// finishWake records the end of wake w and lets the waiters look again.
func (a *app) finishWake(w *wake, err error, now time.Time, warm time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.finishWakeLocked(w, err, now, warm)
}

func (a *app) finishWakeLocked(w *wake, err error, now time.Time, warm time.Duration) {
	if b := a.machines[w.machine]; b != nil && err == nil {
		b.m.State = model.StateStarted
		b.lastActive = now
		b.warmUntil = now.Add(warm)
	}
	if err != nil {
		a.stats.WakeFailures.Add(1)
	}
	a.wake = nil
	a.version++
	w.err = err
	close(w.done)
	a.broadcast()
}

// noMachineError says why nothing can serve port right now. Call with a.mu held.
func (a *app) noMachineError(port int) error {
	serving := 0
	for _, b := range a.machines {
		if b.service(port) != nil {
			serving++
		}
	}
	if serving == 0 {
		return fmt.Errorf("app %q has no machine serving port %d", a.name, port)
	}
	return fmt.Errorf("app %q has no started machine for port %d and none can be woken (autostart is off, or the machines are cordoned)", a.name, port)
}

// timeoutError says why a request gave up waiting; w is the wake it was
// last waiting for, if any.
func (p *Proxy) timeoutError(a *app, port int, w *wake) error {
	if w != nil {
		select {
		case <-w.done:
			if w.err != nil {
				return w.err
			}
		default:
			return fmt.Errorf("app %q: machine %s did not start within %s", a.name, w.machine, p.cfg.WakeTimeout)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.wake != nil {
		return fmt.Errorf("app %q: machine %s did not start within %s", a.name, a.wake.machine, p.cfg.WakeTimeout)
	}
	unhealthy := ""
	for _, b := range a.machines {
		if a.routable(b, port) {
			return fmt.Errorf("app %q: every machine serving port %d stayed at its hard_limit for %s", a.name, port, p.cfg.WakeTimeout)
		}
		if a.available(b, port) && unhealthy == "" {
			unhealthy = fmt.Sprintf("machine %s: %s", b.m.ID, a.health.Failing(b.m, port))
		}
	}
	if unhealthy != "" {
		return fmt.Errorf("app %q: no machine serving port %d passed its health checks within %s (%s)", a.name, port, p.cfg.WakeTimeout, unhealthy)
	}
	return fmt.Errorf("app %q: no machine became available for port %d within %s", a.name, port, p.cfg.WakeTimeout)
}

// closed reports whether ch is closed (it is never sent on).
func closed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
