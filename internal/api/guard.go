package api

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"runtime/debug"
	"strings"
	"unicode/utf8"
)

// URL bounds: longer requests are answered 414.
const (
	maxPathBytes  = 1024
	maxQueryBytes = 4096
)

// guard checks what every request shares before routing: a clean, printable
// path of bounded length and a well-formed query string. It also turns a
// panic of a handler into a logged 500 JSON error instead of a dropped
// connection (a panic is a bug; the fuzz tests look for them).
func (s *server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer s.recoverPanic(w, r)
		if err := checkURL(r.URL); err != nil {
			s.writeError(w, r, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// recoverPanic answers 500 for a panic of the handler; it must be deferred.
func (s *server) recoverPanic(w http.ResponseWriter, r *http.Request) {
	v := recover()
	if v == nil {
		return
	}
	if v == http.ErrAbortHandler {
		panic(v)
	}
	s.log.LogAttrs(r.Context(), slog.LevelError, "handler panic",
		slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.Any("panic", v), slog.String("stack", string(debug.Stack())))
	writeJSON(w, http.StatusInternalServerError, errorBody{Error: "internal error (a bug: see the daemon's log)", Status: "unknown"})
}

// checkURL refuses paths that are too long, not valid UTF-8, hold control
// characters or are not clean (empty, "." or ".." segments, a trailing
// slash), and query strings that are too long or malformed.
func checkURL(u *url.URL) error {
	p := u.Path
	switch {
	case len(p) > maxPathBytes || len(u.RawQuery) > maxQueryBytes:
		return &httpError{status: http.StatusRequestURITooLong,
			msg: fmt.Sprintf("request URI too long: the path may have %d bytes and the query %d", maxPathBytes, maxQueryBytes)}
	case !utf8.ValidString(p) || strings.ContainsFunc(p, isControl):
		return &httpError{status: http.StatusBadRequest,
			msg: fmt.Sprintf("invalid path %q: must be valid UTF-8 without control characters", p)}
	case p != "/" && path.Clean(p) != p:
		return &httpError{status: http.StatusBadRequest,
			msg: fmt.Sprintf("invalid path %q: must not have empty, \".\" or \"..\" segments or a trailing slash", p)}
	}
	if _, err := url.ParseQuery(u.RawQuery); err != nil {
		return &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf("invalid query string: %v", err)}
	}
	return nil
}

// isControl reports whether c is an ASCII or C1 control character.
func isControl(c rune) bool { return c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0) }
