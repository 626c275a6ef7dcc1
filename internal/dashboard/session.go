package dashboard

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/torpor-dev/torpor/internal/api"
	"github.com/torpor-dev/torpor/internal/identifiers"
	"github.com/torpor-dev/torpor/internal/model"
)

// csrfHeader carries a session's CSRF token on every call that changes
// something; a page of another origin can neither read the token nor set
// the header on a cross-site request.
const csrfHeader = "X-Torpor-CSRF"

// maxSessions bounds the sessions kept in memory.
const maxSessions = 1000

// session is one logged-in browser. Sessions live in the daemon's memory
// only: a restarted daemon logs everybody out.
type session struct {
	id      string // the cookie's value; "" for a request on the admin socket
	csrf    string
	local   bool   // the local admin (a one-time link, or the admin socket itself)
	bearer  string // the token a token session logged in with, checked again on every call
	token   model.Token
	expires time.Time
}

func (s *session) who() string {
	switch {
	case s.local:
		return "local admin"
	case s.token.Name != "":
		return "token " + s.token.ID + " (" + s.token.Name + ")"
	}
	return "token " + s.token.ID
}

// allows reports whether the session may see app.
func (s *session) allows(app string) bool { return s.local || s.token.Allows(app) }

// checkCSRF fails unless r carries the session's CSRF token (in the header,
// or the form field of the logout form) and comes from the page's origin.
func (s *session) checkCSRF(r *http.Request) error {
	if s.id == "" {
		return nil // the admin socket: no browser, no cookie to ride on
	}
	if err := sameOrigin(r); err != nil {
		return err
	}
	got := r.Header.Get(csrfHeader)
	if got == "" {
		got = r.PostFormValue("csrf")
	}
	if subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) != 1 {
		return errors.New("missing or wrong CSRF token: reload the dashboard")
	}
	return nil
}

// sameOrigin fails for a request whose Origin (sent by browsers on every
// POST) is another site than the one it was sent to.
func sameOrigin(r *http.Request) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host != r.Host {
		return errors.New("request from another origin (" + origin + ") refused")
	}
	return nil
}

// sessions are the logged-in browsers and the one-time links not used yet.
type sessions struct {
	mu    sync.Mutex
	byID  map[string]*session
	links map[string]time.Time // one-time code → expiry
}

func (ss *sessions) add(s *session) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	now := time.Now()
	for id, old := range ss.byID {
		if now.After(old.expires) {
			delete(ss.byID, id)
		}
	}
	if len(ss.byID) >= maxSessions {
		return errors.New("too many dashboard sessions: log out of some, or restart the daemon")
	}
	s.id, s.csrf = identifiers.Random(32), identifiers.Random(32)
	ss.byID[s.id] = s
	return nil
}

func (ss *sessions) get(id string) *session {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.byID[id]
	if s != nil && time.Now().After(s.expires) {
		delete(ss.byID, id)
		return nil
	}
	return s
}

func (ss *sessions) remove(id string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.byID, id)
}

// newLink returns a one-time code valid for ttl.
func (ss *sessions) newLink(ttl time.Duration) (string, time.Time) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	now := time.Now()
	for code, exp := range ss.links {
		if now.After(exp) {
			delete(ss.links, code)
		}
	}
	code, exp := identifiers.Random(32), now.Add(ttl)
	ss.links[code] = exp
	return code, exp
}

// useLink burns a one-time code; it reports whether the code was valid.
func (ss *sessions) useLink(code string) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	exp, ok := ss.links[code]
	delete(ss.links, code)
	return ok && time.Now().Before(exp)
}

// errNoSession is why a request without a valid session is refused.
var errNoSession = errors.New("not logged in to the dashboard (or the session ended): log in at " + Prefix + "login")

// session returns the session of r: its cookie's, checked again (a token
// session ends when its token is revoked or expires), or the local admin's
// for a request on the admin socket.
func (d *Dashboard) session(r *http.Request) (*session, error) {
	if api.IsLocalAdmin(r.Context()) {
		return &session{local: true}, nil
	}
	c, err := r.Cookie(cookieName(r))
	if err != nil {
		return nil, errNoSession
	}
	s := d.sessions.get(c.Value)
	if s == nil {
		return nil, errNoSession
	}
	if !s.local {
		if d.cfg.Tokens == nil {
			return nil, errNoSession
		}
		if _, err := d.cfg.Tokens.Authenticate(r.Context(), s.bearer); err != nil {
			d.sessions.remove(s.id)
			return nil, errors.New("the session's token is no longer valid (" + err.Error() + "): log in again")
		}
	}
	return s, nil
}

// cookieName is the session cookie's name on the listener r came in on.
// Browsers share cookies between the ports of one host: each port (the
// TCP API, the loopback port of `torpor dashboard`, another daemon's) gets
// a cookie of its own.
func cookieName(r *http.Request) string {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(*net.TCPAddr); ok {
		return "torpor_session_" + strconv.Itoa(a.Port)
	}
	return "torpor_session"
}

func (d *Dashboard) setCookie(w http.ResponseWriter, r *http.Request, s *session) {
	http.SetCookie(w, &http.Cookie{Name: cookieName(r), Value: s.id, Path: Prefix, Expires: s.expires,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
}

// LoginLink returns a one-time link that logs a browser in as the local
// admin, for the dashboard served at base (scheme://host:port).
func (d *Dashboard) LoginLink(base string) model.DashboardLink {
	code, exp := d.sessions.newLink(d.cfg.LinkTTL)
	return model.DashboardLink{URL: base + Prefix + "login?code=" + code, ExpiresAt: exp.UTC()}
}

// login serves the login page and its form (a token), and turns a
// one-time link's code into a session.
func (d *Dashboard) login(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodGet && r.URL.Query().Has("code"):
		if !d.sessions.useLink(r.URL.Query().Get("code")) {
			d.loginPage(w, http.StatusUnauthorized, "This login link was used already or has expired: run \"torpor dashboard\" again for a new one.")
			return
		}
		d.startSession(w, r, &session{local: true})
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		d.loginPage(w, http.StatusOK, "")
	case r.Method == http.MethodPost:
		if err := sameOrigin(r); err != nil {
			d.loginPage(w, http.StatusForbidden, err.Error())
			return
		}
		bearer := r.PostFormValue("token")
		if d.cfg.Tokens == nil {
			d.loginPage(w, http.StatusUnauthorized, "This daemon takes no token logins.")
			return
		}
		if bearer == "" {
			d.loginPage(w, http.StatusBadRequest, "Paste a token (torpor token create).")
			return
		}
		tok, err := d.cfg.Tokens.Authenticate(r.Context(), bearer)
		if err != nil {
			d.log.Warn("dashboard login refused", "remote", r.RemoteAddr, "err", err)
			d.loginPage(w, http.StatusUnauthorized, "Login refused: "+err.Error())
			return
		}
		d.startSession(w, r, &session{bearer: bearer, token: tok})
	default:
		writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed on "+r.URL.Path)
	}
}

func (d *Dashboard) startSession(w http.ResponseWriter, r *http.Request, s *session) {
	s.expires = time.Now().Add(d.cfg.SessionTTL)
	if s.token.ExpiresAt != nil && s.token.ExpiresAt.Before(s.expires) {
		s.expires = *s.token.ExpiresAt
	}
	if err := d.sessions.add(s); err != nil {
		d.loginPage(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	d.log.Info("dashboard login", "who", s.who(), "remote", r.RemoteAddr)
	d.setCookie(w, r, s)
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
}

func (d *Dashboard) loginPage(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	d.pages.ExecuteTemplate(w, "login.html", map[string]any{"Error": msg, "Tokens": d.cfg.Tokens != nil})
}

// logout ends the session (a POST with its CSRF token).
func (d *Dashboard) logout(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeError(w, http.StatusMethodNotAllowed, "log out with POST")
		return
	}
	s, err := d.session(r)
	if err == nil {
		if err := s.checkCSRF(r); err != nil {
			writeError(w, http.StatusForbidden, err.Error())
			return
		}
		d.sessions.remove(s.id)
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName(r), Value: "", Path: Prefix, MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
