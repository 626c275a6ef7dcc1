package proxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// Traffic that another host's proxy routed to a machine of this host
// arrives here (through package cluster) for one given machine: the other
// proxy balanced it already. It is counted as the machine's own traffic, so
// that auto-stop, which only the owner's proxy does, sees it.

// ServeMachine serves HTTP request r for internal port of machine id of
// app, waking the machine first if it is not started.
func (p *Proxy) ServeMachine(w http.ResponseWriter, r *http.Request, app, id string, port int) {
	l, err := p.acquireMachine(r.Context(), app, id, port)
	if err != nil {
		if r.Context().Err() == nil {
			writeError(w, http.StatusServiceUnavailable, err.Error())
		}
		return
	}
	defer l.release()
	t := &target{app: l.a, machine: id, addr: p.cfg.Backend(l.machine, port), warmUntil: l.warmUntil}
	r = r.WithContext(context.WithValue(r.Context(), targetKey{}, t))
	if t.addr == "" {
		p.badGateway(w, r, errNoAddress)
		return
	}
	p.rp.ServeHTTP(w, r)
}

// DialMachine connects to internal port of machine id of app, waking the
// machine first if it is not started. The connection counts as the
// machine's traffic until release is called.
func (p *Proxy) DialMachine(ctx context.Context, app, id string, port int) (_ net.Conn, release func(), _ error) {
	l, err := p.acquireMachine(ctx, app, id, port)
	if err != nil {
		return nil, nil, err
	}
	c, err := p.dialMachine(ctx, l.a, id, "tcp", p.cfg.Backend(l.machine, port), l.warmUntil)
	if err != nil {
		l.release()
		return nil, nil, err
	}
	return c, l.release, nil
}

// acquireMachine takes a lease on machine id for port, starting the
// machine first when the proxy does not see it started.
func (p *Proxy) acquireMachine(ctx context.Context, app, id string, port int) (lease, error) {
	for attempt := 0; ; attempt++ {
		a := p.app(app)
		if a == nil {
			if attempt > 0 {
				return lease{}, fmt.Errorf("app %q does not exist", app)
			}
			p.Reconcile(ctx)
			continue
		}
		a.mu.Lock()
		b := a.machines[id]
		if b != nil && a.routable(b, port) {
			l := a.take(b, port, time.Now())
			a.mu.Unlock()
			return l, nil
		}
		a.mu.Unlock()
		if attempt > 0 {
			return lease{}, fmt.Errorf("app %q: machine %s does not serve port %d here", app, id, port)
		}
		if b == nil || b.m.State != model.StateStarted {
			wctx, cancel := context.WithTimeout(ctx, p.cfg.WakeTimeout)
			_, err := p.m.Start(model.WithSource(wctx, model.SourceProxy), app, id)
			if model.KindOf(err) == model.KindConflict {
				err = p.confirmStarted(wctx, app, id, err)
			}
			cancel()
			if err != nil {
				return lease{}, p.wakeError(app, id, wctx, err)
			}
		}
		p.refreshApp(ctx, a)
	}
}

// Splice copies both ways between a and b (a connection DialMachine opened
// and the peer's), with the proxy's idle timeout for raw TCP.
func (p *Proxy) Splice(a, b net.Conn) { splice(a, b, p.cfg.TCPIdleTimeout) }
