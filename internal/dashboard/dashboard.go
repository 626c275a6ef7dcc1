// Package dashboard owns torpor's web dashboard, served by `torpor serve`
// under /ui/: the page and its assets (embedded in the binary, plain
// JavaScript and SVG, nothing fetched from elsewhere), the login (a token
// on TCP, or a one-time link that the admin socket hands out), the cookie
// sessions and their CSRF protection, and the live stream of machine
// changes (server-sent events fed by machine.Manager.Subscribe).
//
// It owns no data and no rules of its own: every read and every button of
// the page is an API call, forwarded to the API handler as the session's
// caller (the session's token, or the local admin), so the API's
// validation, scopes and errors apply unchanged. See docs/dashboard.md.
package dashboard

import (
	"context"
	"embed"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/torpor-dev/torpor/internal/api"
	"github.com/torpor-dev/torpor/internal/model"
)

//go:embed assets
var assets embed.FS

// Machines is what the dashboard needs of the machine lifecycle: the
// stream of committed changes (machine.Manager implements it).
type Machines interface {
	Subscribe(fn func(model.Change)) (cancel func())
}

// Tokens checks the tokens people log in with (package auth implements it).
type Tokens interface {
	Authenticate(ctx context.Context, bearer string) (model.Token, error)
}

// Config configures a Dashboard.
type Config struct {
	Machines Machines
	// Tokens checks login tokens; nil refuses token logins.
	Tokens Tokens
	// API is the API handler the page's calls are forwarded to.
	API http.Handler
	// SessionTTL bounds a session's life (default 12h); a token session
	// also ends when its token is revoked or expires.
	SessionTTL time.Duration
	// LinkTTL is how long a one-time login link stays valid (default 5m).
	LinkTTL time.Duration
	Logger  *slog.Logger
}

// Dashboard serves /ui/. It is safe for concurrent use.
type Dashboard struct {
	cfg    Config
	log    *slog.Logger
	static http.Handler
	pages  *template.Template

	sessions sessions
	hub      *hub
	cancel   func()
	closed   chan struct{}
	once     sync.Once
}

// Prefix is where the dashboard is served.
const Prefix = "/ui/"

// New returns a Dashboard following cfg.Machines' changes until Close.
func New(cfg Config) *Dashboard {
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if cfg.LinkTTL <= 0 {
		cfg.LinkTTL = 5 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err)
	}
	d := &Dashboard{
		cfg:      cfg,
		log:      cfg.Logger,
		static:   http.StripPrefix(Prefix+"assets/", http.FileServerFS(static)),
		pages:    template.Must(template.ParseFS(assets, "assets/*.html")),
		sessions: sessions{byID: map[string]*session{}, links: map[string]time.Time{}},
		hub:      newHub(),
		closed:   make(chan struct{}),
	}
	d.cancel = cfg.Machines.Subscribe(d.hub.publish)
	return d
}

// Close stops following changes and ends the live streams.
func (d *Dashboard) Close() {
	d.once.Do(func() {
		d.cancel()
		close(d.closed)
	})
}

// ServeHTTP serves everything under /ui/.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	secureHeaders(w)
	path := r.URL.Path
	switch {
	case path == "/ui" || path == Prefix:
		d.index(w, r)
	case strings.HasPrefix(path, Prefix+"assets/"):
		w.Header().Set("Cache-Control", "no-cache")
		d.static.ServeHTTP(w, r)
	case path == Prefix+"login":
		d.login(w, r)
	case path == Prefix+"logout":
		d.logout(w, r)
	case path == Prefix+"api/stream":
		d.stream(w, r)
	case strings.HasPrefix(path, Prefix+"api/v1/"):
		d.forward(w, r)
	default:
		writeError(w, http.StatusNotFound, "no such page: "+path)
	}
}

// secureHeaders keeps the page to its own origin: its scripts, styles and
// connections, never framed, no referrer to other sites (a one-time link
// never leaks).
func secureHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
}

// index serves the page to a session, and sends anyone else to the login.
func (d *Dashboard) index(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed on "+r.URL.Path)
		return
	}
	s, err := d.session(r)
	if err != nil {
		http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	d.pages.ExecuteTemplate(w, "index.html", map[string]any{"CSRF": s.csrf, "Who": s.who(), "Local": s.local && s.id == ""})
}

// forward sends an API call of the page to the API handler as the
// session's caller: /ui/api/v1/... becomes /v1/....
func (d *Dashboard) forward(w http.ResponseWriter, r *http.Request) {
	s, err := d.session(r)
	if err != nil {
		writeError(w, http.StatusUnauthorized, err.Error())
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodPost, http.MethodDelete:
		if err := s.checkCSRF(r); err != nil {
			writeError(w, http.StatusForbidden, err.Error())
			return
		}
	default:
		writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed on "+r.URL.Path)
		return
	}
	// A forwarded call that streams (a followed log) ends with the
	// dashboard, so that the daemon's shutdown does not wait for it.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-d.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	out := r.Clone(ctx)
	out.URL.Path = strings.TrimPrefix(r.URL.Path, "/ui/api")
	out.URL.RawPath = ""
	out.RequestURI = ""
	out.Header.Del("Cookie")
	out.Header.Del(csrfHeader)
	out.Header.Del("Authorization")
	if s.local {
		out = out.WithContext(api.WithLocalAdmin(out.Context()))
	} else {
		out.Header.Set("Authorization", "Bearer "+s.bearer)
	}
	w.Header().Set("Cache-Control", "no-store")
	d.cfg.API.ServeHTTP(w, out)
}

// writeError answers {"error": msg}, the shape of the API's errors.
func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write([]byte(`{"error":` + jsonString(msg) + "}\n"))
}
