package cluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/torpor-dev/torpor/internal/fence"
	"github.com/torpor-dev/torpor/internal/identifiers"
	"github.com/torpor-dev/torpor/internal/machine"
	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/proxy"
	"github.com/torpor-dev/torpor/internal/store"
)

// Config configures a host's membership of a cluster.
type Config struct {
	// Endpoints are the etcd client URLs (http:// or https://; with https
	// the host's certificate from TLSDir is its etcd client certificate).
	Endpoints []string
	// HostID names this host in the cluster; Advertise is the host:port of
	// its peer listener (mutual TLS), where the other hosts reach it.
	HostID    string
	Advertise string
	// TLSDir holds ca.crt, host.crt and host.key (torpor cluster certs).
	TLSDir string
	// LeaseTTL is the host's lease: a host that cannot renew it within
	// this time fences itself, and the others treat it as gone once etcd
	// expires it (default 10s).
	LeaseTTL time.Duration
	// CPUs and MemoryMB are what machines may reserve on this host
	// (default: all CPUs, all memory). DataDir is the daemon's data
	// directory: disk space and the join marker.
	CPUs     int
	MemoryMB int
	DataDir  string
	// Runtime, RuntimeVersion and CPU identify whose snapshots this host
	// can restore (the seal's runtime and host).
	Runtime, RuntimeVersion, CPU string
	// SnapshotStore, if set, is an S3 URL where every sealed snapshot is
	// also kept (see store.go), so that it survives its host.
	SnapshotStore string
	Logger        *slog.Logger
	// OnRenew, if set, is told on every turn of the lease loop when the
	// last successful renewal was sent (the fencing watchdog's heartbeat,
	// package fence). It must not block.
	OnRenew func(sent time.Time)
}

func (c *Config) check() error {
	if err := identifiers.HostID("--host-id", c.HostID); err != nil {
		return err
	}
	if c.Advertise == "" {
		return fmt.Errorf("--advertise is required with --cluster-etcd: the host:port other hosts reach this one at")
	}
	if c.TLSDir == "" {
		return fmt.Errorf("--cluster-tls is required with --cluster-etcd: a directory with ca.crt, host.crt and host.key (torpor cluster certs)")
	}
	if len(c.Endpoints) == 0 {
		return fmt.Errorf("--cluster-etcd needs at least one etcd URL")
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.LeaseTTL < 2*time.Second {
		return fmt.Errorf("cluster lease TTL %s is too short (at least 2s)", c.LeaseTTL)
	}
	if c.CPUs == 0 {
		c.CPUs = goruntime.NumCPU()
	}
	if c.MemoryMB == 0 {
		var si unix.Sysinfo_t
		if unix.Sysinfo(&si) == nil {
			c.MemoryMB = int(uint64(si.Totalram) * uint64(si.Unit) >> 20)
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// DefaultLeaseTTL is Config.LeaseTTL's default.
const DefaultLeaseTTL = 10 * time.Second

// Node is this host's membership of the cluster. It implements
// machine.Claimer for the host's machine.Manager, and serves the API
// (Machines, Router, Hosts, Tokens) and the proxy (Remote) their cluster
// side.
type Node struct {
	cfg  Config
	id   string
	log  *slog.Logger
	cli  *clientv3.Client
	view *view
	tls  *tlsFiles
	peer *peers
	snap *snapStore // nil without a snapshot store

	mgr   *machine.Manager
	st    *store.Store
	proxy atomic.Pointer[proxy.Proxy]

	lease     atomic.Int64 // clientv3.LeaseID
	renewedAt atomic.Int64 // unix nanoseconds: when the last successful keepalive was sent
	fenced    atomic.Bool
	started   atomic.Bool // Start ran: Close freezes the machines
	// mustReconcile: registered again after the lease expired, not yet
	// reconciled (the fence stays until it is).
	mustReconcile atomic.Bool
	firstJoin     bool
	marker        marker

	pub publisher

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Join connects to etcd and registers this host under a new lease. Call
// Attach with the host's machine manager, then Start once it recovered.
func Join(ctx context.Context, cfg Config) (*Node, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, id: cfg.HostID, log: cfg.Logger.With("component", "cluster"), view: newView()}
	var err error
	if n.tls, err = loadTLS(cfg.TLSDir, cfg.HostID); err != nil {
		return nil, err
	}
	n.peer = newPeers(n)
	var etcdTLS *tls.Config
	for _, ep := range cfg.Endpoints {
		if strings.HasPrefix(ep, "https://") {
			etcdTLS = n.tls.client("")
		}
	}
	n.cli, err = clientv3.New(clientv3.Config{
		Endpoints: cfg.Endpoints, DialTimeout: 5 * time.Second, TLS: etcdTLS,
		DialKeepAliveTime: 2 * time.Second, DialKeepAliveTimeout: 2 * time.Second,
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	if err := n.join(ctx); err != nil {
		n.Close()
		return nil, err
	}
	if cfg.SnapshotStore != "" {
		if n.snap, err = openStore(ctx, cfg.SnapshotStore); err != nil {
			n.Close()
			return nil, fmt.Errorf("snapshot store: %w", err)
		}
	}
	return n, nil
}

// HostID returns this host's ID.
func (n *Node) HostID() string { return n.id }

func (n *Node) join(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	clusterID, err := n.clusterID(ctx)
	if err != nil {
		return fmt.Errorf("etcd %s: %w", strings.Join(n.cfg.Endpoints, ","), err)
	}
	if n.marker, n.firstJoin, err = readMarker(n.cfg.DataDir, clusterID, n.id); err != nil {
		return err
	}
	if err := n.register(ctx); err != nil {
		return err
	}
	rev, err := n.view.load(ctx, n.cli)
	if err != nil {
		return err
	}
	n.goLoop(func() { n.view.follow(n.ctx, n.cli, rev) })
	return nil
}

// clusterID returns the cluster's ID, creating it on the first join.
func (n *Node) clusterID(ctx context.Context) (string, error) {
	id := identifiers.Random(8)
	resp, err := n.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(clusterIDKey), "=", 0)).
		Then(clientv3.OpPut(clusterIDKey, id)).
		Else(clientv3.OpGet(clusterIDKey)).Commit()
	if err != nil {
		return "", err
	}
	if resp.Succeeded {
		return id, nil
	}
	return string(resp.Responses[0].GetResponseRange().Kvs[0].Value), nil
}

// register grants a new lease and puts this host's registration under it.
// A registration of the same data directory (an earlier run whose lease
// has not expired yet) is taken over; one of another daemon is refused.
func (n *Node) register(ctx context.Context) error {
	ttl := int64(n.cfg.LeaseTTL / time.Second)
	sent := time.Now()
	lease, err := n.cli.Grant(ctx, ttl)
	if err != nil {
		return fmt.Errorf("etcd lease: %w", err)
	}
	rec := hostRecord{ID: n.id, Advertise: n.cfg.Advertise, CPUs: n.cfg.CPUs, MemoryMB: n.cfg.MemoryMB,
		DiskBytes: diskBytes(n.cfg.DataDir), Runtime: n.cfg.Runtime, RuntimeVersion: n.cfg.RuntimeVersion,
		CPU: n.cfg.CPU, Instance: n.marker.Instance, JoinedAt: time.Now().UTC()}
	for range 5 {
		resp, err := n.cli.Get(ctx, hostKey(n.id))
		if err != nil {
			return err
		}
		cmp := clientv3.Compare(clientv3.CreateRevision(hostKey(n.id)), "=", 0)
		if len(resp.Kvs) > 0 {
			var old hostRecord
			json.Unmarshal(resp.Kvs[0].Value, &old)
			if old.Instance != n.marker.Instance {
				return model.Errorf(model.KindConflict, "host ID %q is in use by another live daemon (advertising %s): give each host its own --host-id", n.id, old.Advertise)
			}
			cmp = clientv3.Compare(clientv3.ModRevision(hostKey(n.id)), "=", resp.Kvs[0].ModRevision)
		}
		cfgResp, err := n.cli.Get(ctx, hostCfgKey(n.id))
		if err != nil {
			return err
		}
		hc := hostConfig{}
		cfgCmp := clientv3.Compare(clientv3.CreateRevision(hostCfgKey(n.id)), "=", 0)
		if len(cfgResp.Kvs) > 0 {
			json.Unmarshal(cfgResp.Kvs[0].Value, &hc)
			cfgCmp = clientv3.Compare(clientv3.ModRevision(hostCfgKey(n.id)), "=", cfgResp.Kvs[0].ModRevision)
		}
		hc.Host = rec
		tr, err := n.cli.Txn(ctx).If(cmp, cfgCmp).Then(
			clientv3.OpPut(hostKey(n.id), mustJSON(rec), clientv3.WithLease(lease.ID)),
			clientv3.OpPut(hostCfgKey(n.id), mustJSON(hc)),
		).Commit()
		if err != nil {
			return err
		}
		if tr.Succeeded {
			n.lease.Store(int64(lease.ID))
			n.renewedAt.Store(sent.UnixNano())
			n.reportRenewal()
			n.log.Info("joined the cluster", "host", n.id, "advertise", n.cfg.Advertise, "lease_ttl", n.cfg.LeaseTTL)
			return nil
		}
	}
	return fmt.Errorf("could not register host %s: its keys keep changing", n.id)
}

// Attach gives the node the host's machine manager (whose Claimer it is)
// and store (whose apps and tokens a first join brings into the cluster).
func (n *Node) Attach(mgr *machine.Manager, st *store.Store) { n.mgr, n.st = mgr, st }

// AttachProxy gives the node the host's proxy, which it refreshes when the
// cluster changes and through which it serves other hosts' traffic.
func (n *Node) AttachProxy(p *proxy.Proxy) {
	n.proxy.Store(p)
	n.view.onChange = p.Refresh
}

// Start brings this host's machines in line with the cluster (after the
// manager recovered them) and starts the background work: the lease,
// publishing machines, taking over the machines of dead hosts.
func (n *Node) Start(ctx context.Context) error {
	if err := n.reconcile(ctx, true); err != nil {
		return err
	}
	// Machines the daemon froze when it stopped (Close), or its fencing
	// watchdog froze once it was gone, run on.
	n.adoptWatchdogFence(ctx)
	n.mgr.Fence(ctx, false, "the daemon started again and still owns the machine")
	n.view.onAppDelete = n.appDeleted
	n.view.onOwner = n.ownerChanged
	n.pub.start(n)
	n.started.Store(true)
	n.goLoop(n.keepAlive)
	n.goLoop(n.takeovers)
	if n.snap != nil {
		n.goLoop(n.storeSnapshots)
	}
	return nil
}

func (n *Node) goLoop(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

// Close stops the node's work and its etcd client. The lease is left to
// expire: a daemon restarted within the TTL takes it over (see register).
// The running machines are frozen first: once the lease expires, other
// hosts may restart them, and they must not run on here meanwhile; the
// next start of the daemon thaws those it still owns.
func (n *Node) Close() {
	if n.mgr != nil && n.started.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		n.mgr.Fence(ctx, true, "the daemon stopped: its machines wait, frozen, for it to come back (or for another host to take them over)")
		cancel()
	}
	if n.cancel != nil {
		n.cancel()
	}
	n.wg.Wait()
	if n.cli != nil {
		n.cli.Close()
	}
}

func (n *Node) leaseID() clientv3.LeaseID { return clientv3.LeaseID(n.lease.Load()) }

// leaseHeld is the compare that proves, inside a transaction, that this
// host still holds its lease: the fencing token of every write it makes.
func (n *Node) leaseHeld() clientv3.Cmp {
	return clientv3.Compare(clientv3.LeaseValue(hostKey(n.id)), "=", n.leaseID())
}

// keepAlive renews the lease every TTL/4. A host that has not renewed it
// for TTL minus a margin fences itself: it freezes its running machines
// and refuses every change, before etcd can expire the lease and another
// host take over its machines. Once renewed (or, when etcd expired it,
// registered again and reconciled), it thaws them.
func (n *Node) keepAlive() {
	ttl := n.cfg.LeaseTTL
	margin := fence.Margin(ttl) // the watchdog's too
	// untilDeadline is the time left before the host must fence itself.
	untilDeadline := func() time.Duration {
		return time.Until(time.Unix(0, n.renewedAt.Load()).Add(ttl - margin))
	}
	checkFence := func() {
		if since := time.Since(time.Unix(0, n.renewedAt.Load())); since > ttl-margin || n.mustReconcile.Load() {
			n.fence(fmt.Sprintf("the host could not renew its cluster lease for %s", since.Round(100*time.Millisecond)))
		}
	}
	// The deadline is checked when it falls, not only once per turn: a
	// check after a renewal call that timed out a turn later would fence
	// as late as the lease's expiry. So the call and the pause end by the
	// deadline, and the check runs before the call too.
	upTo := func(d time.Duration) time.Duration {
		if u := untilDeadline(); u > 0 && u < d {
			return max(u+10*time.Millisecond, 100*time.Millisecond)
		}
		return d
	}
	for n.ctx.Err() == nil {
		n.reportRenewal() // before and after the call: the watchdog tells a hung daemon by its silence
		checkFence()
		sent := time.Now()
		ctx, cancel := context.WithTimeout(n.ctx, upTo(ttl/4))
		_, err := n.cli.KeepAliveOnce(ctx, n.leaseID())
		cancel()
		switch {
		case err == nil:
			n.renewedAt.Store(sent.UnixNano())
			switch {
			case n.mustReconcile.Load():
				n.rejoin(false) // registered again, but not reconciled yet
			case n.fenced.Load():
				n.unfence("the host renewed its cluster lease")
			case n.mgr != nil && fence.HasMarker(n.cfg.DataDir):
				// The watchdog froze the machines of this daemon while
				// it hung, and the lease held: thaw them.
				n.adoptWatchdogFence(n.ctx)
				n.mgr.Fence(n.ctx, false, "the host renewed its cluster lease")
			}
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			n.fence("etcd expired the host's lease")
			if n.rejoin(true) == nil {
				continue
			}
		case n.ctx.Err() == nil:
			n.log.Warn("renewing the cluster lease", "err", err)
		}
		n.reportRenewal()
		checkFence()
		sleepCtx(n.ctx, upTo(ttl/4))
	}
}

// rejoin registers again after etcd expired the lease, drops the machines
// other hosts took over meanwhile, and lifts the fence.
func (n *Node) rejoin(register bool) error {
	ctx, cancel := context.WithTimeout(n.ctx, time.Minute)
	defer cancel()
	if register {
		rctx, rcancel := context.WithTimeout(ctx, n.cfg.LeaseTTL)
		err := n.register(rctx)
		rcancel()
		if err != nil {
			n.log.Warn("registering again", "err", err)
			return err
		}
		n.mustReconcile.Store(true)
	}
	if _, err := n.view.load(ctx, n.cli); err != nil {
		return err
	}
	if err := n.reconcile(ctx, false); err != nil {
		n.log.Warn("reconciling after registering again", "err", err)
		return err
	}
	n.mustReconcile.Store(false)
	n.unfence("the host registered again with a new lease")
	return nil
}

func (n *Node) fence(why string) {
	if n.fenced.CompareAndSwap(false, true) {
		n.log.Error("fenced: this host changes no machine until it holds a cluster lease again", "reason", why)
	}
	if n.mgr != nil {
		n.mgr.Fence(n.ctx, true, why)
	}
}

func (n *Node) unfence(why string) {
	if n.fenced.CompareAndSwap(true, false) {
		n.log.Info("fence lifted", "reason", why)
		if n.mgr != nil {
			n.adoptWatchdogFence(n.ctx) // it froze a hung daemon's machines
			n.mgr.Fence(n.ctx, false, why)
		}
	}
}

func (n *Node) reportRenewal() {
	if n.cfg.OnRenew != nil {
		n.cfg.OnRenew(time.Unix(0, n.renewedAt.Load()))
	}
}

// adoptWatchdogFence takes in what the fencing watchdog froze (its marker
// in the data directory), so that the thaw that follows covers it.
func (n *Node) adoptWatchdogFence(ctx context.Context) {
	mk, ok, err := fence.ReadMarker(n.cfg.DataDir)
	if err != nil {
		n.log.Warn("reading the fencing watchdog's marker", "err", err)
	}
	if !ok || n.mgr == nil {
		return
	}
	n.log.Info("the fencing watchdog froze this host's sandboxes", "at", mk.At, "sandboxes", mk.Sandboxes, "reason", mk.Reason)
	n.mgr.FencedOutside(ctx, mk.Sandboxes, mk.Reason)
	if err := fence.RemoveMarker(n.cfg.DataDir); err != nil {
		n.log.Warn("removing the fencing watchdog's marker", "err", err)
	}
}

// errFenced is the error of every change refused while fenced.
func (n *Node) errFenced() error {
	since := time.Since(time.Unix(0, n.renewedAt.Load())).Round(time.Second)
	return model.Errorf(model.KindUnavailable, "host %s is fenced: it has not renewed its cluster lease for %s (etcd unreachable?), so it changes no machine until it has; retry later or on another host", n.id, since)
}

// Own implements machine.Claimer.
func (n *Node) Own(ctx context.Context, id string) error {
	if n.fenced.Load() {
		return n.errFenced()
	}
	if n.view.owner(id) == n.id {
		return nil
	}
	owner, err := n.ownerNow(ctx, id)
	switch {
	case err != nil:
		return err
	case owner == n.id:
		return nil
	case owner == "":
		return model.Errorf(model.KindConflict, "machine %s has no owner in the cluster", id)
	}
	return model.Errorf(model.KindConflict, "machine %s belongs to host %s now, not %s", id, owner, n.id)
}

// ownerNow reads a machine's owner from etcd (a linearizable read).
func (n *Node) ownerNow(ctx context.Context, id string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := n.cli.Get(ctx, ownerKey(id))
	if err != nil {
		return "", unavailable(err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

// ownerOf is the machine's owner as the view says, asking etcd when the
// view does not know the machine (yet).
func (n *Node) ownerOf(ctx context.Context, id string) string {
	if o := n.view.owner(id); o != "" {
		return o
	}
	o, _ := n.ownerNow(ctx, id)
	return o
}

// unavailable wraps an etcd error as KindUnavailable.
func unavailable(err error) error {
	if err == nil || model.KindOf(err) != model.KindInternal {
		return err
	}
	return model.Errorf(model.KindUnavailable, "the cluster's etcd cannot be reached: %v", err)
}

// Admit implements machine.Claimer: it makes this host the owner of a new
// machine in one transaction that also reserves its CPUs and memory, takes
// its name in the app and checks that the app exists and that this host
// holds its lease.
func (n *Node) Admit(ctx context.Context, mc model.Machine) error {
	if n.fenced.Load() {
		return n.errFenced()
	}
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(appKey(mc.App)), ">", 0),
		clientv3.Compare(clientv3.CreateRevision(ownerKey(mc.ID)), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(nameKey(mc.App, mc.Name)), "=", 0),
	}
	ops := []clientv3.Op{clientv3.OpPut(nameKey(mc.App, mc.Name), mc.ID), clientv3.OpPut(appGenKey(mc.App), mc.ID)}
	return n.reserve(ctx, mc, cmps, ops, func() error { return n.whyNotAdmitted(ctx, mc) })
}

// reserve makes this host the owner of mc and reserves its CPUs and memory
// here, in one transaction with the compares cmps and the operations ops
// (and this host's lease and capacity revision). When it fails, why says
// what is wrong, or nil when only the capacity moved: then it tries again.
func (n *Node) reserve(ctx context.Context, mc model.Machine, cmps []clientv3.Cmp, ops []clientv3.Op, why func() error) error {
	mc.Host, mc.HostStatus, mc.Events = n.id, "", nil
	except := mc.ID // a machine that moves here does not count against itself
	for range 10 {
		rev, err := n.view.fits(n.id, mc.Config.Guest, &except)
		if err != nil {
			return err
		}
		resp, err := n.cli.Txn(ctx).If(append([]clientv3.Cmp{n.leaseHeld(),
			clientv3.Compare(clientv3.ModRevision(placeKey(n.id)), "=", rev)}, cmps...)...,
		).Then(append([]clientv3.Op{
			clientv3.OpPut(ownerKey(mc.ID), n.id),
			clientv3.OpPut(machineKey(mc.ID), mustJSON(entry{Machine: mc})),
			clientv3.OpPut(placeKey(n.id), mc.ID),
		}, ops...)...).Commit()
		if err != nil {
			return unavailable(err)
		}
		if resp.Succeeded {
			n.view.waitRev(ctx, resp.Header.Revision)
			return nil
		}
		if err := why(); err != nil {
			return err
		}
		n.view.waitRev(ctx, resp.Header.Revision) // the capacity moved: look again
	}
	return model.Errorf(model.KindUnavailable, "host %s: placements keep racing for machine %s; retry", n.id, mc.ID)
}

// whyNotAdmitted explains a failed Admit, or returns nil when only the
// host's capacity revision moved (worth a retry).
func (n *Node) whyNotAdmitted(ctx context.Context, mc model.Machine) error {
	resp, err := n.cli.Txn(ctx).Then(
		clientv3.OpGet(hostKey(n.id)), clientv3.OpGet(appKey(mc.App)),
		clientv3.OpGet(nameKey(mc.App, mc.Name)), clientv3.OpGet(ownerKey(mc.ID)),
	).Commit()
	if err != nil {
		return unavailable(err)
	}
	get := func(i int) []byte {
		if kvs := resp.Responses[i].GetResponseRange().Kvs; len(kvs) > 0 {
			return kvs[0].Value
		}
		return nil
	}
	switch {
	case get(0) == nil:
		n.fence("the host's registration is gone from etcd")
		return n.errFenced()
	case get(1) == nil:
		return model.Errorf(model.KindNotFound, "app %q not found", mc.App)
	case get(2) != nil:
		return model.Errorf(model.KindConflict, "name %q is already used by machine %s in app %q", mc.Name, get(2), mc.App)
	case get(3) != nil:
		return model.Errorf(model.KindConflict, "machine ID %s is taken", mc.ID)
	}
	return nil
}

// ClaimSnapshot implements machine.Claimer: the claim is a transaction
// that succeeds only if the snapshot was never claimed (its record absent
// or sealed, unchanged since read), this host owns the machine and holds
// its lease.
func (n *Node) ClaimSnapshot(ctx context.Context, mc model.Machine, snap model.Snapshot) error {
	if n.fenced.Load() {
		return n.errFenced()
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	key := snapshotKey(mc.ID, snap.ID)
	for range 3 {
		resp, err := n.cli.Get(ctx, key)
		if err != nil {
			return unavailable(err)
		}
		rec := snapRecord{Machine: mc.ID, Host: n.id, State: snapSealed}
		unclaimed := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		if len(resp.Kvs) > 0 {
			if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
				return fmt.Errorf("snapshot %s: unreadable cluster record: %w", snap.ID, err)
			}
			if rec.State == snapClaimed {
				return claimedError(snap.ID, rec)
			}
			unclaimed = clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)
		}
		rec.State, rec.ClaimedBy, rec.ClaimedAt = snapClaimed, n.id, time.Now().UTC()
		tr, err := n.cli.Txn(ctx).If(
			n.leaseHeld(),
			clientv3.Compare(clientv3.Value(ownerKey(mc.ID)), "=", n.id),
			unclaimed,
		).Then(clientv3.OpPut(key, mustJSON(rec))).Commit()
		if err != nil {
			return unavailable(err)
		}
		if tr.Succeeded {
			return nil
		}
		if err := n.Own(ctx, mc.ID); err != nil {
			return err
		}
	}
	return model.Errorf(model.KindUnavailable, "snapshot %s: its cluster record keeps changing; retry", snap.ID)
}

func claimedError(id string, rec snapRecord) error {
	return fmt.Errorf("%w: snapshot %s was claimed by host %s at %s", machine.ErrClaimedElsewhere, id, rec.ClaimedBy,
		rec.ClaimedAt.Format(time.RFC3339Nano))
}

// diskBytes is the free space of dir's file system.
func diskBytes(dir string) int64 {
	var st unix.Statfs_t
	if dir == "" || unix.Statfs(dir, &st) != nil {
		return 0
	}
	return int64(st.Bavail) * st.Bsize
}

// marker is the data directory's record of the cluster it joined.
type marker struct {
	Cluster  string `json:"cluster"`
	Host     string `json:"host"`
	Instance string `json:"instance"`
}

const markerFile = "cluster.json"

// readMarker reads the data directory's marker; without one, this is the
// directory's first join. A data directory joins one cluster, under one host ID.
func readMarker(dataDir, cluster, host string) (marker, bool, error) {
	path := filepath.Join(dataDir, markerFile)
	var m marker
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		// Written by the first reconcile, once this host's machines are
		// the cluster's (writeMarker).
		return marker{Cluster: cluster, Host: host, Instance: identifiers.Random(8)}, true, nil
	}
	if err != nil {
		return m, false, err
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, false, fmt.Errorf("%s: %w", path, err)
	}
	if m.Cluster != cluster {
		return m, false, fmt.Errorf("data directory %s belongs to cluster %s, but etcd holds cluster %s: a data directory joins one cluster", dataDir, m.Cluster, cluster)
	}
	if m.Host != host {
		return m, false, fmt.Errorf("data directory %s is host %q of the cluster, not %q: keep its --host-id", dataDir, m.Host, host)
	}
	return m, false, nil
}

func writeMarker(dataDir string, m marker) error {
	path := filepath.Join(dataDir, markerFile)
	b, _ := json.Marshal(m)
	if err := os.WriteFile(path+".tmp", b, 0o600); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}
