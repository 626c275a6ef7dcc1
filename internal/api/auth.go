package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/torpor-dev/torpor/internal/auth"
	"github.com/torpor-dev/torpor/internal/model"
)

// Tokens authenticates and manages API tokens (package auth implements it).
type Tokens interface {
	// Authenticate returns the token of a bearer string, or an error wrapping
	// auth.ErrInvalid or auth.ErrExpired.
	Authenticate(ctx context.Context, bearer string) (model.Token, error)
	Create(ctx context.Context, req model.CreateTokenRequest) (model.CreatedToken, error)
	List(ctx context.Context) ([]model.Token, error)
	Revoke(ctx context.Context, id string) error
}

// contextKey keys the API's values in request contexts.
type contextKey int

const (
	localKey  contextKey = iota // bool: the request came over the local admin socket
	callerKey                   // caller: who is calling, set by authenticate
	whoKey                      // *string: the caller's name for the request log
)

// WithLocalAdmin marks ctx as the context of a connection to the local admin
// socket, whose requests are trusted as admin without a token. Only the
// daemon's listener code calls it (http.Server.ConnContext), from the kind of
// connection itself, and the dashboard, for the calls of a session that a
// one-time link from the admin socket opened: nothing a client sends can
// set it.
func WithLocalAdmin(ctx context.Context) context.Context {
	return context.WithValue(ctx, localKey, true)
}

// IsLocalAdmin reports whether ctx is that of a request on the local admin
// socket (see WithLocalAdmin).
func IsLocalAdmin(ctx context.Context) bool { return isLocal(ctx) }

func isLocal(ctx context.Context) bool {
	v, _ := ctx.Value(localKey).(bool)
	return v
}

// caller is who makes a request: the local admin socket or a token.
type caller struct {
	local bool
	token model.Token
}

func (c caller) admin() bool { return c.local || c.token.Admin }

func (c caller) allows(app string) bool { return c.local || c.token.Allows(app) }

func (c caller) String() string {
	if c.local {
		return "local"
	}
	return "token:" + c.token.ID
}

// callerOf returns the request's caller; without one (a route outside /v1)
// it is the zero caller, which may do nothing.
func callerOf(ctx context.Context) caller {
	c, _ := ctx.Value(callerKey).(caller)
	return c
}

func withWho(ctx context.Context, who *string) context.Context {
	return context.WithValue(ctx, whoKey, who)
}

// authenticate identifies the caller of every /v1 request and of /metrics:
// requests over the local admin socket are admin; any other needs a valid
// bearer token, else it is answered 401. Other routes (/healthz) need
// nothing.
func (s *server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1" && !strings.HasPrefix(r.URL.Path, "/v1/") && r.URL.Path != "/metrics" {
			next.ServeHTTP(w, r)
			return
		}
		c, err := s.identify(r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if who, ok := r.Context().Value(whoKey).(*string); ok {
			*who = c.String()
		}
		ctx := context.WithValue(r.Context(), callerKey, c)
		if !c.admin() {
			ctx = model.AsTenant(ctx)
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// identify returns the caller of r or a 401 error.
func (s *server) identify(r *http.Request) (caller, error) {
	if isLocal(r.Context()) {
		return caller{local: true}, nil
	}
	bearer, found := bearerToken(r)
	if !found {
		return caller{}, unauthorized(`missing bearer token: send "Authorization: Bearer <token>" (create one with "torpor token create" on the daemon's host)`, "")
	}
	if s.cfg.Tokens == nil {
		return caller{}, unauthorized(auth.ErrInvalid.Error(), "invalid_token")
	}
	tok, err := s.cfg.Tokens.Authenticate(r.Context(), bearer)
	switch {
	case errors.Is(err, auth.ErrInvalid), errors.Is(err, auth.ErrExpired):
		return caller{}, unauthorized(err.Error(), "invalid_token")
	case err != nil:
		return caller{}, err
	}
	return caller{token: tok}, nil
}

// authError is a 401 or 403 answer with its WWW-Authenticate challenge
// (RFC 6750).
type authError struct {
	httpError
	challenge string
}

func (e *authError) Unwrap() error { return &e.httpError }

// unauthorized is a 401 error; code is the RFC 6750 error code, if any.
func unauthorized(msg, code string) error {
	return &authError{httpError: httpError{status: http.StatusUnauthorized, msg: msg}, challenge: challenge(code)}
}

// forbidden is a 403 error: a valid token used outside its scope.
func forbidden(format string, args ...any) error {
	return &authError{httpError: httpError{status: http.StatusForbidden, msg: fmt.Sprintf(format, args...)},
		challenge: challenge("insufficient_scope")}
}

func challenge(code string) string {
	if code == "" {
		return `Bearer realm="torpor"`
	}
	return fmt.Sprintf(`Bearer realm="torpor", error=%q`, code)
}

// bearerToken returns the token of an "Authorization: Bearer <token>" header.
func bearerToken(r *http.Request) (string, bool) {
	scheme, token, found := strings.Cut(r.Header.Get("Authorization"), " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// authorize checks that the caller may make request r: admin-only routes need
// an admin, routes with an {app} need a caller allowed that app. A token
// gets the same 403 whether the app exists or not, so it cannot probe for
// other apps.
func authorize(r *http.Request, adminOnly bool) error {
	c := callerOf(r.Context())
	if adminOnly && !c.admin() {
		return forbidden("this route needs an admin token or the local admin socket; token %s is scoped to apps %s",
			c.token.ID, strings.Join(c.token.Apps, ", "))
	}
	if app := r.PathValue("app"); app != "" && !c.allows(app) {
		return forbidden("token %s is not allowed to use app %q", c.token.ID, app)
	}
	return nil
}
