package cluster

import (
	"context"
	"errors"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/store"
)

// reconcile brings this host's machines in line with the cluster's
// ownership, after a start (startup) or after the host registered again:
// a machine another host owns now is forgotten here (it moved while this
// host was away: its sandbox, if any, is killed so it never runs twice);
// an owner record of this host without a machine here is removed. On the
// data directory's first join, its machines, apps and tokens become the
// cluster's.
func (n *Node) reconcile(ctx context.Context, startup bool) error {
	ms, err := n.localMachines(ctx)
	if err != nil {
		return err
	}
	first := startup && n.firstJoin
	if first {
		if err := n.migrate(ctx, ms); err != nil {
			return err
		}
		if err := writeMarker(n.cfg.DataDir, n.marker); err != nil {
			return err
		}
		n.firstJoin = false
	}
	resp, err := n.cli.Get(ctx, kindPrefix("owners"), clientv3.WithPrefix())
	if err != nil {
		return unavailable(err)
	}
	owners := map[string]string{}
	for _, kv := range resp.Kvs {
		owners[string(kv.Key)[len(kindPrefix("owners")):]] = string(kv.Value)
	}
	local := map[string]bool{}
	for _, mc := range ms {
		local[mc.ID] = true
		if mc.State == model.StateDestroyed {
			continue
		}
		if owner := owners[mc.ID]; owner != n.id {
			n.log.Warn("machine moved while this host was away: forgetting it here", "machine", mc.ID, "owner", owner, "state", mc.State)
			if err := n.mgr.Forget(ctx, mc.ID); err != nil {
				return err
			}
		}
	}
	for id, owner := range owners {
		if owner == n.id && !local[id] {
			n.log.Warn("removing the cluster record of a machine this host does not have", "machine", id)
			n.dropRecords(ctx, id)
		}
	}
	// Apps deleted while this host was away: delete them here too (not on
	// the first join, whose apps the view may not show yet).
	apps, err := n.mgr.ListApps(ctx)
	if err != nil || first {
		return err
	}
	for _, a := range apps {
		if _, ok := n.view.app(a.Name); !ok {
			n.appDeleted(a.Name)
		}
	}
	return nil
}

// localMachines lists every machine of this host's store.
func (n *Node) localMachines(ctx context.Context) ([]model.Machine, error) {
	return n.mgr.AllMachines(ctx)
}

// migrate makes the machines, apps and tokens of a host that joins for the
// first time the cluster's (keeping what the cluster has already).
func (n *Node) migrate(ctx context.Context, ms []model.Machine) error {
	apps, err := n.mgr.ListApps(ctx)
	if err != nil {
		return err
	}
	for _, a := range apps {
		if _, err := n.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(appKey(a.Name)), "=", 0)).
			Then(clientv3.OpPut(appKey(a.Name), mustJSON(a))).Commit(); err != nil {
			return unavailable(err)
		}
	}
	for _, mc := range ms {
		if mc.State == model.StateDestroyed {
			continue
		}
		mc.Host, mc.Events = n.id, nil
		resp, err := n.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(ownerKey(mc.ID)), "=", 0)).
			Then(clientv3.OpPut(ownerKey(mc.ID), n.id), clientv3.OpPut(machineKey(mc.ID), mustJSON(entry{Machine: mc})),
				clientv3.OpPut(nameKey(mc.App, mc.Name), mc.ID), clientv3.OpPut(placeKey(n.id), mc.ID)).Commit()
		if err != nil {
			return unavailable(err)
		}
		if !resp.Succeeded {
			n.log.Error("a machine of this host has the ID of another machine of the cluster; leaving it alone", "machine", mc.ID)
		}
	}
	var toks []tokenRecord
	err = n.st.View(func(tx *store.Tx) error {
		list, err := tx.Tokens()
		for _, t := range list {
			_, hash, err := tx.Token(t.ID)
			if err != nil {
				return err
			}
			toks = append(toks, tokenRecord{Token: t, Hash: hash})
		}
		return err
	})
	if err != nil {
		return err
	}
	for _, t := range toks {
		if _, err := n.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(tokenKey(t.Token.ID)), "=", 0)).
			Then(clientv3.OpPut(tokenKey(t.Token.ID), mustJSON(t))).Commit(); err != nil {
			return unavailable(err)
		}
	}
	n.log.Info("first join: this host's machines, apps and tokens are the cluster's now", "machines", len(ms), "apps", len(apps), "tokens", len(toks))
	return nil
}

// dropRecords removes a machine's owner, directory and name records, if
// this host still owns it.
func (n *Node) dropRecords(ctx context.Context, id string) error {
	e, _ := n.view.entry(id)
	ops := []clientv3.Op{clientv3.OpDelete(ownerKey(id)), clientv3.OpDelete(machineKey(id))}
	if e.Machine.App != "" && e.Machine.Name != "" {
		ops = append(ops, clientv3.OpDelete(nameKey(e.Machine.App, e.Machine.Name)))
	}
	ops = append(ops, clientv3.OpDelete(kindPrefix("snapshots")+id+"/", clientv3.WithPrefix()))
	_, err := n.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(ownerKey(id)), "=", n.id)).Then(ops...).Commit()
	return unavailable(err)
}

// ownerChanged forgets a machine of this host that another host owns now
// (a move whose answer never reached this host, say).
func (n *Node) ownerChanged(id, owner string) {
	if owner == n.id || owner == "" || n.mgr == nil {
		return
	}
	if _, err := n.mgr.Record(id); err != nil {
		return // not here
	}
	// Only a move that this host made (or one after its lease expired)
	// changes an owner away from it; a move that is still running holds
	// the machine's lock, which Forget waits for.
	ctx, cancel := context.WithTimeout(n.ctx, time.Minute)
	defer cancel()
	if o, err := n.ownerNow(ctx, id); err != nil || o == n.id {
		return
	}
	if err := n.mgr.Forget(ctx, id); err != nil && !errors.Is(err, context.Canceled) {
		n.log.Warn("forgetting a machine another host owns", "machine", id, "owner", owner, "err", err)
	}
}

// appDeleted deletes a deleted app's local record (and network) here.
func (n *Node) appDeleted(name string) {
	if n.mgr == nil {
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, 30*time.Second)
	defer cancel()
	if err := n.mgr.DeleteApp(ctx, name); err != nil && !model.IsNotFound(err) {
		n.log.Warn("deleting a deleted app here", "app", name, "err", err)
	}
}

// publisher publishes every committed change of this host's machines to
// the directory (machines/<id>), in a transaction that only succeeds while
// this host owns the machine and holds its lease. Changes are coalesced
// per machine and retried until etcd takes them.
type publisher struct {
	mu    sync.Mutex
	dirty map[string]string // machine → app
	kick  chan struct{}
}

func (p *publisher) start(n *Node) {
	p.dirty, p.kick = map[string]string{}, make(chan struct{}, 1)
	ms, _ := n.localMachines(n.ctx)
	for _, mc := range ms {
		p.mark(mc.ID, mc.App)
	}
	cancel := n.mgr.Subscribe(func(c model.Change) { p.mark(c.Machine.ID, c.Machine.App) })
	n.goLoop(func() {
		defer cancel()
		for n.ctx.Err() == nil {
			select {
			case <-p.kick:
			case <-time.After(time.Second):
			case <-n.ctx.Done():
				return
			}
			p.flush(n)
		}
	})
}

func (p *publisher) mark(id, app string) {
	p.mu.Lock()
	p.dirty[id] = app
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *publisher) flush(n *Node) {
	p.mu.Lock()
	batch := p.dirty
	p.dirty = map[string]string{}
	p.mu.Unlock()
	for id, app := range batch {
		if err := n.publish(id, app); err != nil {
			if n.ctx.Err() == nil {
				n.log.Debug("publishing a machine", "machine", id, "err", err)
			}
			p.mu.Lock()
			if _, again := p.dirty[id]; !again {
				p.dirty[id] = app
			}
			p.mu.Unlock()
		}
	}
}

// publish writes one machine's directory record (or, once destroyed,
// removes its records).
func (n *Node) publish(id, app string) error {
	if n.fenced.Load() {
		return n.errFenced()
	}
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	mc, err := n.mgr.Record(id)
	if model.IsNotFound(err) {
		return nil // forgotten: it moved away
	}
	if err != nil {
		return err
	}
	if mc.State == model.StateDestroyed {
		return n.dropRecords(ctx, id)
	}
	e := entry{Machine: mc}
	e.Machine.Host = n.id
	if mc.State == model.StateSuspended {
		if snap, ok, err := n.mgr.Snapshot(id); err == nil && ok {
			e.Snapshot = &snap
		}
	}
	_, err = n.cli.Txn(ctx).If(n.leaseHeld(), clientv3.Compare(clientv3.Value(ownerKey(id)), "=", n.id)).
		Then(clientv3.OpPut(machineKey(id), mustJSON(e))).Commit()
	return unavailable(err)
}
