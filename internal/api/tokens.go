package api

import (
	"net/http"
	"slices"
	"unicode"

	"github.com/torpor-dev/torpor/internal/identifiers"
	"github.com/torpor-dev/torpor/internal/model"
)

// Token request limits.
const (
	maxTokenNameLen = 64
	maxTokenApps    = 100
	tokenIDLen      = 16
)

// tokenList is the answer of GET /v1/tokens.
type tokenList struct {
	Tokens []model.Token `json:"tokens"`
}

func (s *server) createToken(r *http.Request) (int, any, error) {
	if s.cfg.Tokens == nil {
		return 0, nil, model.Errorf(model.KindUnavailable, "this daemon has no token store")
	}
	var req model.CreateTokenRequest
	if err := requireBody(r, &req); err != nil {
		return 0, nil, err
	}
	if err := validTokenRequest(&req); err != nil {
		return 0, nil, err
	}
	tok, err := s.cfg.Tokens.Create(r.Context(), req)
	return http.StatusCreated, tok, err
}

// validTokenRequest checks a token request and sorts and deduplicates its apps.
func validTokenRequest(req *model.CreateTokenRequest) error {
	if len(req.Name) > maxTokenNameLen || !printable(req.Name) {
		return model.Errorf(model.KindInvalid, "invalid name %q: must be at most %d printable characters", req.Name, maxTokenNameLen)
	}
	if req.Admin == (len(req.Apps) > 0) {
		return model.Errorf(model.KindInvalid, "invalid scope: set either admin: true or apps: [...] (not both, not neither)")
	}
	if len(req.Apps) > maxTokenApps {
		return model.Errorf(model.KindInvalid, "invalid apps: at most %d apps per token", maxTokenApps)
	}
	for _, app := range req.Apps {
		if err := identifiers.AppName("apps entry", app); err != nil {
			return err
		}
	}
	slices.Sort(req.Apps)
	req.Apps = slices.Compact(req.Apps)
	if req.ExpiresIn.Duration < 0 {
		return model.Errorf(model.KindInvalid, "invalid expires_in %s: must not be negative (omit it for a token that does not expire)", req.ExpiresIn.Duration)
	}
	return nil
}

// printable reports whether s has no control characters.
func printable(s string) bool {
	for _, c := range s {
		if !unicode.IsPrint(c) {
			return false
		}
	}
	return true
}

func (s *server) listTokens(r *http.Request) (int, any, error) {
	if s.cfg.Tokens == nil {
		return http.StatusOK, tokenList{Tokens: []model.Token{}}, nil
	}
	list, err := s.cfg.Tokens.List(r.Context())
	if list == nil {
		list = []model.Token{}
	}
	return http.StatusOK, tokenList{Tokens: list}, err
}

func (s *server) revokeToken(r *http.Request) (int, any, error) {
	id := r.PathValue("id")
	if len(id) != tokenIDLen || !isLowerHex(id) {
		return 0, nil, model.Errorf(model.KindInvalid, "invalid path parameter id %q: must be %d lowercase hex digits", id, tokenIDLen)
	}
	if s.cfg.Tokens == nil {
		return 0, nil, model.Errorf(model.KindNotFound, "token %q not found", id)
	}
	return ok(s.cfg.Tokens.Revoke(r.Context(), id))
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
