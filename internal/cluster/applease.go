package cluster

import (
	"context"
	"encoding/json"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/torpor-dev/torpor/internal/machine"
	"github.com/torpor-dev/torpor/internal/model"
)

// A cluster's app leases (which serialize deploys, machine/applease.go)
// are kept in etcd, one key per app, with the rules of a host's
// (machine.NextLease, machine.CheckRelease) and a compare-and-swap on the
// key's revision, so that deploys through any two hosts are serialized.

// appLeaseRetries bounds the compare-and-swap retries of one call.
const appLeaseRetries = 8

// appLease reads the app's lease: the stored one, whether it holds at now,
// and the key's revision (0 when there is none).
func (c *Machines) appLease(ctx context.Context, app string, now time.Time) (model.Lease, bool, int64, error) {
	resp, err := c.n.cli.Get(ctx, appLeaseKey(app))
	if err != nil {
		return model.Lease{}, false, 0, unavailable(err)
	}
	if len(resp.Kvs) == 0 {
		return model.Lease{}, false, 0, nil
	}
	var l model.Lease
	if err := json.Unmarshal(resp.Kvs[0].Value, &l); err != nil {
		return model.Lease{}, false, resp.Kvs[0].ModRevision, nil // unreadable: no lease
	}
	return l, now.Unix() < l.ExpiresAt, resp.Kvs[0].ModRevision, nil
}

// casAppLease runs change on the app's lease until its compare-and-swap
// sticks: change returns the op to commit, or an error.
func (c *Machines) casAppLease(ctx context.Context, app string, change func(cur model.Lease, held bool, now time.Time) (clientv3.Op, error)) error {
	if _, err := c.GetApp(ctx, app); err != nil {
		return err
	}
	for range appLeaseRetries {
		now := time.Now()
		cur, held, rev, err := c.appLease(ctx, app, now)
		if err != nil {
			return err
		}
		op, err := change(cur, held, now)
		if err != nil {
			return err
		}
		resp, err := c.n.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(appLeaseKey(app)), "=", rev)).Then(op).Commit()
		if err != nil {
			return unavailable(err)
		}
		if resp.Succeeded {
			return nil
		}
	}
	return model.Errorf(model.KindConflict, "app %s: its lease kept changing; try again", app)
}

// AcquireAppLease takes the app's lease, or refreshes the one whose nonce
// ctx carries.
func (c *Machines) AcquireAppLease(ctx context.Context, app string, p model.LeaseParams) (model.Lease, error) {
	if err := machine.CheckLeaseParams(&p); err != nil {
		return model.Lease{}, err
	}
	var out model.Lease
	err := c.casAppLease(ctx, app, func(cur model.Lease, held bool, now time.Time) (clientv3.Op, error) {
		l, err := machine.NextLease("app "+app, cur, held, model.LeaseNonceOf(ctx), p, "", now)
		out = l
		return clientv3.OpPut(appLeaseKey(app), mustJSON(l)), err
	})
	return out, err
}

// GetAppLease returns the app's lease, or a KindNotFound error.
func (c *Machines) GetAppLease(ctx context.Context, app string) (model.Lease, error) {
	if _, err := c.GetApp(ctx, app); err != nil {
		return model.Lease{}, err
	}
	l, held, _, err := c.appLease(ctx, app, time.Now())
	if err == nil && !held {
		err = model.Errorf(model.KindNotFound, "lease not found: app %s has no lease", app)
	}
	return l, err
}

// ReleaseAppLease ends the app lease whose nonce ctx carries.
func (c *Machines) ReleaseAppLease(ctx context.Context, app string) error {
	return c.casAppLease(ctx, app, func(cur model.Lease, held bool, _ time.Time) (clientv3.Op, error) {
		return clientv3.OpDelete(appLeaseKey(app)), machine.CheckRelease("app "+app, cur, held, model.LeaseNonceOf(ctx))
	})
}
