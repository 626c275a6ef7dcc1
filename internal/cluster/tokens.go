package cluster

import (
	"context"
	"encoding/json"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/torpor-dev/torpor/internal/auth"
	"github.com/torpor-dev/torpor/internal/model"
)

// Tokens returns the cluster's API tokens: kept in etcd (hashed), so that
// every host accepts every token.
func (n *Node) Tokens() *auth.Tokens { return auth.NewWith(tokenBackend{n.cli}, nil) }

// tokenBackend is auth.Backend over etcd.
type tokenBackend struct{ cli *clientv3.Client }

func (b tokenBackend) CreateToken(ctx context.Context, tok model.Token, hash []byte) error {
	resp, err := b.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(tokenKey(tok.ID)), "=", 0)).
		Then(clientv3.OpPut(tokenKey(tok.ID), mustJSON(tokenRecord{Token: tok, Hash: hash}))).Commit()
	if err != nil {
		return unavailable(err)
	}
	if !resp.Succeeded {
		return model.Errorf(model.KindConflict, "token %q already exists", tok.ID)
	}
	return nil
}

func (b tokenBackend) Token(ctx context.Context, id string) (model.Token, []byte, error) {
	resp, err := b.cli.Get(ctx, tokenKey(id))
	if err != nil {
		return model.Token{}, nil, unavailable(err)
	}
	if len(resp.Kvs) == 0 {
		return model.Token{}, nil, model.Errorf(model.KindNotFound, "token %q not found", id)
	}
	var rec tokenRecord
	err = json.Unmarshal(resp.Kvs[0].Value, &rec)
	return rec.Token, rec.Hash, err
}

func (b tokenBackend) Tokens(ctx context.Context) ([]model.Token, error) {
	resp, err := b.cli.Get(ctx, kindPrefix("tokens"), clientv3.WithPrefix())
	if err != nil {
		return nil, unavailable(err)
	}
	var out []model.Token
	for _, kv := range resp.Kvs {
		var rec tokenRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return nil, err
		}
		out = append(out, rec.Token)
	}
	return out, nil
}

func (b tokenBackend) DeleteToken(ctx context.Context, id string) error {
	resp, err := b.cli.Delete(ctx, tokenKey(id))
	if err != nil {
		return unavailable(err)
	}
	if resp.Deleted == 0 {
		return model.Errorf(model.KindNotFound, "token %q not found", id)
	}
	return nil
}
