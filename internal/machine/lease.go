package machine

import (
	"context"
	"fmt"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/store"
)

// Leases are Fly's machine leases: a caller (a deploy tool) takes one on a
// machine for a while and, until it expires or is released, every
// operation on the machine must give the lease's nonce, so that nobody
// else's operation comes between the holder's. The check is made where
// operations are serialized: in begin, with the machine's operation lock
// held, so an operation that was waiting for the lock when the lease was
// taken is refused too. Leases are stored (they survive a daemon restart)
// and expire by their time alone: an expired lease is no lease, whatever
// the store still holds.
//
// The daemon's own operations (restarts by the restart policy, recovery)
// are not held back by a lease; the proxy's and the machine's own (through
// the in-machine API) are.

// Lease bounds, in seconds.
const (
	DefaultLeaseTTL = 30
	MaxLeaseTTL     = 24 * 60 * 60
)

// maxLeaseDescription bounds a lease's description.
const maxLeaseDescription = 256

// checkLeaseTTL checks a lease TTL given in seconds by field.
func checkLeaseTTL(field string, secs int) error {
	if secs < 0 || secs > MaxLeaseTTL {
		return invalid("%s must be between 1 and %d seconds (0: the default %d), got %d", field, MaxLeaseTTL, DefaultLeaseTTL, secs)
	}
	return nil
}

// AcquireLease takes a lease on the machine, or, when ctx carries the nonce
// of the lease held (model.WithLeaseNonce), refreshes it. A lease held by
// someone else is a KindConflict error.
func (m *Manager) AcquireLease(ctx context.Context, app, id string, p model.LeaseParams) (model.Lease, error) {
	if err := CheckLeaseParams(&p); err != nil {
		return model.Lease{}, err
	}
	nonce := model.LeaseNonceOf(ctx)
	var out model.Lease
	err := m.store.Update(func(tx *store.Tx) error {
		mc, err := machineOf(tx, app, id)
		if err != nil {
			return err
		}
		if mc.State == model.StateDestroyed || mc.State == model.StateDestroying {
			return model.Errorf(model.KindConflict, "machine %s is %s and cannot be leased", id, mc.State)
		}
		out, err = machineSlot(tx, id).acquire(nonce, p, mc.Version, time.Now())
		return err
	})
	return out, err
}

// CheckLeaseParams checks a lease's TTL and description, and defaults the
// TTL.
func CheckLeaseParams(p *model.LeaseParams) error {
	if p.TTL <= 0 {
		p.TTL = DefaultLeaseTTL * time.Second
	}
	if p.TTL > MaxLeaseTTL*time.Second {
		return invalid("ttl must be at most %d seconds, got %s", MaxLeaseTTL, p.TTL)
	}
	if len(p.Description) > maxLeaseDescription || !printable(p.Description) {
		return invalid("description must be at most %d printable characters", maxLeaseDescription)
	}
	return nil
}

// leaseSlot is where a lease lives: on a machine, or on an app (applease.go).
type leaseSlot struct {
	what string // "machine <id>", "app <name>", for messages
	get  func() (model.Lease, bool, error)
	put  func(model.Lease) error
	del  func() error
}

func machineSlot(tx *store.Tx, id string) leaseSlot {
	return leaseSlot{what: "machine " + id,
		get: func() (model.Lease, bool, error) { return tx.Lease(id) },
		put: func(l model.Lease) error { return tx.PutLease(id, l) },
		del: func() error { return tx.DeleteLease(id) }}
}

// active returns the slot's lease if it has one that has not expired at now.
func (s leaseSlot) active(now time.Time) (model.Lease, bool, error) {
	l, ok, err := s.get()
	if err != nil || !ok || now.Unix() >= l.ExpiresAt {
		return model.Lease{}, false, err
	}
	return l, true, nil
}

// acquire takes the slot's lease, or refreshes it when nonce is the held
// lease's.
func (s leaseSlot) acquire(nonce string, p model.LeaseParams, version string, now time.Time) (model.Lease, error) {
	cur, held, err := s.active(now)
	if err != nil {
		return cur, err
	}
	l, err := NextLease(s.what, cur, held, nonce, p, version, now)
	if err != nil {
		return l, err
	}
	return l, s.put(l)
}

// NextLease decides what an acquire of the lease on what ("machine <id>",
// "app <name>") makes of cur, the lease stored (held: not expired at now),
// for a caller giving nonce (empty: none): a refresh of cur when nonce is
// its, a new lease when none is held and no nonce is given, else a
// KindConflict error. Where the lease is kept (and the compare-and-swap
// that makes the decision stick) is the caller's: the store here, etcd for
// a cluster's app leases.
func NextLease(what string, cur model.Lease, held bool, nonce string, p model.LeaseParams, version string, now time.Time) (model.Lease, error) {
	switch {
	case held && nonce == cur.Nonce:
		// A refresh: the same lease, for longer.
		cur.ExpiresAt = now.Add(p.TTL).Unix()
		if p.Description != "" {
			cur.Description = p.Description
		}
		return cur, nil
	case held:
		return model.Lease{}, leaseHeldBy(what, cur)
	case nonce != "":
		return model.Lease{}, model.Errorf(model.KindConflict, "lease with nonce %s on %s is no longer held (it expired or was released): acquire a new one", nonce, what)
	}
	return model.Lease{Nonce: newID(16), ExpiresAt: now.Add(p.TTL).Unix(), Owner: p.Owner, Description: p.Description, Version: version}, nil
}

// release ends the slot's lease whose nonce is nonce; an expired or
// released one is released already.
func (s leaseSlot) release(nonce string, now time.Time) error {
	cur, held, err := s.active(now)
	if err != nil {
		return err
	}
	if err := CheckRelease(s.what, cur, held, nonce); err != nil {
		return err
	}
	return s.del()
}

// CheckRelease says whether a caller giving nonce may release cur, the
// lease stored on what (held: not expired): it may when cur is not held
// or is its.
func CheckRelease(what string, cur model.Lease, held bool, nonce string) error {
	switch {
	case !held:
		return nil
	case nonce == "":
		return model.Errorf(model.KindConflict, "%s is leased by %s: give the lease's nonce (header fly-machine-lease-nonce) to release it", what, ownerOf(cur))
	case nonce != cur.Nonce:
		return model.Errorf(model.KindConflict, "lease nonce mismatch: %s is leased under another nonce (by %s)", what, ownerOf(cur))
	}
	return nil
}

// GetLease returns the machine's lease, or a KindNotFound error whose
// message starts "lease not found" (flyctl looks for those words).
func (m *Manager) GetLease(ctx context.Context, app, id string) (model.Lease, error) {
	var l model.Lease
	err := m.store.View(func(tx *store.Tx) error {
		if _, err := machineOf(tx, app, id); err != nil {
			return err
		}
		var held bool
		var err error
		if l, held, err = activeLease(tx, id, time.Now()); err != nil {
			return err
		}
		if !held {
			return model.Errorf(model.KindNotFound, "lease not found: machine %s has no lease", id)
		}
		return nil
	})
	return l, err
}

// ReleaseLease ends the lease whose nonce ctx carries. Releasing a lease
// that expired (or was released) already succeeds; a lease held under
// another nonce, or a release without a nonce, is a KindConflict error.
func (m *Manager) ReleaseLease(ctx context.Context, app, id string) error {
	nonce := model.LeaseNonceOf(ctx)
	return m.store.Update(func(tx *store.Tx) error {
		if _, err := machineOf(tx, app, id); err != nil {
			return err
		}
		return machineSlot(tx, id).release(nonce, time.Now())
	})
}

// checkLease refuses an operation on mc by a caller who does not hold its
// lease: the lease's nonce must be in ctx while one is held, and a nonce in
// ctx must be the held lease's. The daemon's own operations pass.
func (m *Manager) checkLease(ctx context.Context, mc model.Machine) error {
	if model.SourceOf(ctx) == model.SourceFlyd {
		return nil
	}
	nonce := model.LeaseNonceOf(ctx)
	var l model.Lease
	var held bool
	err := m.store.View(func(tx *store.Tx) error {
		var err error
		l, held, err = activeLease(tx, mc.ID, time.Now())
		return err
	})
	switch {
	case err != nil:
		return err
	case held && nonce == l.Nonce:
		return nil
	case held:
		return leaseHeld(mc.ID, l)
	case nonce != "":
		return model.Errorf(model.KindConflict, "lease with nonce %s on machine %s is no longer held (it expired or was released)", nonce, mc.ID)
	}
	return nil
}

// putLease leases a machine being created or updated to the caller for
// ttl seconds (lease_ttl), refreshing the lease ctx's nonce names.
func (m *Manager) putLease(ctx context.Context, tx *store.Tx, mc model.Machine, ttl int) (model.Lease, error) {
	now := time.Now()
	l, held, err := activeLease(tx, mc.ID, now)
	if err != nil {
		return l, err
	}
	if held && l.Nonce != model.LeaseNonceOf(ctx) {
		return l, leaseHeld(mc.ID, l)
	}
	if !held {
		l = model.Lease{Nonce: newID(16), Owner: model.CallerOf(ctx), Version: mc.Version}
	}
	l.ExpiresAt = now.Add(time.Duration(ttl) * time.Second).Unix()
	return l, tx.PutLease(mc.ID, l)
}

// activeLease returns the machine's lease if it has one that has not
// expired at now.
func activeLease(tx *store.Tx, id string, now time.Time) (model.Lease, bool, error) {
	return machineSlot(tx, id).active(now)
}

func leaseHeld(id string, l model.Lease) error { return leaseHeldBy("machine "+id, l) }

func leaseHeldBy(what string, l model.Lease) error {
	return model.Errorf(model.KindConflict, "%s is leased by %s until %s: send the lease's nonce in the fly-machine-lease-nonce header",
		what, ownerOf(l), time.Unix(l.ExpiresAt, 0).UTC().Format(time.RFC3339))
}

func ownerOf(l model.Lease) string {
	if l.Owner == "" {
		return "another caller"
	}
	return fmt.Sprintf("%q", l.Owner)
}

// machineOf reads a machine of app in tx, hiding machines of other apps.
func machineOf(tx *store.Tx, app, id string) (model.Machine, error) {
	mc, err := tx.Machine(id)
	if err == nil && mc.App != app {
		err = model.Errorf(model.KindNotFound, "machine %q not found in app %q", id, app)
	}
	return mc, err
}
