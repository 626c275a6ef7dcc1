package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/torpor-dev/torpor/internal/connlimit"
	"github.com/torpor-dev/torpor/internal/model"
)

// serveTCP accepts connections for a raw TCP service until ln is closed.
func (p *Proxy) serveTCP(ln net.Listener, s spec) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			p.log.Warn("accept", "app", s.app, "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if !p.spawn(func() { p.handleConn(c, s) }) {
			c.Close()
		}
	}
}

// handleConn routes one TCP connection to a machine (waking one if needed)
// and splices the two until both sides are done.
func (p *Proxy) handleConn(c net.Conn, s spec) {
	if !p.track(c) {
		return
	}
	defer p.untrack(c)
	a := p.app(s.app)
	if a == nil {
		return
	}
	a.stats.Connections.Add(1)
	p.cfg.Observer.Connection(s.app, s.port)
	l, err := p.acquire(p.ctx, a, s.port)
	if err != nil {
		if p.ctx.Err() == nil {
			a.stats.Unavailable.Add(1)
			p.log.Warn("connection closed unserved", "app", s.app, "client", c.RemoteAddr(), "err", err)
		}
		return
	}
	defer l.release()
	addr := p.cfg.Backend(l.machine, s.port)
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.WakeTimeout)
	var m net.Conn
	if p.cfg.Remote.Local(l.machine) {
		m, err = p.dialMachine(ctx, a, l.machine.ID, "tcp", addr, l.warmUntil)
	} else {
		addr = "host " + l.machine.Host
		m, err = p.cfg.Remote.Dial(ctx, l.machine, s.port)
	}
	cancel()
	if err != nil {
		a.stats.BadGateway.Add(1)
		p.log.Warn("machine did not answer", "app", s.app, "machine", l.machine.ID, "addr", addr, "err", err)
		p.Refresh()
		return
	}
	if !p.track(m) {
		m.Close()
		return
	}
	defer p.untrack(m)
	splice(c, m, p.cfg.TCPIdleTimeout)
}

// track records an open connection so that shutdown can close it; it
// refuses (and closes c) once the proxy is shutting down.
func (p *Proxy) track(c net.Conn) bool {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	if p.ctx.Err() != nil {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.connMu.Lock()
	delete(p.conns, c)
	p.connMu.Unlock()
	c.Close()
}

func (p *Proxy) closeConns() {
	p.connMu.Lock()
	conns := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.connMu.Unlock()
	for _, c := range conns {
		c.Close() // outside connMu: closing a machineConn takes it
	}
}

// dialMachine connects to machine id of a at addr, taking a descriptor from
// the budget, and records the connection under the machine until it is
// closed, so that closeMachine can end it. It gives up as soon as the
// proxy no longer sees the machine started.
func (p *Proxy) dialMachine(ctx context.Context, a *app, id, network, addr string, warmUntil time.Time) (net.Conn, error) {
	inService := func() error {
		if st, ok := a.stateOf(id); !ok || st != model.StateStarted {
			return fmt.Errorf("machine %s is %s", id, orGone(st, ok))
		}
		return nil
	}
	raw, err := dialRetrying(ctx, network, addr, warmUntil, inService)
	if err != nil {
		return nil, err
	}
	c, err := connlimit.Limits{Budget: p.cfg.Budget}.Admit(raw)
	if err != nil {
		raw.Close()
		return nil, err
	}
	mc := &machineConn{Conn: c}
	p.connMu.Lock()
	defer p.connMu.Unlock()
	set := p.toMachine[id]
	if set == nil {
		set = map[net.Conn]struct{}{}
		p.toMachine[id] = set
	}
	set[mc] = struct{}{}
	mc.forget = func() {
		p.connMu.Lock()
		defer p.connMu.Unlock()
		if set := p.toMachine[id]; set != nil {
			delete(set, mc)
			if len(set) == 0 {
				delete(p.toMachine, id)
			}
		}
	}
	return mc, nil
}

// closeMachine closes every open connection to machine id: requests in
// flight fail at once (502) and TCP clients see their connection end,
// instead of waiting on a machine that is gone.
func (p *Proxy) closeMachine(id string) int {
	p.connMu.Lock()
	conns := make([]net.Conn, 0, len(p.toMachine[id]))
	for c := range p.toMachine[id] {
		conns = append(conns, c)
	}
	p.connMu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	return len(conns)
}

// machineConn is a connection to a machine, registered while open.
type machineConn struct {
	net.Conn
	once   sync.Once
	forget func()
}

func (c *machineConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.forget)
	return err
}

// CloseWrite half-closes the connection (see splice).
func (c *machineConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// splice copies both ways between a and b. When one side finishes sending,
// the other side's write half is closed; when a copy fails, or no byte has
// moved either way for idle, both connections are closed. It returns when
// both directions are done.
//
// It copies through a buffer rather than splice(2): with splice, each
// direction takes a pipe (two descriptors) that Go keeps in a pool after the
// connection ends, so a burst of clients left the daemon holding four
// descriptors per connection long after they had gone (issue 17, F4).
func splice(a, b net.Conn, idle time.Duration) {
	var last atomic.Int64 // UnixNano of the last byte either way
	last.Store(time.Now().UnixNano())
	done := make(chan struct{})
	go func() {
		defer close(done)
		pipe(b, a, idle, &last)
	}()
	pipe(a, b, idle, &last)
	<-done
}

// bufs are the copy buffers of pipe.
var bufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// pipe copies src to dst, then half-closes dst, or closes both on error or
// when neither direction has moved a byte for idle (last is shared by both).
func pipe(dst, src net.Conn, idle time.Duration, last *atomic.Int64) {
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	buf := *bp
	fail := func() {
		dst.Close()
		src.Close()
	}
	for {
		src.SetReadDeadline(time.Now().Add(idle))
		n, err := src.Read(buf)
		if n > 0 {
			last.Store(time.Now().UnixNano())
			dst.SetWriteDeadline(time.Now().Add(idle))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				fail()
				return
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
				return
			}
			dst.Close()
			return
		case errors.Is(err, os.ErrDeadlineExceeded):
			if time.Since(time.Unix(0, last.Load())) < idle {
				continue // the other direction is busy
			}
			fail()
			return
		default:
			fail()
			return
		}
	}
}

// dialRetrying connects to addr. Until warmUntil (a machine that just
// started, whose app may not be listening yet) a refused connection is
// retried with backoff, and so is a dial that timed out: a sandbox still
// booting on a loaded host can leave SYNs unanswered for longer than one
// attempt's timeout (seen at a load average of 100 with 50 machines).
// inService is asked before every attempt: once the machine is out of
// service (stopped, suspended, gone), its error ends the dial, instead of
// attempts at an address nobody will answer until the warm window ends.
func dialRetrying(ctx context.Context, network, addr string, warmUntil time.Time, inService func() error) (net.Conn, error) {
	if addr == "" {
		return nil, errNoAddress
	}
	d := net.Dialer{Timeout: dialAttemptTimeout}
	delay := 10 * time.Millisecond
	var err error
	for {
		if serr := inService(); serr != nil {
			if err != nil {
				serr = fmt.Errorf("%w (last dial: %v)", serr, err)
			}
			return nil, serr
		}
		var c net.Conn
		c, err = d.DialContext(ctx, network, addr)
		if err == nil || !retryableDial(ctx, err) || time.Now().Add(delay).After(warmUntil) {
			return c, err
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, err
		}
		delay = min(2*delay, 250*time.Millisecond)
	}
}

// dialAttemptTimeout bounds one connection attempt to a machine.
var dialAttemptTimeout = 10 * time.Second

// retryableDial reports whether a failed dial to a machine that just
// started is worth another try: refused (nothing listens yet) or timed out
// on its own timeout (not the caller's context).
//
// Host unreachable (no ARP answer) is not: runsc configures the sandbox's
// netstack before its run or restore command returns, so a started machine
// answers ARP at once. The "no route to host" once seen in the soak to 1–5
// of 50 machines "just started" were dials to machines already stopped,
// which the proxy still took for started (see MachineChanged).
func retryableDial(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
