package cluster

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// TestAppLeaseAcrossHosts: an app's lease (what serializes deploys) is the
// cluster's: held through one host, it is refused through another, is
// refreshed and released through any host with its nonce, and of many
// acquires racing through both hosts exactly one wins.
func TestAppLeaseAcrossHosts(t *testing.T) {
	urls := startEtcd(t)
	nodes := joinNodes(t, urls, "ha", "hb")
	ctx := context.Background()
	if _, err := nodes[0].cli.Put(ctx, appKey("shop"), mustJSON(model.App{Name: "shop"})); err != nil {
		t.Fatal(err)
	}
	a, b := nodes[0].Machines(), nodes[1].Machines()
	p := model.LeaseParams{TTL: time.Minute, Description: "deploy"}
	l, err := a.AcquireAppLease(ctx, "shop", p)
	if err != nil || l.Nonce == "" {
		t.Fatalf("acquire through ha: %+v %v", l, err)
	}
	if _, err := b.AcquireAppLease(ctx, "shop", p); model.KindOf(err) != model.KindConflict || !strings.Contains(err.Error(), "app shop is leased") {
		t.Fatalf("acquire through hb while held: %v", err)
	}
	if err := b.ReleaseAppLease(ctx, "shop"); model.KindOf(err) != model.KindConflict {
		t.Fatalf("release without the nonce: %v", err)
	}
	held := model.WithLeaseNonce(ctx, l.Nonce)
	if r, err := b.AcquireAppLease(held, "shop", model.LeaseParams{TTL: 2 * time.Minute}); err != nil || r.Nonce != l.Nonce || r.ExpiresAt <= l.ExpiresAt {
		t.Fatalf("refresh through hb: %+v %v", r, err)
	}
	if got, err := b.GetAppLease(ctx, "shop"); err != nil || got.Nonce != l.Nonce {
		t.Fatalf("get through hb: %+v %v", got, err)
	}
	if err := b.ReleaseAppLease(held, "shop"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.GetAppLease(ctx, "shop"); !model.IsNotFound(err) {
		t.Fatalf("get after release: %v", err)
	}
	if _, err := a.AcquireAppLease(ctx, "nope", p); !model.IsNotFound(err) {
		t.Fatalf("lease of an app that does not exist: %v", err)
	}
	for round := range 20 {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var won []model.Lease
		for i := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l, err := []*Machines{a, b}[i%2].AcquireAppLease(ctx, "shop", p)
				switch {
				case err == nil:
					mu.Lock()
					won = append(won, l)
					mu.Unlock()
				case model.KindOf(err) != model.KindConflict:
					t.Errorf("round %d: %v", round, err)
				}
			}()
		}
		wg.Wait()
		if len(won) != 1 {
			t.Fatalf("round %d: %d acquires won, want 1", round, len(won))
		}
		if err := a.ReleaseAppLease(model.WithLeaseNonce(ctx, won[0].Nonce), "shop"); err != nil {
			t.Fatal(err)
		}
	}
}
