// Package auth owns torpor's API tokens: it makes them (a random 256-bit
// secret behind a recognisable prefix and a lookup ID), keeps only a hash of
// the secret in the store, and checks a presented bearer token against it in
// constant time. Which token may do what (scopes) is decided by the API with
// model.Token.Allows; this package only says who is calling.
//
// A token reads "torpor_<id>_<secret>": id is 16 hex digits (64 random bits,
// not secret, the store key) and secret 64 hex digits (256 random bits). The
// prefix lets secret scanners and people recognise a leaked token.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/store"
)

// Prefix starts every token.
const Prefix = "torpor_"

// Sizes of a token's parts, in bytes before hex encoding.
const (
	idBytes     = 8
	secretBytes = 32
)

// Errors of Authenticate, to be matched with errors.Is.
var (
	// ErrInvalid: malformed, unknown (never created or revoked) or wrong secret.
	ErrInvalid = errors.New("invalid bearer token")
	// ErrExpired: the token was valid but its expires_at has passed.
	ErrExpired = errors.New("bearer token has expired")
)

// Tokens creates, lists, revokes and authenticates tokens kept in a Backend.
type Tokens struct {
	b   Backend
	now func() time.Time
}

// Backend keeps token records (a token and the hash of its secret): the
// host's store, or etcd in a cluster (package cluster), where every host
// accepts every token.
type Backend interface {
	// CreateToken stores a new token; KindConflict if its ID is taken.
	CreateToken(ctx context.Context, tok model.Token, hash []byte) error
	// Token returns a token and its hash; KindNotFound if there is none.
	Token(ctx context.Context, id string) (model.Token, []byte, error)
	// Tokens lists every token, ordered by ID.
	Tokens(ctx context.Context) ([]model.Token, error)
	// DeleteToken removes a token; KindNotFound if there is none.
	DeleteToken(ctx context.Context, id string) error
}

// New returns the tokens of st. A nil now uses time.Now.
func New(st *store.Store, now func() time.Time) *Tokens { return NewWith(storeBackend{st}, now) }

// NewWith returns the tokens of b. A nil now uses time.Now.
func NewWith(b Backend, now func() time.Time) *Tokens {
	if now == nil {
		now = time.Now
	}
	return &Tokens{b: b, now: now}
}

// storeBackend keeps tokens in the host's store.
type storeBackend struct{ st *store.Store }

func (s storeBackend) CreateToken(_ context.Context, tok model.Token, hash []byte) error {
	return s.st.Update(func(tx *store.Tx) error { return tx.CreateToken(tok, hash) })
}

func (s storeBackend) Token(_ context.Context, id string) (tok model.Token, hash []byte, err error) {
	err = s.st.View(func(tx *store.Tx) error {
		tok, hash, err = tx.Token(id)
		return err
	})
	return tok, hash, err
}

func (s storeBackend) Tokens(context.Context) (out []model.Token, err error) {
	err = s.st.View(func(tx *store.Tx) error {
		out, err = tx.Tokens()
		return err
	})
	return out, err
}

func (s storeBackend) DeleteToken(_ context.Context, id string) error {
	return s.st.Update(func(tx *store.Tx) error { return tx.DeleteToken(id) })
}

// Create makes a token for req and returns it with its secret, which is not
// kept anywhere. Exactly one of req.Admin and req.Apps must be set; the API
// validates names and durations before calling.
func (t *Tokens) Create(ctx context.Context, req model.CreateTokenRequest) (model.CreatedToken, error) {
	if req.Admin == (len(req.Apps) > 0) {
		return model.CreatedToken{}, model.Errorf(model.KindInvalid, "a token needs either admin or a list of apps, not both or neither")
	}
	id, secret, err := generate()
	if err != nil {
		return model.CreatedToken{}, err
	}
	now := t.now().UTC().Truncate(time.Second)
	tok := model.Token{ID: id, Name: req.Name, Admin: req.Admin, Apps: req.Apps, CreatedAt: now}
	if req.ExpiresIn.Duration > 0 {
		exp := now.Add(req.ExpiresIn.Duration)
		tok.ExpiresAt = &exp
	}
	if err := t.b.CreateToken(ctx, tok, hash(id, secret)); err != nil {
		return model.CreatedToken{}, err
	}
	return model.CreatedToken{Token: tok, Secret: format(id, secret)}, nil
}

// List returns every token (without secrets), ordered by ID.
func (t *Tokens) List(ctx context.Context) ([]model.Token, error) {
	return t.b.Tokens(ctx)
}

// Revoke deletes a token: it stops working at once. An unknown ID is a
// KindNotFound error.
func (t *Tokens) Revoke(ctx context.Context, id string) error {
	return t.b.DeleteToken(ctx, id)
}

// Authenticate returns the token whose string bearer is, or ErrInvalid or
// ErrExpired.
func (t *Tokens) Authenticate(ctx context.Context, bearer string) (model.Token, error) {
	id, secret, ok := parse(bearer)
	if !ok {
		return model.Token{}, ErrInvalid
	}
	tok, want, err := t.b.Token(ctx, id)
	if model.IsNotFound(err) {
		return model.Token{}, ErrInvalid
	}
	if err != nil {
		return model.Token{}, err
	}
	if subtle.ConstantTimeCompare(hash(id, secret), want) != 1 {
		return model.Token{}, ErrInvalid
	}
	if tok.Expired(t.now()) {
		return model.Token{}, ErrExpired
	}
	return tok, nil
}

// generate returns a new random ID and secret.
func generate() (id string, secret []byte, err error) {
	b := make([]byte, idBytes+secretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", nil, fmt.Errorf("generate token: %w", err)
	}
	return hex.EncodeToString(b[:idBytes]), b[idBytes:], nil
}

// format writes a token string.
func format(id string, secret []byte) string {
	return Prefix + id + "_" + hex.EncodeToString(secret)
}

// parse splits a token string into its ID and secret.
func parse(s string) (id string, secret []byte, ok bool) {
	rest, found := strings.CutPrefix(s, Prefix)
	if !found {
		return "", nil, false
	}
	id, hexSecret, found := strings.Cut(rest, "_")
	if !found || len(id) != 2*idBytes || len(hexSecret) != 2*secretBytes || !isLowerHex(id) || !isLowerHex(hexSecret) {
		return "", nil, false
	}
	secret, err := hex.DecodeString(hexSecret)
	return id, secret, err == nil
}

// isLowerHex reports whether s is lowercase hex digits only.
func isLowerHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// hash is what the store keeps of a secret: SHA-256 over a version tag, the
// ID and the secret, so a stored hash only matches under its own ID.
//
// A fast hash is right here, unlike for passwords: the secret is 256 random
// bits, so even with the hash in hand nobody can search the secret space,
// and slow hashes (bcrypt, argon2) exist only to make guessing low-entropy
// human passwords expensive. They would instead cost every API request tens
// of milliseconds of CPU and make the daemon easy to overload.
func hash(id string, secret []byte) []byte {
	h := sha256.New()
	h.Write([]byte("torpor-token-v1\x00" + id + "\x00"))
	h.Write(secret)
	return h.Sum(nil)
}
