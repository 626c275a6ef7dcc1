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

	"github.com/torpor-dev/torpor/internal/connlimit"
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
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w := &codeWriter{ResponseWriter: rw}
		defer func() {
			if w.code != 0 {
				p.cfg.Observer.Request(s.app, s.port, w.code)
			}
		}()
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
		if !p.cfg.Remote.Local(l.machine) {
			p.cfg.Remote.ServeHTTP(w, r, l.machine, s.port)
			return
		}
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
	if errors.Is(err, connlimit.ErrLimit) {
		t.app.stats.Unavailable.Add(1)
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("app %q: %v", t.app.name, err))
		return
	}
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

// backendIdleTimeout is how long a connection to a machine is kept open
// idle for the next request. A server that serves one connection at a time
// (Python's http.server.HTTPServer, many small apps) answers nobody else
// while a client holds a kept-alive connection to it: with the former 60 s
// the proxy's idle pool blocked such an app for a minute after each proxied
// request, direct requests and the proxy's own new connections included
// (issue 16). Short enough that nobody waits long behind it, long enough
// that a burst of requests reuses its connections: dialing one per request
// instead (DisableKeepAlives) cut the proxied throughput from 0.78 to 0.20
// of the direct one (BenchmarkProxyOverhead, 8 clients).
const backendIdleTimeout = 100 * time.Millisecond

// newTransport returns the transport to machines: plain HTTP/1.1, keep-alive
// pools (one pool per machine address) whose connections close after
// backendIdleTimeout idle.
func newTransport(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Transport {
	return &http.Transport{
		DialContext:           dial,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       backendIdleTimeout,
		ExpectContinueTimeout: time.Second,
	}
}

// dial connects to a machine for the HTTP transport.
func (p *Proxy) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	t := targetOf(ctx)
	if t == nil {
		return nil, errors.New("dial without a target machine")
	}
	// The transport retries a request whose kept-alive connection broke on
	// a new one; a machine taken out of service meanwhile (its connections
	// were closed for that) fails it at once instead of a dial to nowhere
	// (dialMachine checks before every attempt).
	return p.dialMachine(ctx, t.app, t.machine, network, addr, t.warmUntil)
}
