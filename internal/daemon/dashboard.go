package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/torpor-dev/torpor/internal/dashboard"
	"github.com/torpor-dev/torpor/internal/model"
)

// localDashboard is the loopback port that `torpor dashboard` opens on
// demand (POST /v1/dashboard on the admin socket): it serves the
// dashboard alone, to browsers on this host, until the daemon stops.
type localDashboard struct {
	mu   sync.Mutex
	srv  *http.Server
	ln   net.Listener
	errc chan<- error // serve's: a failed Serve stops the daemon
}

// start lets OpenLocal open the port, reporting to errc.
func (l *localDashboard) start(errc chan<- error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errc = errc
}

// shutdown stops serving the port.
func (l *localDashboard) shutdown(ctx context.Context) {
	l.mu.Lock()
	srv := l.srv
	l.mu.Unlock()
	if srv != nil {
		srv.Shutdown(ctx)
	}
}

// dashboardOpener is the System as the API's api.Dashboard.
type dashboardOpener System

// OpenLocal opens the loopback port on first use and returns a one-time
// link to it.
func (o *dashboardOpener) OpenLocal(ctx context.Context) (model.DashboardLink, error) {
	s := (*System)(o)
	l := &s.local
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.errc == nil {
		return model.DashboardLink{}, model.Errorf(model.KindConflict, "the daemon is not serving yet")
	}
	if l.ln == nil {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return model.DashboardLink{}, fmt.Errorf("open the dashboard's loopback port: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle(dashboard.Prefix, s.Dashboard)
		mux.Handle("/", http.RedirectHandler(dashboard.Prefix, http.StatusSeeOther))
		l.ln, l.srv = ln, &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		s.addListener(ln)
		errc, srv := l.errc, l.srv
		go func() {
			if err := srv.Serve(ln); err != http.ErrServerClosed {
				errc <- err
			}
		}()
		s.log.Info("dashboard served on loopback", "addr", ln.Addr())
	}
	return s.Dashboard.LoginLink("http://" + l.ln.Addr().String()), nil
}
