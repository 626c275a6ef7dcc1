package machine

import (
	"context"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/store"
)

// App leases are a torpor extension: a lease on a whole app that serializes
// deploys (package deploy holds one for the length of a deploy, refreshing
// it), so that two deploys of an app never interleave, even the first two of
// an app without machines, which have no machine to lease. An app lease
// holds back no machine operation, neither the proxy's wakes nor a user's
// calls: only another AcquireAppLease. The machines a deploy is changing at
// a given moment carry machine leases of their own (lease.go).
//
// These keep it in the host's store; in a cluster, package cluster keeps it
// in etcd with the same rules (NextLease, CheckRelease), so that deploys
// through any host are serialized.

func appSlot(tx *store.Tx, app string) leaseSlot {
	return leaseSlot{what: "app " + app,
		get: func() (model.Lease, bool, error) { return tx.AppLease(app) },
		put: func(l model.Lease) error { return tx.PutAppLease(app, l) },
		del: func() error { return tx.DeleteAppLease(app) }}
}

// AcquireAppLease takes the app's lease, or refreshes it when ctx carries
// its nonce. A lease held by someone else is a KindConflict error.
func (m *Manager) AcquireAppLease(ctx context.Context, app string, p model.LeaseParams) (model.Lease, error) {
	if err := CheckLeaseParams(&p); err != nil {
		return model.Lease{}, err
	}
	var out model.Lease
	err := m.store.Update(func(tx *store.Tx) error {
		if _, err := tx.App(app); err != nil {
			return err
		}
		var err error
		out, err = appSlot(tx, app).acquire(model.LeaseNonceOf(ctx), p, "", time.Now())
		return err
	})
	return out, err
}

// GetAppLease returns the app's lease, or a KindNotFound error.
func (m *Manager) GetAppLease(ctx context.Context, app string) (model.Lease, error) {
	var l model.Lease
	err := m.store.View(func(tx *store.Tx) error {
		if _, err := tx.App(app); err != nil {
			return err
		}
		var held bool
		var err error
		if l, held, err = appSlot(tx, app).active(time.Now()); err == nil && !held {
			err = model.Errorf(model.KindNotFound, "lease not found: app %s has no lease", app)
		}
		return err
	})
	return l, err
}

// ReleaseAppLease ends the app lease whose nonce ctx carries.
func (m *Manager) ReleaseAppLease(ctx context.Context, app string) error {
	return m.store.Update(func(tx *store.Tx) error {
		if _, err := tx.App(app); err != nil {
			return err
		}
		return appSlot(tx, app).release(model.LeaseNonceOf(ctx), time.Now())
	})
}
