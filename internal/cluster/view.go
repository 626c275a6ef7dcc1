package cluster

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/torpor-dev/torpor/internal/model"
)

// view is this host's copy of the cluster's keys, kept by a watch: what
// routing, listing and placement read. It lags etcd by the watch's delay
// (eventually consistent); every decision that must be strong is a
// transaction whose compares etcd checks, never a read of the view.
type view struct {
	mu       sync.RWMutex
	rev      int64
	hosts    map[string]hostRecord // alive: registered under a lease
	hostCfg  map[string]hostConfig // every host that ever joined
	placeRev map[string]int64      // mod revision of place/<host>
	owners   map[string]string
	machines map[string]entry
	apps     map[string]model.App
	appGen   map[string]int64 // mod revision of appgen/<app>
	downAt   map[string]time.Time
	waiters  []chan struct{} // closed at the next change

	onChange    func()             // after every batch of changes
	onAppDelete func(name string)  // an app was deleted
	onHostDown  func(host string)  // a host's lease went
	onOwner     func(id, h string) // a machine's owner changed (h "" when deleted)
}

func newView() *view {
	v := &view{}
	v.reset()
	return v
}

func (v *view) reset() {
	v.hosts, v.hostCfg, v.placeRev = map[string]hostRecord{}, map[string]hostConfig{}, map[string]int64{}
	v.owners, v.machines = map[string]string{}, map[string]entry{}
	v.apps, v.appGen = map[string]model.App{}, map[string]int64{}
	if v.downAt == nil {
		v.downAt = map[string]time.Time{}
	}
}

// load replaces the view with every key at one revision.
func (v *view) load(ctx context.Context, cli *clientv3.Client) (int64, error) {
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	v.mu.Lock()
	v.reset()
	for _, kv := range resp.Kvs {
		v.apply(kv, false)
	}
	v.rev = resp.Header.Revision
	v.wakeLocked()
	v.mu.Unlock()
	v.changed()
	return resp.Header.Revision, nil
}

// follow keeps the view up to date until ctx ends, reloading it whenever
// the watch breaks (etcd member lost, compaction).
func (v *view) follow(ctx context.Context, cli *clientv3.Client, rev int64) {
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wc := cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithPrevKV())
		for resp := range wc {
			if resp.Err() != nil || resp.Canceled {
				break
			}
			v.mu.Lock()
			for _, ev := range resp.Events {
				v.apply(ev.Kv, ev.Type == clientv3.EventTypeDelete)
			}
			v.rev = resp.Header.Revision
			rev = resp.Header.Revision
			v.wakeLocked()
			v.mu.Unlock()
			v.changed()
		}
		cancel()
		for ctx.Err() == nil {
			lctx, lcancel := context.WithTimeout(ctx, 5*time.Second)
			r, err := v.load(lctx, cli)
			lcancel()
			if err == nil {
				rev = r
				break
			}
			sleepCtx(ctx, 500*time.Millisecond)
		}
	}
}

func (v *view) changed() {
	if v.onChange != nil {
		v.onChange()
	}
}

func (v *view) wakeLocked() {
	for _, w := range v.waiters {
		close(w)
	}
	v.waiters = nil
}

// apply records one key's new value (or deletion). Call with mu held.
func (v *view) apply(kv *mvccpb.KeyValue, deleted bool) {
	key := strings.TrimPrefix(string(kv.Key), prefix)
	kind, name, _ := strings.Cut(key, "/")
	switch kind {
	case "hosts":
		if deleted {
			delete(v.hosts, name)
			v.downAt[name] = time.Now()
			if v.onHostDown != nil {
				go v.onHostDown(name)
			}
			return
		}
		var h hostRecord
		if json.Unmarshal(kv.Value, &h) == nil {
			v.hosts[name] = h
			delete(v.downAt, name)
		}
	case "hostcfg":
		var c hostConfig
		if !deleted && json.Unmarshal(kv.Value, &c) == nil {
			v.hostCfg[name] = c
		}
	case "place":
		v.placeRev[name] = kv.ModRevision
	case "owners":
		if deleted {
			delete(v.owners, name)
		} else {
			v.owners[name] = string(kv.Value)
		}
		if v.onOwner != nil {
			go v.onOwner(name, v.owners[name])
		}
	case "machines":
		var e entry
		if deleted {
			delete(v.machines, name)
		} else if json.Unmarshal(kv.Value, &e) == nil {
			v.machines[name] = e
		}
	case "apps":
		var a model.App
		if deleted {
			delete(v.apps, name)
			if v.onAppDelete != nil {
				go v.onAppDelete(name)
			}
		} else if json.Unmarshal(kv.Value, &a) == nil {
			v.apps[name] = a
		}
	case "appgen":
		if deleted {
			delete(v.appGen, name)
		} else {
			v.appGen[name] = kv.ModRevision
		}
	}
}

// wait returns a channel closed at the view's next change.
func (v *view) wait() <-chan struct{} {
	v.mu.Lock()
	defer v.mu.Unlock()
	ch := make(chan struct{})
	v.waiters = append(v.waiters, ch)
	return ch
}

// waitRev waits until the view has caught up with revision rev, or ctx ends.
func (v *view) waitRev(ctx context.Context, rev int64) {
	for {
		ch := v.wait()
		v.mu.RLock()
		done := v.rev >= rev
		v.mu.RUnlock()
		if done {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

func (v *view) owner(id string) string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.owners[id]
}

func (v *view) alive(host string) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	_, ok := v.hosts[host]
	return ok
}

func (v *view) host(id string) (hostRecord, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	h, ok := v.hosts[id]
	return h, ok
}

func (v *view) app(name string) (model.App, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	a, ok := v.apps[name]
	return a, ok
}

func (v *view) appList() []model.App {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]model.App, 0, len(v.apps))
	for _, a := range v.apps {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// entries returns the directory's machines owned by host ("" for all) of
// app ("" for all), with the owner and its status filled in, by ID.
func (v *view) entries(host, app string) []entry {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []entry
	for id, e := range v.machines {
		owner := v.owners[id]
		if owner == "" || (host != "" && owner != host) || (app != "" && e.Machine.App != app) {
			continue
		}
		e.Machine.Host, e.Machine.HostStatus = owner, model.HostOK
		if _, ok := v.hosts[owner]; !ok {
			e.Machine.HostStatus = model.HostUnreachable
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Machine.ID < out[j].Machine.ID })
	return out
}

// entry returns one machine's directory record.
func (v *view) entry(id string) (entry, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	e, ok := v.machines[id]
	return e, ok
}

// knownHosts returns every host that ever joined, by ID.
func (v *view) knownHosts() []hostConfig {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]hostConfig, 0, len(v.hostCfg))
	for _, c := range v.hostCfg {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Host.ID < out[j].Host.ID })
	return out
}

func (v *view) member(id string) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	_, ok := v.hostCfg[id]
	return ok
}

// hostByAdvertise maps an advertised address to its host.
func (v *view) advertise(host string) string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if h, ok := v.hosts[host]; ok {
		return h.Advertise
	}
	return v.hostCfg[host].Host.Advertise
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
