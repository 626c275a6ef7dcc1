package cluster

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/torpor-dev/torpor/internal/api"
	"github.com/torpor-dev/torpor/internal/machine"
	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/snapshot"
)

// A machine moves from host A to host B in three steps: B records it
// (machine.Manager.Adopt, with its sealed snapshot when B can restore it:
// same runtime build and CPU features), B becomes its owner (a transaction
// that compares the owner with A and reserves the machine's room on B),
// and A forgets it. The owner change is the commit point: until it, the
// machine is A's; after it, B's, and A (or, if A is down, A when it comes
// back) forgets its copy. A live A holds the machine's lock throughout
// (machine.Manager.Release) and pushes the snapshot to B in the adopt
// request; for a dead A, the snapshot comes from the snapshot store, if it
// reached it, and the owner transaction also checks that A's lease is gone.

// adoptRequest is the first entry ("adopt.json") of an adopt request's tar
// body; with Source "host", the snapshot's files follow (image/<name>),
// then the console log's (logs/<name>).
type adoptRequest struct {
	Machine  model.Machine   `json:"machine"`
	Events   []model.Event   `json:"events,omitempty"`
	Snapshot *model.Snapshot `json:"snapshot,omitempty"`
	// Source of the snapshot: "host" (in this request), "store" (the
	// snapshot store) or "" (none; SnapshotReason says why).
	Source         string `json:"source,omitempty"`
	SnapshotReason string `json:"snapshot_reason,omitempty"`
	From           string `json:"from"`
	// FromDown: From's lease has expired (the owner transaction checks it).
	FromDown bool   `json:"from_down,omitempty"`
	Reason   string `json:"reason"`
	// Start the machine once it is here (it was running where it was).
	Start bool `json:"start,omitempty"`
}

const (
	adoptEntry  = "adopt.json"
	imagePrefix = "image/"
	logsPrefix  = "logs/"
)

// serveAdopt takes in a machine another host moves here.
func (n *Node) serveAdopt(w http.ResponseWriter, r *http.Request) {
	tr := tar.NewReader(r.Body)
	hdr, err := tr.Next()
	if err != nil || hdr.Name != adoptEntry {
		writeError(w, http.StatusBadRequest, "an adopt request starts with "+adoptEntry)
		return
	}
	var req adoptRequest
	if err := json.NewDecoder(tr).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "adopt.json: "+err.Error())
		return
	}
	res, err := n.adopt(r.Context(), req, tr)
	io.Copy(io.Discard, r.Body)
	if err != nil {
		writeError(w, api.KindStatus(model.KindOf(err)), err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(res)
}

// adopt records a machine moving here, becomes its owner and, if asked,
// starts it. files holds the snapshot's files when req.Source is "host".
func (n *Node) adopt(ctx context.Context, req adoptRequest, files *tar.Reader) (model.MoveResult, error) {
	mc := req.Machine
	res := model.MoveResult{Machine: mc.ID, App: mc.App, To: n.id}
	if n.fenced.Load() {
		return res, n.errFenced()
	}
	imp := machine.Import{Machine: mc, Events: req.Events, SnapshotReason: req.SnapshotReason,
		Move: model.MoveDetails{From: req.From, To: n.id, Reason: req.Reason, SnapshotSource: req.Source}}
	if files != nil {
		imp.WriteFiles = func(imageDir, logDir string) error { return untarFiles(files, imageDir, logDir) }
	}
	if req.Snapshot != nil {
		imp.Snapshot = req.Snapshot
		switch {
		case req.Source == "host" && files != nil:
		case req.Source == "store" && n.snap != nil:
			imp.WriteFiles = func(imageDir, _ string) error {
				if imageDir == "" {
					return nil
				}
				return n.snap.download(ctx, mc.ID, req.Snapshot.ID, imageDir)
			}
		case req.Source == "store":
			imp.Snapshot, imp.SnapshotReason = nil, fmt.Sprintf("host %s has no snapshot store configured to copy snapshot %s from", n.id, req.Snapshot.ID)
		default:
			imp.Snapshot = nil
		}
	}
	if a, ok := n.view.app(mc.App); ok {
		n.Machines().ensureLocalApp(ctx, a)
	}
	mc, move, err := n.mgr.Adopt(ctx, imp)
	if err != nil {
		return res, err
	}
	if err := n.takeOwnership(ctx, mc, req.From, req.FromDown); err != nil {
		if ferr := n.mgr.Forget(context.WithoutCancel(ctx), mc.ID); ferr != nil {
			n.log.Error("forgetting a machine whose move failed", "machine", mc.ID, "err", ferr)
		}
		return res, err
	}
	n.log.Info("machine moved here", "machine", mc.ID, "from", req.From, "snapshot", move.Snapshot, "reason", move.SnapshotReason)
	res.State, res.Snapshot, res.Reason = mc.State, move.Snapshot, move.SnapshotReason
	if req.Start {
		if _, err := n.mgr.Start(ctx, mc.App, mc.ID); err != nil {
			res.Error = "moved, but the start failed: " + err.Error()
		}
		if now, err := n.mgr.Record(mc.ID); err == nil {
			res.State = now.State
		}
	}
	return res, nil
}

// takeOwnership makes this host the owner of mc, which from owned: a
// transaction that compares the owner, reserves mc's room here and, when
// from is down, checks that its lease is really gone.
func (n *Node) takeOwnership(ctx context.Context, mc model.Machine, from string, fromDown bool) error {
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.Value(ownerKey(mc.ID)), "=", from)}
	if fromDown {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(hostKey(from)), "=", 0))
	}
	return n.reserve(ctx, mc, cmps, nil, func() error {
		owner, err := n.ownerNow(ctx, mc.ID)
		if err != nil {
			return err
		}
		if owner != from {
			return model.Errorf(model.KindConflict, "machine %s is owned by host %s now, not %s: it moved meanwhile", mc.ID, owner, from)
		}
		if fromDown {
			if r, err := n.cli.Get(ctx, hostKey(from)); err == nil && len(r.Kvs) > 0 {
				return model.Errorf(model.KindConflict, "host %s is back (it holds a lease again): its machines stay with it", from)
			}
		}
		if r, err := n.cli.Get(ctx, hostKey(n.id)); err == nil && (len(r.Kvs) == 0 || clientv3.LeaseID(r.Kvs[0].Lease) != n.leaseID()) {
			n.fence("the host's registration is gone from etcd")
			return n.errFenced()
		}
		return nil
	})
}

// sendAdopt asks target to adopt the machine of req; dir holds the
// snapshot's files when req.Source is "host", logDir the console log's
// (both "" when there are none to send).
func (n *Node) sendAdopt(ctx context.Context, target string, req adoptRequest, dir, logDir string) (model.MoveResult, error) {
	if target == n.id {
		return n.adopt(ctx, req, nil)
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeAdopt(pw, req, dir, logDir)) }()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+target+"/cluster/v1/adopt", pr)
	if err != nil {
		return model.MoveResult{}, err
	}
	hreq.Header.Set("Content-Type", "application/x-tar")
	resp, err := n.peer.hc.Do(hreq)
	if err != nil {
		pr.CloseWithError(err)
		return model.MoveResult{}, model.Errorf(model.KindUnavailable, "host %s cannot be reached: %v", target, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		json.Unmarshal(data, &e)
		return model.MoveResult{}, model.Errorf(kindOfStatus(resp.StatusCode), "host %s: %s", target, e.Error)
	}
	var res model.MoveResult
	if err := json.Unmarshal(data, &res); err != nil {
		return res, fmt.Errorf("host %s: %w", target, err)
	}
	return res, nil
}

// writeAdopt writes an adopt request: adopt.json, then the files of dir
// and logDir.
func writeAdopt(w io.Writer, req adoptRequest, dir, logDir string) error {
	tw := tar.NewWriter(w)
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: adoptEntry, Mode: 0o600, Size: int64(len(data))}); err != nil {
		return err
	}
	if _, err := tw.Write(data); err != nil {
		return err
	}
	if req.Source == "host" && dir != "" {
		if err := addDir(tw, dir, imagePrefix); err != nil {
			return err
		}
	}
	if logDir != "" {
		if err := addDir(tw, logDir, logsPrefix); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return tw.Close()
}

// addDir adds the regular files of dir under prefix.
func addDir(tw *tar.Writer, dir, prefix string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if err := addFile(tw, filepath.Join(dir, e.Name()), prefix+e.Name()); err != nil {
			return err
		}
	}
	return nil
}

func addFile(tw *tar.Writer, path, name string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: st.Size()}); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}

// untarFiles writes the image entries of tr into imageDir and the log
// entries into logDir. Image entries with imageDir "" are an error.
func untarFiles(tr *tar.Reader, imageDir, logDir string) error {
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		dir, name := "", ""
		if rest, ok := strings.CutPrefix(hdr.Name, imagePrefix); ok && imageDir != "" {
			dir, name = imageDir, rest
		} else if rest, ok := strings.CutPrefix(hdr.Name, logsPrefix); ok {
			dir, name = logDir, rest
		}
		if dir == "" || name == "" || strings.Contains(name, "/") || name == "." || name == ".." || hdr.Typeflag != tar.TypeReg {
			return fmt.Errorf("unexpected entry %q in an adopt request", hdr.Name)
		}
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, tr)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
}

// snapshotCompat is what the snapshot in dir needs of a host.
func snapshotCompat(dir string) (compat, error) {
	seal, err := snapshot.ReadSeal(dir)
	if err != nil {
		return compat{}, err
	}
	return compat{runtime: seal.Runtime, version: seal.RuntimeVersion, cpu: seal.Host}, nil
}

// moveOut moves machine mc of this host to target: the machine is locked
// here, pushed with its snapshot (when target can restore it), adopted by
// target and forgotten here.
func (n *Node) moveOut(ctx context.Context, mc model.Machine, target, reason string, start bool) model.MoveResult {
	res := model.MoveResult{Machine: mc.ID, App: mc.App, To: target}
	err := n.mgr.Release(ctx, mc.App, mc.ID, func(ctx context.Context, exp machine.Export) error {
		req := adoptRequest{Machine: exp.Machine, Events: exp.Events, From: n.id, Reason: reason, Start: start}
		dir := ""
		if exp.Snapshot != nil {
			want, err := snapshotCompat(exp.Snapshot.Dir)
			th, _ := n.view.host(target)
			switch {
			case err != nil:
				req.SnapshotReason = fmt.Sprintf("snapshot %s could not be read on host %s: %v", exp.Snapshot.ID, n.id, err)
			case !want.matches(th):
				req.SnapshotReason = fmt.Sprintf("host %s cannot restore snapshot %s: it runs %s, the snapshot needs %s",
					target, exp.Snapshot.ID, compat{th.Runtime, th.RuntimeVersion, th.CPU}, want)
			default:
				req.Snapshot, req.Source, dir = exp.Snapshot, "host", exp.Snapshot.Dir
			}
		}
		r, err := n.sendAdopt(ctx, target, req, dir, exp.LogDir)
		if err == nil {
			res = r
		}
		return err
	})
	if err != nil {
		res.Error = err.Error()
	}
	return res
}

// DrainHost implements api.Hosts: it cordons the host and moves each of its
// machines to another host with room (suspended ones with their snapshot,
// started ones suspended, moved and resumed, or, when they cannot be
// suspended, stopped, moved and started). A live host drains itself; a
// dead one is drained by this host, with snapshots from the snapshot store.
func (n *Node) DrainHost(ctx context.Context, id string) (model.DrainReport, error) {
	report := model.DrainReport{Host: id, Moves: []model.MoveResult{}}
	if err := n.CordonHost(ctx, id, true); err != nil {
		return report, err
	}
	switch {
	case id == n.id:
		return n.drainHere(ctx)
	case n.view.alive(id):
		r, err := n.peer.client(id).DrainHost(ctx, id)
		return r, peerError(id, err)
	}
	return n.drainDown(ctx, id)
}

func (n *Node) drainHere(ctx context.Context) (model.DrainReport, error) {
	report := model.DrainReport{Host: n.id, Moves: []model.MoveResult{}}
	ms, err := n.localMachines(ctx)
	if err != nil {
		return report, err
	}
	reason := fmt.Sprintf("host %s was drained", n.id)
	for _, mc := range ms {
		if mc.State == model.StateDestroyed {
			continue
		}
		res := model.MoveResult{Machine: mc.ID, App: mc.App}
		if len(mc.Config.Mounts) > 0 {
			res.Error = "the machine mounts volumes, which stay on their host: it stays here"
			report.Moves = append(report.Moves, res)
			continue
		}
		started := mc.State == model.StateStarted
		if started {
			err := n.mgr.Suspend(ctx, mc.App, mc.ID)
			if model.KindOf(err) == model.KindPrecondition {
				err = n.mgr.Stop(ctx, mc.App, mc.ID, model.StopRequest{})
			}
			if err != nil {
				res.Error = "could not stop it for the move: " + err.Error()
				report.Moves = append(report.Moves, res)
				continue
			}
			mc, _ = n.mgr.Record(mc.ID)
		}
		var want *compat
		if snap, ok, _ := n.mgr.Snapshot(mc.ID); ok && mc.State == model.StateSuspended && snap.State == model.SnapshotSealed {
			if c, err := snapshotCompat(snap.Dir); err == nil {
				want = &c
			}
		}
		target, _, err := n.view.place(mc.Config.Guest, want, map[string]bool{n.id: true}, mc.ID)
		if err != nil {
			res.Error = err.Error()
			report.Moves = append(report.Moves, res)
			continue
		}
		report.Moves = append(report.Moves, n.moveOut(ctx, mc, target, reason, started))
	}
	return report, nil
}

// drainDown moves the machines of host dead, whose lease expired.
func (n *Node) drainDown(ctx context.Context, dead string) (model.DrainReport, error) {
	report := model.DrainReport{Host: dead, Moves: []model.MoveResult{}}
	if !n.view.member(dead) {
		return report, model.Errorf(model.KindNotFound, "host %q is not a member of the cluster", dead)
	}
	for _, e := range n.view.entries(dead, "") {
		if e.Machine.State == model.StateDestroyed {
			continue
		}
		reason := fmt.Sprintf("host %s is down (its cluster lease expired) and was drained by host %s", dead, n.id)
		res := n.takeOver(ctx, e, dead, reason, e.Machine.State == model.StateStarted || e.Machine.State == model.StateStarting)
		report.Moves = append(report.Moves, res)
	}
	return report, nil
}

// takeOver moves machine e of the dead host to the best live host.
func (n *Node) takeOver(ctx context.Context, e entry, dead, reason string, start bool) model.MoveResult {
	mc := e.Machine
	mc.Host, mc.HostStatus = "", ""
	if len(mc.Config.Mounts) > 0 {
		return model.MoveResult{Machine: mc.ID, App: mc.App, Error: "the machine mounts volumes, which stay on their host: it waits for the host to come back"}
	}
	req := adoptRequest{Machine: mc, From: dead, FromDown: true, Reason: reason, Start: start}
	var want *compat
	if mc.State == model.StateSuspended {
		req.SnapshotReason, want = n.storedSnapshot(ctx, e, dead, &req)
	}
	target, ok, err := n.view.place(mc.Config.Guest, want, map[string]bool{dead: true}, mc.ID)
	if err != nil {
		return model.MoveResult{Machine: mc.ID, App: mc.App, Error: err.Error()}
	}
	if want != nil && !ok {
		req.Snapshot, req.Source = nil, ""
		req.SnapshotReason = fmt.Sprintf("no host that can restore snapshot (%s) has room", want)
	}
	res, err := n.sendAdopt(ctx, target, req, "", "")
	if err != nil {
		return model.MoveResult{Machine: mc.ID, App: mc.App, To: target, Error: err.Error()}
	}
	return res
}

// storedSnapshot fills in req's snapshot from the snapshot store, if the
// dead host's snapshot of e reached it; else it says why not.
func (n *Node) storedSnapshot(ctx context.Context, e entry, dead string, req *adoptRequest) (string, *compat) {
	if e.Snapshot == nil || e.Snapshot.State != model.SnapshotSealed {
		return "", nil // none, or unusable already: Adopt keeps its reason
	}
	if n.snap == nil {
		return fmt.Sprintf("host %s is down and there is no snapshot store (--snapshot-store) to copy snapshot %s from", dead, e.Snapshot.ID), nil
	}
	resp, err := n.cli.Get(ctx, snapshotKey(e.Machine.ID, e.Snapshot.ID))
	if err != nil || len(resp.Kvs) == 0 {
		return fmt.Sprintf("host %s is down and snapshot %s had not reached the snapshot store", dead, e.Snapshot.ID), nil
	}
	var rec snapRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil || !rec.Stored || rec.Snapshot == nil {
		return fmt.Sprintf("host %s is down and snapshot %s had not reached the snapshot store", dead, e.Snapshot.ID), nil
	}
	if rec.State == snapClaimed {
		return claimedError(e.Snapshot.ID, rec).Error(), nil
	}
	req.Snapshot, req.Source = rec.Snapshot, "store"
	return "", &compat{runtime: rec.Snapshot.Runtime, version: rec.Snapshot.RuntimeVersion, cpu: rec.CPU}
}

// takeovers restarts, on live hosts, the running machines of hosts whose
// lease expired, as their restart policy says (always, on-failure): one
// host does it (the live host with the lowest ID), and each move's owner
// transaction checks that the dead host's lease is gone, so a machine is
// never run by two hosts.
func (n *Node) takeovers() {
	tried := map[string]time.Time{}
	for n.ctx.Err() == nil {
		sleepCtx(n.ctx, 2*time.Second)
		if n.fenced.Load() || n.leader() != n.id {
			continue
		}
		for _, u := range n.view.usages("") {
			if u.alive {
				continue
			}
			for _, e := range n.view.entries(u.host.ID, "") {
				mc := e.Machine
				policy := ""
				if mc.Config.Restart != nil {
					policy = mc.Config.Restart.Policy
				}
				running := mc.State == model.StateStarted || mc.State == model.StateStarting
				if !running || (policy != "always" && policy != "on-failure") || len(mc.Config.Mounts) > 0 || time.Since(tried[mc.ID]) < 10*time.Second {
					continue
				}
				tried[mc.ID] = time.Now()
				reason := fmt.Sprintf("host %s lost its cluster lease while the machine ran; restart policy %q restarts it elsewhere", u.host.ID, policy)
				ctx, cancel := context.WithTimeout(n.ctx, 2*time.Minute)
				res := n.takeOver(ctx, e, u.host.ID, reason, true)
				cancel()
				n.log.Info("restarted a machine of a dead host", "machine", mc.ID, "dead_host", u.host.ID, "to", res.To, "state", res.State, "error", res.Error)
			}
		}
	}
}

// leader is the live host with the lowest ID.
func (n *Node) leader() string {
	n.view.mu.RLock()
	defer n.view.mu.RUnlock()
	best := ""
	for id := range n.view.hosts {
		if best == "" || id < best {
			best = id
		}
	}
	return best
}
