package cluster

import (
	"context"
	"fmt"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/torpor-dev/torpor/internal/identifiers"
	"github.com/torpor-dev/torpor/internal/logs"
	"github.com/torpor-dev/torpor/internal/machine"
	"github.com/torpor-dev/torpor/internal/model"
)

// Machines is the machine lifecycle as the API and the proxy of a host of
// the cluster see it: apps are the cluster's, machines of this host are
// served by its manager, machines of other live hosts by those hosts (over
// the peer channel), and machines of dead hosts from the directory (read)
// or not at all (changes: KindUnavailable, until the host is drained).
//
// Operations it does not name are this host's manager's (embedded): the
// API forwards every request for a machine of another live host to it
// (Route) before they are reached.
type Machines struct {
	*machine.Manager
	n *Node
}

// Machines returns the node's view of the machine lifecycle.
func (n *Node) Machines() *Machines { return &Machines{Manager: n.mgr, n: n} }

// ListMachines lists the app's machines on every host: this host's as its
// manager filters them with opts, the other hosts' from the directory.
func (c *Machines) ListMachines(ctx context.Context, app string, opts model.ListOptions) ([]model.Machine, error) {
	a, err := c.GetApp(ctx, app)
	if err != nil {
		return nil, err
	}
	c.ensureLocalApp(ctx, a)
	c.caughtUp(ctx, app)
	local, err := c.n.mgr.ListMachines(ctx, app, opts)
	if err != nil {
		return nil, err
	}
	out := make([]model.Machine, 0, len(local))
	for _, mc := range local {
		if o := c.n.view.owner(mc.ID); o == "" || o == c.n.id {
			out = append(out, c.mark(mc))
		}
	}
	for _, e := range c.n.view.entries("", app) {
		if e.Machine.Host != c.n.id && e.Machine.State != model.StateDestroyed {
			out = append(out, e.Machine)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// where says who serves machine id: this host ("" and nil), another live
// host (its ID and nil) or nobody (an error).
func (c *Machines) where(ctx context.Context, app, id string) (string, error) {
	owner := c.n.ownerOf(ctx, id)
	switch {
	case owner == "" || owner == c.n.id:
		return "", nil
	case c.n.view.alive(owner):
		return owner, nil
	}
	if e, ok := c.n.view.entry(id); ok && e.Machine.App != app {
		return "", nil // not this app's: answered here (not found)
	}
	return owner, model.Errorf(model.KindUnavailable, "machine %s is on host %s, which is down (its cluster lease expired); "+
		"drain the host to move its machines elsewhere: torpor host drain %s", id, owner, owner)
}

// mark fills in where a machine served here lives.
func (c *Machines) mark(mc model.Machine) model.Machine {
	mc.Host, mc.HostStatus = c.n.id, model.HostOK
	return mc
}

// CreateApp creates an app in the cluster (and on this host).
func (c *Machines) CreateApp(ctx context.Context, app model.App) (model.App, error) {
	if err := identifiers.AppName("app_name", app.Name); err != nil {
		return app, err
	}
	if app.Org == "" {
		app.Org = "personal"
	}
	app.CreatedAt = time.Now().UTC()
	resp, err := c.n.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(appKey(app.Name)), "=", 0)).
		Then(clientv3.OpPut(appKey(app.Name), mustJSON(app)), clientv3.OpPut(appGenKey(app.Name), "")).Commit()
	if err != nil {
		return app, unavailable(err)
	}
	if !resp.Succeeded {
		return app, model.Errorf(model.KindConflict, "app %q already exists", app.Name)
	}
	c.n.view.waitRev(ctx, resp.Header.Revision)
	c.ensureLocalApp(ctx, app)
	return app, nil
}

// ensureLocalApp records the app in this host's store, which its machines need.
func (c *Machines) ensureLocalApp(ctx context.Context, app model.App) {
	if _, err := c.n.mgr.GetApp(ctx, app.Name); model.IsNotFound(err) {
		c.n.mgr.CreateApp(ctx, app)
	}
}

// GetApp returns an app of the cluster.
func (c *Machines) GetApp(ctx context.Context, name string) (model.App, error) {
	if a, ok := c.n.view.app(name); ok {
		return a, nil
	}
	resp, err := c.n.cli.Get(ctx, appKey(name))
	if err != nil {
		return model.App{}, unavailable(err)
	}
	if len(resp.Kvs) == 0 {
		return model.App{}, model.Errorf(model.KindNotFound, "app %q not found", name)
	}
	c.n.view.waitRev(ctx, resp.Header.Revision)
	a, _ := c.n.view.app(name)
	return a, nil
}

// ListApps returns every app of the cluster.
func (c *Machines) ListApps(ctx context.Context) ([]model.App, error) {
	return c.n.view.appList(), nil
}

// DeleteApp deletes an app with no machines left (on any host) but
// destroyed ones. The transaction compares the app's admission revision,
// so a machine admitted meanwhile makes it fail.
func (c *Machines) DeleteApp(ctx context.Context, name string) error {
	if _, err := c.GetApp(ctx, name); err != nil {
		return err
	}
	c.n.view.mu.RLock()
	gen := c.n.view.appGen[name]
	c.n.view.mu.RUnlock()
	for _, e := range c.n.view.entries("", name) {
		// The directory may lag: ask the machine's host what it is now.
		mc, err := c.Get(ctx, name, e.Machine.ID)
		if model.IsNotFound(err) || err == nil && mc.State == model.StateDestroyed {
			continue
		}
		if err == nil {
			e.Machine = mc
		}
		return model.Errorf(model.KindConflict, "app %q still has machine %s (%s, on host %s); destroy its machines first",
			name, e.Machine.ID, e.Machine.State, e.Machine.Host)
	}
	resp, err := c.n.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(appGenKey(name)), "=", gen)).
		Then(clientv3.OpDelete(appKey(name)), clientv3.OpDelete(appGenKey(name)), clientv3.OpDelete(appLeaseKey(name))).Commit()
	if err != nil {
		return unavailable(err)
	}
	if !resp.Succeeded {
		return model.Errorf(model.KindConflict, "app %q got a new machine meanwhile; destroy its machines first", name)
	}
	c.n.view.waitRev(ctx, resp.Header.Revision)
	if err := c.n.mgr.DeleteApp(ctx, name); err != nil && !model.IsNotFound(err) {
		return err
	}
	return nil
}

// Create places a new machine: on the host the request names, else on the
// host with room that placement picks (retrying elsewhere when a host
// turns out to be full).
func (c *Machines) Create(ctx context.Context, app string, req model.CreateMachineRequest) (model.Machine, error) {
	a, err := c.GetApp(ctx, app)
	if err != nil {
		return model.Machine{}, err
	}
	asked := req.Host != ""
	if asked {
		if err := identifiers.HostID("host", req.Host); err != nil {
			return model.Machine{}, err
		}
		if !c.n.view.member(req.Host) {
			return model.Machine{}, model.Errorf(model.KindInvalid, "invalid host %q: not a host of this cluster (see torpor host list)", req.Host)
		}
	}
	if !asked && len(req.Config.Mounts) > 0 {
		// A volume lives on the host that created it (docs/cluster.md), and
		// the volumes API is each host's own: a machine that mounts volumes
		// goes where they were created, this host, whose manager checks
		// that it has them.
		req.Host, asked = c.n.id, true
	}
	exclude := map[string]bool{}
	for attempt := 0; ; attempt++ {
		target := req.Host
		if !asked {
			if target, _, err = c.n.view.place(req.Config.Guest, nil, exclude, ""); err != nil {
				return model.Machine{}, err
			}
		}
		var mc model.Machine
		if target == c.n.id {
			c.ensureLocalApp(ctx, a)
			mc, err = c.n.mgr.Create(ctx, app, req)
			if mc.ID != "" {
				err = c.changed(mc.ID, app, err)
			}
			mc = c.mark(mc)
		} else {
			fwd := req
			fwd.Host = target
			mc, err = c.n.peer.client(target).CreateMachine(ctx, app, fwd)
			err = peerError(target, err)
		}
		k := model.KindOf(err)
		if asked || attempt >= 3 || err == nil || k != model.KindQuota && k != model.KindUnavailable {
			return mc, err
		}
		c.n.log.Info("placement: host could not take the machine, trying another", "host", target, "err", err)
		exclude[target] = true
	}
}

// Get returns a machine: fresh from its host, or from the directory
// (host_status "unreachable") when its host is down.
func (c *Machines) Get(ctx context.Context, app, id string) (model.Machine, error) {
	host, err := c.where(ctx, app, id)
	switch {
	case err != nil:
		if e, ok := c.n.view.entry(id); ok && e.Machine.App == app {
			mc := e.Machine
			mc.Host, mc.HostStatus = host, model.HostUnreachable
			return mc, nil
		}
		return model.Machine{}, err
	case host != "":
		mc, err := c.n.peer.client(host).GetMachine(ctx, app, id)
		return mc, peerError(host, err)
	}
	mc, err := c.n.mgr.Get(ctx, app, id)
	return c.mark(mc), err
}

// List returns the app's machines on every host: this host's from its
// store, the others' from the directory, caught up to etcd's revision
// (changes a host answered for are published before it answers; what a
// host changes on its own, such as an autostop, within about a second).
func (c *Machines) List(ctx context.Context, app string) ([]model.Machine, error) {
	if _, err := c.GetApp(ctx, app); err != nil {
		return nil, err
	}
	c.caughtUp(ctx, app)
	var out []model.Machine
	local, err := c.n.mgr.List(ctx, app)
	if err != nil && !model.IsNotFound(err) {
		return nil, err
	}
	seen := map[string]bool{}
	for _, mc := range local {
		if o := c.n.view.owner(mc.ID); o != "" && o != c.n.id {
			continue // moved away; forgotten here in a moment
		}
		seen[mc.ID] = true
		out = append(out, c.mark(mc))
	}
	for _, e := range c.n.view.entries("", app) {
		if !seen[e.Machine.ID] && e.Machine.Host != c.n.id && e.Machine.State != model.StateDestroyed {
			out = append(out, e.Machine)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// remote runs op on the machine's host: here with local, elsewhere with
// the peer's client.
func (c *Machines) remote(ctx context.Context, app, id string, local func() error, peer func(host string) error) error {
	host, err := c.where(ctx, app, id)
	switch {
	case err != nil:
		return err
	case host == "":
		return local()
	}
	return peerError(host, peer(host))
}

// changed publishes a change of machine id that this host's manager has
// just made, before the API answers: a list through another host right
// after it then sees the change (that host catches its view up first:
// caughtUp). The publisher would get to it within a second; on an error
// here it still does.
func (c *Machines) changed(id, app string, err error) error {
	if err == nil {
		_ = c.n.publish(id, app)
	}
	return err
}

// caughtUp brings this host's view of the directory up to etcd's current
// revision (bounded: a lagging watch makes a list stale, never stuck).
func (c *Machines) caughtUp(ctx context.Context, app string) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if resp, err := c.n.cli.Get(ctx, appKey(app), clientv3.WithCountOnly()); err == nil {
		c.n.view.waitRev(ctx, resp.Header.Revision)
	}
}

func (c *Machines) Update(ctx context.Context, app, id string, req model.UpdateMachineRequest) (mc model.Machine, err error) {
	err = c.remote(ctx, app, id, func() (err error) {
		defer func() { err = c.changed(id, app, err) }()
		mc, err = c.n.mgr.Update(ctx, app, id, req)
		mc = c.mark(mc)
		return err
	}, func(h string) (err error) {
		mc, err = c.n.peer.client(h).UpdateMachine(ctx, app, id, req)
		return err
	})
	return mc, err
}

func (c *Machines) Start(ctx context.Context, app, id string) (resp model.StartResponse, err error) {
	err = c.remote(ctx, app, id, func() (err error) {
		resp, err = c.n.mgr.Start(ctx, app, id)
		return c.changed(id, app, err)
	}, func(h string) (err error) {
		resp, err = c.n.peer.client(h).Start(ctx, app, id)
		return err
	})
	return resp, err
}

func (c *Machines) Stop(ctx context.Context, app, id string, req model.StopRequest) error {
	return c.remote(ctx, app, id, func() error { return c.changed(id, app, c.n.mgr.Stop(ctx, app, id, req)) },
		func(h string) error { return c.n.peer.client(h).Stop(ctx, app, id, req) })
}

func (c *Machines) Suspend(ctx context.Context, app, id string) error {
	return c.remote(ctx, app, id, func() error { return c.changed(id, app, c.n.mgr.Suspend(ctx, app, id)) },
		func(h string) error { return c.n.peer.client(h).Suspend(ctx, app, id) })
}

func (c *Machines) Destroy(ctx context.Context, app, id string, force bool) error {
	return c.remote(ctx, app, id, func() error { return c.changed(id, app, c.n.mgr.Destroy(ctx, app, id, force)) },
		func(h string) error { return c.n.peer.client(h).Destroy(ctx, app, id, force) })
}

func (c *Machines) Wait(ctx context.Context, app, id string, states []model.State) (mc model.Machine, err error) {
	err = c.remote(ctx, app, id, func() (err error) {
		mc, err = c.n.mgr.Wait(ctx, app, id, states)
		return err
	}, func(h string) error {
		timeout := time.Minute
		if d, ok := ctx.Deadline(); ok {
			timeout = time.Until(d)
		}
		st, err := c.n.peer.client(h).Wait(ctx, app, id, states, timeout)
		mc.ID, mc.State = id, st
		return err
	})
	return mc, err
}

func (c *Machines) Events(ctx context.Context, app, id string) (evs []model.Event, err error) {
	err = c.remote(ctx, app, id, func() (err error) {
		evs, err = c.n.mgr.Events(ctx, app, id)
		return err
	}, func(h string) (err error) {
		evs, err = c.n.peer.client(h).Events(ctx, app, id)
		return err
	})
	return evs, err
}

func (c *Machines) Cordon(ctx context.Context, app, id string, cordoned bool) error {
	return c.remote(ctx, app, id, func() error { return c.n.mgr.Cordon(ctx, app, id, cordoned) },
		func(h string) error { return c.n.peer.client(h).Cordon(ctx, app, id, cordoned) })
}

// Logs serves this host's machines only: the API forwards log requests for
// other hosts' machines to them (Route).
func (c *Machines) Logs(ctx context.Context, app, id string) (*logs.Log, error) {
	host, err := c.where(ctx, app, id)
	if err == nil && host != "" {
		err = model.Errorf(model.KindUnavailable, "machine %s's logs are on host %s", id, host)
	}
	if err != nil {
		return nil, err
	}
	return c.n.mgr.Logs(ctx, app, id)
}

// String names the view for logs.
func (c *Machines) String() string { return fmt.Sprintf("cluster machines of host %s", c.n.id) }

// PortOwners returns the app that owns each published host port: this
// host's durable claims (its machines' apps), and for the ports only other
// hosts' machines publish, the app of the oldest such machine in the
// directory, so that every host's proxy gives a port to the same app.
func (c *Machines) PortOwners(ctx context.Context) (map[int]string, error) {
	out, err := c.n.mgr.PortOwners(ctx)
	if err != nil {
		return nil, err
	}
	oldest := map[int]time.Time{}
	for _, e := range c.n.view.entries("", "") {
		for _, s := range e.Machine.Config.Services {
			for _, p := range s.Ports {
				if p.Port == nil {
					continue
				}
				port := *p.Port
				if t, seen := oldest[port]; (!seen && out[port] == "") || seen && e.Machine.CreatedAt.Before(t) {
					oldest[port], out[port] = e.Machine.CreatedAt, e.Machine.App
				}
			}
		}
	}
	return out, nil
}
