package model

import (
	"slices"
	"time"
)

// Token describes an API token. Its secret is shown once, when the token is
// created (CreatedToken), and never stored: the store keeps a hash of it.
type Token struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
	// Admin tokens may use every app and manage tokens.
	Admin bool `json:"admin"`
	// Apps are the apps a non-admin token may use, by name.
	Apps      []string   `json:"apps,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// Allows reports whether the token may use app.
func (t Token) Allows(app string) bool {
	return t.Admin || slices.Contains(t.Apps, app)
}

// Expired reports whether the token has expired at now.
func (t Token) Expired(now time.Time) bool {
	return t.ExpiresAt != nil && !now.Before(*t.ExpiresAt)
}

// CreateTokenRequest is the body of POST /v1/tokens. Exactly one of Admin
// and Apps must be set.
type CreateTokenRequest struct {
	Name  string   `json:"name,omitempty"`
	Admin bool     `json:"admin,omitempty"`
	Apps  []string `json:"apps,omitempty"`
	// ExpiresIn, when set, makes the token expire that long after creation.
	ExpiresIn Duration `json:"expires_in,omitempty"`
}

// CreatedToken is the answer of POST /v1/tokens: the token and, this once,
// its secret.
type CreatedToken struct {
	Token
	// Secret is the bearer token to send ("Authorization: Bearer <secret>").
	Secret string `json:"token"`
}
