package store

import (
	"github.com/torpor-dev/torpor/internal/model"
)

// tokenRecord is a stored API token: its description and the hash of its
// secret (never the secret itself).
type tokenRecord struct {
	model.Token
	Hash []byte `json:"hash"`
}

// CreateToken stores a new token with the hash of its secret; it fails with
// KindConflict if the ID is taken.
func (t *Tx) CreateToken(tok model.Token, hash []byte) error {
	b := t.tx.Bucket(bucketTokens)
	if b.Get([]byte(tok.ID)) != nil {
		return model.Errorf(model.KindConflict, "token %q already exists", tok.ID)
	}
	return put(b, []byte(tok.ID), tokenRecord{Token: tok, Hash: hash})
}

// Token returns the token with this ID and the hash of its secret, or a
// KindNotFound error.
func (t *Tx) Token(id string) (model.Token, []byte, error) {
	var rec tokenRecord
	ok, err := get(t.tx.Bucket(bucketTokens), []byte(id), &rec)
	if err == nil && !ok {
		err = model.Errorf(model.KindNotFound, "token %q not found", id)
	}
	return rec.Token, rec.Hash, err
}

// Tokens lists every token, ordered by ID, without their hashes.
func (t *Tx) Tokens() ([]model.Token, error) {
	var out []model.Token
	err := t.tx.Bucket(bucketTokens).ForEach(func(_, v []byte) error {
		var rec tokenRecord
		if err := unmarshal(v, &rec); err != nil {
			return err
		}
		out = append(out, rec.Token)
		return nil
	})
	return out, err
}

// DeleteToken removes a token; it fails with KindNotFound if there is none.
func (t *Tx) DeleteToken(id string) error {
	b := t.tx.Bucket(bucketTokens)
	if b.Get([]byte(id)) == nil {
		return model.Errorf(model.KindNotFound, "token %q not found", id)
	}
	return b.Delete([]byte(id))
}
