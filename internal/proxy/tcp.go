package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"time"
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
	m, err := dialMachine(ctx, "tcp", addr, l.warmUntil)
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
	splice(c, m)
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
	defer p.connMu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

// splice copies both ways between a and b. When one side finishes sending,
// the other side's write half is closed; when a copy fails, both connections
// are closed. It returns when both directions are done.
func splice(a, b net.Conn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		pipe(b, a)
	}()
	pipe(a, b)
	<-done
}

// pipe copies src to dst, then half-closes dst, or closes both on error.
func pipe(dst, src net.Conn) {
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		src.Close()
		return
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	dst.Close()
}

// dialMachine connects to addr. Until warmUntil (a machine that just
// started, whose app may not be listening yet) a refused connection is
// retried with backoff.
func dialMachine(ctx context.Context, network, addr string, warmUntil time.Time) (net.Conn, error) {
	if addr == "" {
		return nil, errNoAddress
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	delay := 10 * time.Millisecond
	for {
		c, err := d.DialContext(ctx, network, addr)
		if err == nil || !errors.Is(err, syscall.ECONNREFUSED) || time.Now().Add(delay).After(warmUntil) {
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
