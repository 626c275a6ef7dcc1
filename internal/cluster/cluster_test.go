package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/torpor-dev/torpor/internal/freeport"
	"github.com/torpor-dev/torpor/internal/machine"
	"github.com/torpor-dev/torpor/internal/model"
)

// startEtcd runs a real 3-member etcd cluster in this process, on loopback
// TCP, and returns its client URLs.
func startEtcd(t *testing.T) []string {
	t.Helper()
	port := func() int {
		p, err := freeport.Pick()
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	type member struct{ client, peer url.URL }
	var ms []member
	initial := ""
	for i := range 3 {
		c, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", port()))
		p, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", port()))
		ms = append(ms, member{*c, *p})
		if i > 0 {
			initial += ","
		}
		initial += fmt.Sprintf("e%d=%s", i, p)
	}
	var urls []string
	var wg sync.WaitGroup
	for i, m := range ms {
		cfg := embed.NewConfig()
		cfg.Name, cfg.Dir = fmt.Sprintf("e%d", i), t.TempDir()
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{m.client}, []url.URL{m.client}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{m.peer}, []url.URL{m.peer}
		cfg.InitialCluster, cfg.InitialClusterToken, cfg.LogLevel = initial, "torpor-unit", "error"
		cfg.TickMs, cfg.ElectionMs = 50, 500
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.Close)
		wg.Add(1)
		go func() { defer wg.Done(); <-e.Server.ReadyNotify() }()
		urls = append(urls, m.client.String())
	}
	wg.Wait()
	return urls
}

// joinNodes joins one Node per host ID to the etcd cluster at urls (no
// machine manager: these tests use the Claimer side only).
func joinNodes(t *testing.T, urls []string, hosts ...string) []*Node {
	t.Helper()
	certs := t.TempDir()
	if err := IssueCerts(certs, hosts...); err != nil {
		t.Fatal(err)
	}
	var out []*Node
	for _, h := range hosts {
		n, err := Join(context.Background(), Config{Endpoints: urls, HostID: h, Advertise: "127.0.0.1:1",
			TLSDir: certs + "/" + h, LeaseTTL: time.Minute, DataDir: t.TempDir(), CPUs: 4, MemoryMB: 4096,
			Runtime: "gvisor", RuntimeVersion: "v1", CPU: "amd64-test"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(n.Close)
		out = append(out, n)
	}
	return out
}

// TestSnapshotClaimRace: hosts racing to claim one snapshot, over many
// runs: exactly one claim succeeds, always the owner's, whether the
// snapshot's cluster record is absent (put-if-absent) or sealed by the
// snapshot store (compare-and-swap), and however many claims the owner
// itself races (a stale process after a pause, say).
func TestSnapshotClaimRace(t *testing.T) {
	urls := startEtcd(t)
	nodes := joinNodes(t, urls, "ha", "hb")
	cli := nodes[0].cli
	ctx := context.Background()
	const runs = 200
	for run := range runs {
		id, snap := fmt.Sprintf("m%03d", run), model.Snapshot{ID: fmt.Sprintf("s%03d", run)}
		owner := nodes[run%2]
		if _, err := cli.Put(ctx, ownerKey(id), owner.id); err != nil {
			t.Fatal(err)
		}
		if run%4 < 2 { // the store sealed it first: the claim is a CAS on its record
			rec := snapRecord{Machine: id, Host: owner.id, State: snapSealed, Stored: true}
			if _, err := cli.Put(ctx, snapshotKey(id, snap.ID), mustJSON(rec)); err != nil {
				t.Fatal(err)
			}
		}
		claimers := []*Node{nodes[0], nodes[1], owner}
		start := make(chan struct{})
		var wg sync.WaitGroup
		results := make([]error, len(claimers))
		for i, n := range claimers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				results[i] = n.ClaimSnapshot(ctx, model.Machine{ID: id}, snap)
			}()
		}
		close(start)
		wg.Wait()
		wins := 0
		for i, err := range results {
			switch {
			case err == nil:
				wins++
				if claimers[i] != owner {
					t.Fatalf("run %d: host %s, not the owner %s, claimed the snapshot", run, claimers[i].id, owner.id)
				}
			case errors.Is(err, machine.ErrClaimedElsewhere), model.KindOf(err) == model.KindConflict:
			default:
				t.Fatalf("run %d: unexpected claim error: %v", run, err)
			}
		}
		if wins != 1 {
			t.Fatalf("run %d: %d claims succeeded, want exactly 1: %v", run, wins, results)
		}
		resp, err := cli.Get(ctx, snapshotKey(id, snap.ID))
		if err != nil || len(resp.Kvs) == 0 {
			t.Fatalf("run %d: no claim record: %v", run, err)
		}
	}
	// A claim once taken is final: the owner cannot claim it again.
	err := nodes[0].ClaimSnapshot(ctx, model.Machine{ID: "m000"}, model.Snapshot{ID: "s000"})
	if !errors.Is(err, machine.ErrClaimedElsewhere) {
		t.Fatalf("second claim of a claimed snapshot: %v", err)
	}
}

// TestAdmitReservesCapacity: admissions racing for the last room on a
// host: the capacity compare lets exactly as many in as fit.
func TestAdmitReservesCapacity(t *testing.T) {
	urls := startEtcd(t)
	n := joinNodes(t, urls, "ha")[0]
	ctx := context.Background()
	if _, err := n.cli.Put(ctx, appKey("app"), mustJSON(model.App{Name: "app"})); err != nil {
		t.Fatal(err)
	}
	n.view.waitRev(ctx, 0)
	// 4 CPUs and 4096 MB: ten 1-CPU 1024 MB machines race; four fit.
	var wg sync.WaitGroup
	errs := make([]error, 10)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mc := model.Machine{ID: fmt.Sprintf("c%02d", i), Name: fmt.Sprintf("c%02d", i), App: "app",
				Config: model.MachineConfig{Guest: model.Guest{CPUs: 1, MemoryMB: 1024}}}
			errs[i] = n.Admit(ctx, mc)
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case model.KindOf(err) != model.KindQuota:
			t.Fatalf("admit: %v", err)
		}
	}
	if ok != 4 {
		t.Fatalf("%d machines admitted on a host with room for 4: %v", ok, errs)
	}
	if _, _, err := n.view.place(model.Guest{CPUs: 1, MemoryMB: 1024}, nil, nil, ""); model.KindOf(err) != model.KindQuota {
		t.Fatalf("placement on a full cluster: %v", err)
	}
	resp, err := n.cli.Get(ctx, kindPrefix("owners"), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 4 {
		t.Fatalf("%d owner records, want 4 (%v)", resp.Count, err)
	}
}
