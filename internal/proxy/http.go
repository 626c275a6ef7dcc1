package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

// target is where one HTTP request goes; it travels in the request context
// from the handler to Rewrite, the dialer and the error handler.
type target struct {
	app       *app
	machine   string
	addr      string
	warmUntil time.Time
}

type targetKey struct{}

func targetOf(ctx context.Context) *target {
	t, _ := ctx.Value(targetKey{}).(*target)
	return t
}

// httpHandler serves an HTTP service: it routes each request to a machine
// (waking one if needed) and reverse-proxies it there.
func (p *Proxy) httpHandler(s spec) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := p.app(s.app)
		if a == nil {
			writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("app %q does not exist", s.app))
			return
		}
		a.stats.Requests.Add(1)
		l, err := p.acquire(r.Context(), a, s.port)
		if err != nil {
			if r.Context().Err() != nil {
				return // the client is gone
			}
			a.stats.Unavailable.Add(1)
			writeError(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		defer l.release()
		t := &target{app: a, machine: l.machine.ID, addr: p.cfg.Backend(l.machine, s.port), warmUntil: l.warmUntil}
		r = r.WithContext(context.WithValue(r.Context(), targetKey{}, t))
		if t.addr == "" {
			p.badGateway(w, r, errNoAddress)
			return
		}
		p.rp.ServeHTTP(w, r)
	})
}

// rewrite sends the request to the chosen machine, keeping the client's Host
// and adding X-Forwarded-For, -Host and -Proto.
func rewrite(pr *httputil.ProxyRequest) {
	t := targetOf(pr.In.Context())
	pr.SetURL(&url.URL{Scheme: "http", Host: t.addr})
	pr.Out.Host = pr.In.Host
	pr.SetXForwarded()
}

// badGateway answers 502 when the machine cannot be reached or fails before
// answering; a refused connection makes the proxy list machines again.
func (p *Proxy) badGateway(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // the client is gone
	}
	t := targetOf(r.Context())
	t.app.stats.BadGateway.Add(1)
	p.log.Warn("machine did not answer", "app", t.app.name, "machine", t.machine, "addr", t.addr, "err", err)
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		p.Refresh()
	}
	writeError(w, http.StatusBadGateway, fmt.Sprintf("app %q: machine %s did not answer: %v", t.app.name, t.machine, err))
}

// writeError answers {"error": msg}, the shape of the API's errors.
func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// newTransport returns the transport to machines: plain HTTP/1.1, generous
// keep-alive pools (one pool per machine address).
func newTransport(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Transport {
	return &http.Transport{
		DialContext:           dial,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       60 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// dial connects to a machine for the HTTP transport.
func (p *Proxy) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var warmUntil time.Time
	if t := targetOf(ctx); t != nil {
		warmUntil = t.warmUntil
	}
	return dialMachine(ctx, network, addr, warmUntil)
}
