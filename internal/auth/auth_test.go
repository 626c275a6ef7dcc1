package auth

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/store"
)

// clock is a settable time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTokens(t *testing.T) (*Tokens, *store.Store, *clock) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "torpor.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c := &clock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	return New(st, c.now), st, c
}

func TestCreateAuthenticate(t *testing.T) {
	tk, st, _ := newTokens(t)
	ctx := context.Background()
	ct, err := tk.Create(ctx, model.CreateTokenRequest{Name: "ci", Apps: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ct.Secret, Prefix+ct.ID+"_") || len(ct.Secret) != len(Prefix)+16+1+64 {
		t.Fatalf("token %q does not read torpor_<id>_<secret>", ct.Secret)
	}
	got, err := tk.Authenticate(ctx, ct.Secret)
	if err != nil || got.ID != ct.ID || !got.Allows("a") || got.Allows("b") || got.Admin {
		t.Fatalf("Authenticate = %+v, %v", got, err)
	}
	// The store holds a hash, never the secret.
	secretHex := strings.TrimPrefix(ct.Secret, Prefix+ct.ID+"_")
	st.View(func(tx *store.Tx) error {
		_, h, err := tx.Token(ct.ID)
		if err != nil || len(h) != 32 || strings.Contains(string(h), secretHex) {
			t.Errorf("stored hash %x, %v", h, err)
		}
		return nil
	})
}

func TestAuthenticateRejects(t *testing.T) {
	tk, _, _ := newTokens(t)
	ctx := context.Background()
	ct, err := tk.Create(ctx, model.CreateTokenRequest{Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	other, err := tk.Create(ctx, model.CreateTokenRequest{Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	last := ct.Secret[len(ct.Secret)-1]
	flipped := ct.Secret[:len(ct.Secret)-1] + string("01"[boolInt(last == '0')])
	swapped := Prefix + other.ID + strings.TrimPrefix(ct.Secret, Prefix+ct.ID) // ct's secret under other's ID
	for name, s := range map[string]string{
		"empty": "", "no prefix": strings.TrimPrefix(ct.Secret, Prefix), "wrong secret": flipped,
		"upper hex": strings.ToUpper(ct.Secret), "short": ct.Secret[:len(ct.Secret)-2],
		"unknown id": Prefix + "0000000000000000" + ct.Secret[len(Prefix)+16:], "swapped id": swapped,
		"trailing": ct.Secret + "0",
	} {
		if _, err := tk.Authenticate(ctx, s); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %q: err %v, want ErrInvalid", name, s, err)
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestExpiry(t *testing.T) {
	tk, _, c := newTokens(t)
	ctx := context.Background()
	ct, err := tk.Create(ctx, model.CreateTokenRequest{Apps: []string{"a"}, ExpiresIn: model.Duration{Duration: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	if ct.ExpiresAt == nil || !ct.ExpiresAt.Equal(c.t.Add(time.Hour)) {
		t.Fatalf("expires_at %v, want %v", ct.ExpiresAt, c.t.Add(time.Hour))
	}
	c.t = c.t.Add(time.Hour - time.Second)
	if _, err := tk.Authenticate(ctx, ct.Secret); err != nil {
		t.Fatalf("before expiry: %v", err)
	}
	c.t = c.t.Add(time.Second)
	if _, err := tk.Authenticate(ctx, ct.Secret); !errors.Is(err, ErrExpired) {
		t.Fatalf("at expiry: err %v, want ErrExpired", err)
	}
}

func TestRevoke(t *testing.T) {
	tk, _, _ := newTokens(t)
	ctx := context.Background()
	ct, _ := tk.Create(ctx, model.CreateTokenRequest{Apps: []string{"a"}})
	keep, _ := tk.Create(ctx, model.CreateTokenRequest{Apps: []string{"b"}})
	if err := tk.Revoke(ctx, ct.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Authenticate(ctx, ct.Secret); !errors.Is(err, ErrInvalid) {
		t.Fatalf("revoked token: err %v, want ErrInvalid", err)
	}
	if _, err := tk.Authenticate(ctx, keep.Secret); err != nil {
		t.Fatalf("other token: %v", err)
	}
	if err := tk.Revoke(ctx, ct.ID); !model.IsNotFound(err) {
		t.Fatalf("second revoke: %v, want not found", err)
	}
	list, err := tk.List(ctx)
	if err != nil || len(list) != 1 || list[0].ID != keep.ID {
		t.Fatalf("List = %+v, %v", list, err)
	}
}

func TestCreateNeedsOneScope(t *testing.T) {
	tk, _, _ := newTokens(t)
	for _, req := range []model.CreateTokenRequest{{}, {Admin: true, Apps: []string{"a"}}} {
		if _, err := tk.Create(context.Background(), req); model.KindOf(err) != model.KindInvalid {
			t.Errorf("Create(%+v): err %v, want invalid", req, err)
		}
	}
}

func TestAllows(t *testing.T) {
	admin := model.Token{Admin: true}
	scoped := model.Token{Apps: []string{"a", "c"}}
	for _, app := range []string{"a", "b", "c", ""} {
		if !admin.Allows(app) {
			t.Errorf("admin does not allow %q", app)
		}
		if want := app == "a" || app == "c"; scoped.Allows(app) != want {
			t.Errorf("scoped.Allows(%q) = %v", app, !want)
		}
	}
}
