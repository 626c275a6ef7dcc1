package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/torpor-dev/torpor/internal/connlimit"
	"github.com/torpor-dev/torpor/internal/model"
)

// spec is what a host port serves: internal port of app's machines, over
// HTTP or raw TCP.
type spec struct {
	app  string
	port int
	http bool
}

func (s spec) String() string {
	kind := "tcp"
	if s.http {
		kind = "http"
	}
	return fmt.Sprintf("app %q internal_port %d (%s)", s.app, s.port, kind)
}

// listener is an open host port.
type listener struct {
	spec spec
	ln   net.Listener
	srv  *http.Server // nil for raw TCP
}

// close stops accepting at once; in-flight HTTP requests get grace to
// finish. Open TCP connections are left to end on their own.
func (l *listener) close(grace time.Duration) {
	l.ln.Close()
	if l.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if l.srv.Shutdown(ctx) != nil {
		l.srv.Close()
	}
}

// services returns the services of the app's machines. Call without a.mu.
func (a *app) services() []model.Service {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []model.Service
	for _, b := range a.machines {
		out = append(out, b.m.Config.Services...)
	}
	return out
}

// desired returns the spec each host port should serve, resolving
// conflicts by owners (see resolve). Call with reconcileMu held.
func (p *Proxy) desired(owners map[int]string) map[int]spec {
	claims := map[int]map[spec]bool{}
	tls := map[int]bool{}
	askedReserved := map[int]bool{}
	for _, a := range p.allApps() {
		for _, s := range a.services() {
			if s.Protocol == "udp" {
				continue // not proxied
			}
			for _, port := range s.Ports {
				if port.Port == nil || *port.Port <= 0 || *port.Port > 65535 {
					continue
				}
				hp := *port.Port
				if what, ok := p.cfg.Reserved[hp]; ok {
					askedReserved[hp] = true
					if p.conflicts[hp] != "reserved" {
						p.conflicts[hp] = "reserved"
						p.log.Error("a service asks for a host port the daemon keeps for itself: not published",
							"port", hp, "reserved_for", what, "app", a.name)
					}
					continue
				}
				if claims[hp] == nil {
					claims[hp] = map[spec]bool{}
				}
				claims[hp][spec{app: a.name, port: s.InternalPort, http: isHTTP(s, port)}] = true
				tls[hp] = tls[hp] || hasHandler(port, "tls")
			}
		}
	}
	want := make(map[int]spec, len(claims))
	for hp, set := range claims {
		s, ok := p.resolve(hp, set, owners[hp])
		if !ok {
			continue
		}
		want[hp] = s
		if tls[hp] && !p.tlsWarned[hp] {
			p.tlsWarned[hp] = true
			p.log.Warn("the tls handler is not supported: serving the port without TLS", "port", hp, "service", want[hp].String())
		}
	}
	for hp, why := range p.conflicts {
		if why == "reserved" && !askedReserved[hp] || why != "reserved" && len(claims[hp]) < 2 {
			delete(p.conflicts, hp)
		}
	}
	return want
}

// resolve picks the spec that gets host port hp among those claiming it.
// When the port has an owner (owner, the app the machine layer recorded as
// its first claimer), only the owner's services may have it: none if the
// owner no longer claims it. Without one, the current listener keeps it if
// it still claims it, else the first in app name order. Conflicts are
// logged once each.
func (p *Proxy) resolve(hp int, set map[spec]bool, owner string) (spec, bool) {
	all := make([]spec, 0, len(set))
	for s := range set {
		if owner == "" || s.app == owner {
			all = append(all, s)
		}
	}
	if len(all) == 0 {
		return spec{}, false
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].app != all[j].app {
			return all[i].app < all[j].app
		}
		if all[i].port != all[j].port {
			return all[i].port < all[j].port
		}
		return !all[i].http && all[j].http
	})
	win := all[0]
	if l := p.listeners[hp]; l != nil && set[l.spec] && (owner == "" || l.spec.app == owner) {
		win = l.spec
	}
	if len(set) > 1 {
		var losers []string
		for s := range set {
			if s != win {
				losers = append(losers, s.String())
			}
		}
		sort.Strings(losers)
		if msg := fmt.Sprint(win, losers); p.conflicts[hp] != msg {
			p.conflicts[hp] = msg
			p.log.Error("port conflict: several services claim one host port; the others are not published",
				"port", hp, "serving", win.String(), "owner", owner, "not_published", losers)
		}
	}
	return win, true
}

// syncListeners closes listeners no longer wanted (or wanted differently)
// and opens the missing ones. Call with reconcileMu held.
func (p *Proxy) syncListeners(want map[int]spec) {
	for hp, l := range p.listeners {
		if s, ok := want[hp]; ok && s == l.spec {
			continue
		}
		delete(p.listeners, hp)
		p.log.Info("closing listener", "port", hp, "service", l.spec.String())
		l.ln.Close() // free the port now; requests drain in the background
		p.spawn(func() { l.close(shutdownGrace) })
	}
	for hp, s := range want {
		if p.listeners[hp] == nil {
			p.open(hp, s)
		}
	}
	for hp := range p.listenErrs {
		if _, ok := want[hp]; !ok {
			delete(p.listenErrs, hp)
		}
	}
}

// open starts listening on host port hp for s. A failure (port in use, no
// permission) is logged, once per distinct error, and retried at the next
// reconcile.
func (p *Proxy) open(hp int, s spec) {
	addr := net.JoinHostPort(p.cfg.ListenHost, strconv.Itoa(hp))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if p.listenErrs[hp] != err.Error() {
			p.listenErrs[hp] = err.Error()
			p.log.Error("cannot publish service", "addr", addr, "service", s.String(), "err", err)
		}
		return
	}
	delete(p.listenErrs, hp)
	ln = p.limit(ln, s)
	l := &listener{spec: s, ln: ln}
	if s.http {
		l.srv = p.newServer(s)
	}
	ok := p.spawn(func() {
		if l.srv != nil {
			l.srv.Serve(ln)
			return
		}
		p.serveTCP(ln, s)
	})
	if !ok {
		ln.Close()
		return
	}
	p.listeners[hp] = l
	p.log.Info("publishing service", "addr", addr, "service", s.String())
}

// limit wraps the listener of s so that it admits only connections within
// the proxy's limits: the descriptor budget, the per-client cap (all ports)
// and the cap of s's app (all its ports). An HTTP port answers the others
// 503, a TCP port closes them.
func (p *Proxy) limit(ln net.Listener, s spec) net.Listener {
	lim := connlimit.Limits{Budget: p.cfg.Budget, Groups: []*connlimit.Group{p.clients}}
	if a := p.app(s.app); a != nil {
		lim.Groups = append(lim.Groups, a.conns)
	}
	refuse := connlimit.Close
	if s.http {
		refuse = connlimit.RefuseHTTP
	}
	return connlimit.Listen(ln, lim, refuse, p.log.With("service", s.String()))
}

func (p *Proxy) newServer(s spec) *http.Server {
	return &http.Server{
		Handler:           p.httpHandler(s),
		ReadHeaderTimeout: p.cfg.HeaderTimeout,
		IdleTimeout:       p.cfg.HTTPIdleTimeout,
		BaseContext:       func(net.Listener) context.Context { return p.ctx },
		ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
}
