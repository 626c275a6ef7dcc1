package apitest

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/torpor-dev/torpor/internal/api"
	"github.com/torpor-dev/torpor/internal/auth"
	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/store"
)

// Local serves h as if every request came over the local admin socket, as
// the daemon marks them: for tests that are not about authentication.
func Local(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(api.WithLocalAdmin(r.Context())))
	})
}

// NewTokens returns real tokens (package auth) kept in a store in a
// temporary directory of t.
func NewTokens(t testing.TB) *auth.Tokens {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "tokens.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return auth.New(st, nil)
}

// MustToken creates a token in tokens and returns its secret.
func MustToken(t testing.TB, tokens *auth.Tokens, req model.CreateTokenRequest) model.CreatedToken {
	t.Helper()
	tok, err := tokens.Create(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
