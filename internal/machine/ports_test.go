package machine

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/store"
)

// publishing returns e's config with one HTTP service per host port.
func (e *env) publishing(ports ...int) model.MachineConfig {
	cfg := e.config()
	for i, p := range ports {
		p := p
		cfg.Services = append(cfg.Services, model.Service{Protocol: "tcp", InternalPort: 8080 + i,
			Ports: []model.Port{{Port: &p, Handlers: []string{"http"}}}})
	}
	return cfg
}

func (e *env) createIn(app string, cfg model.MachineConfig) (model.Machine, error) {
	return e.m.Create(context.Background(), app, model.CreateMachineRequest{Config: cfg})
}

func (e *env) owners() map[int]string {
	e.t.Helper()
	o, err := e.m.PortOwners(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return o
}

func wantKind(t *testing.T, err error, kind model.Kind, mention string) {
	t.Helper()
	if model.KindOf(err) != kind || !strings.Contains(err.Error(), mention) {
		t.Fatalf("got %v (%s), want a %s error mentioning %q", err, model.KindOf(err), kind, mention)
	}
}

// TestPortOwnershipIsFirstComeAndDurable is issue 17's F2 in the machine
// layer: the first app to publish a port owns it, across restarts and
// whatever the app names; another app's config asking for it is refused
// (409) before anything happens; the port is free again once no machine of
// its owner publishes it.
func TestPortOwnershipIsFirstComeAndDurable(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, app := range []string{"web", "aaa"} {
		if _, err := e.m.CreateApp(ctx, model.App{Name: app}); err != nil {
			t.Fatal(err)
		}
	}
	first, err := e.createIn("web", e.publishing(8443))
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.createIn("aaa", e.publishing(9000, 8443))
	wantKind(t, err, model.KindConflict, "config.services[1].ports[0].port: host port 8443 is published by another app")
	if strings.Contains(err.Error(), "web") {
		t.Fatalf("the refusal names the other tenant's app: %v", err)
	}
	if o := e.owners(); o[8443] != "web" || len(o) != 1 {
		t.Fatalf("owners %v after a refused create, want only 8443: web", o)
	}
	// The owner's other machines may publish it too.
	if _, err := e.createIn("web", e.publishing(8443)); err != nil {
		t.Fatal(err)
	}
	// An update of aaa's machine asking for it is refused before the
	// machine is touched.
	other, err := e.createIn("aaa", e.publishing(9000))
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.m.Update(ctx, "aaa", other.ID, model.UpdateMachineRequest{Config: e.publishing(8443)})
	wantKind(t, err, model.KindConflict, "host port 8443")
	if mc, _ := e.m.Get(ctx, "aaa", other.ID); mc.State != model.StateStarted || mc.Version != other.Version {
		t.Fatalf("a refused update touched the machine: %s, version %s → %s", mc.State, other.Version, mc.Version)
	}

	e.restart()
	if o := e.owners(); o[8443] != "web" || o[9000] != "aaa" {
		t.Fatalf("owners after a restart: %v", o)
	}
	_, err = e.createIn("aaa", e.publishing(8443))
	wantKind(t, err, model.KindConflict, "host port 8443")

	// web lets go of 8443: the update of its first machine drops it, the
	// destroy of the second frees it.
	if _, err := e.m.Update(ctx, "web", first.ID, model.UpdateMachineRequest{Config: e.publishing(8444)}); err != nil {
		t.Fatal(err)
	}
	if e.owners()[8443] != "web" {
		t.Fatal("8443 was released while another machine of web publishes it")
	}
	for _, mc := range e.list("web") {
		if mc.ID != first.ID {
			if err := e.m.Destroy(ctx, "web", mc.ID, true); err != nil {
				t.Fatal(err)
			}
		}
	}
	if o := e.owners(); o[8443] != "" || o[8444] != "web" {
		t.Fatalf("owners after web let go of 8443: %v", o)
	}
	if _, err := e.createIn("aaa", e.publishing(8443)); err != nil {
		t.Fatalf("8443 once free: %v", err)
	}
}

// TestPortsFromAnOldStoreGoToTheFirstCreated: a store written before
// ports had owners, with two apps publishing one port, gives it at start to
// the app whose machine was created first, not the first in name order.
func TestPortsFromAnOldStoreGoToTheFirstCreated(t *testing.T) {
	e := newEnv(t)
	now := time.Now().UTC()
	p := 8080
	err := e.st.Update(func(tx *store.Tx) error {
		for i, app := range []string{"web", "aaa"} {
			if err := tx.CreateApp(model.App{Name: app}); err != nil {
				return err
			}
			mc := model.Machine{ID: "legacy" + app, App: app, State: model.StateStopped, CreatedAt: now.Add(time.Duration(i) * time.Minute),
				Config: model.MachineConfig{Services: []model.Service{{InternalPort: 80, Ports: []model.Port{{Port: &p}}}}}}
			if err := tx.PutMachine(mc); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	e.restart()
	if o := e.owners(); o[8080] != "web" {
		t.Fatalf("owners %v, want 8080 to web, whose machine came first", o)
	}
}

// TestPortLimits: a port the daemon keeps for itself is refused (F3); one
// config publishes at most 16 host ports and an app at most MaxPortsPerApp
// (F12: 1,000 services used to bind 1,000 host ports).
func TestPortLimits(t *testing.T) {
	e := newEnv(t)
	e.cfg.ReservedPorts = map[int]string{4280: "the daemon's TCP API (--listen 127.0.0.1:4280)"}
	e.cfg.MaxPortsPerApp = 20
	e.restart()
	_, err := e.createIn("app", e.publishing(4280))
	wantKind(t, err, model.KindConflict, "host port 4280 is reserved for the daemon's TCP API")

	var many []int
	for p := 10000; p < 10017; p++ {
		many = append(many, p)
	}
	_, err = e.createIn("app", e.publishing(many...))
	wantKind(t, err, model.KindInvalid, "at most 16 host ports")
	if _, err := e.createIn("app", e.publishing(many[:16]...)); err != nil {
		t.Fatal(err)
	}
	_, err = e.createIn("app", e.publishing(11000, 11001, 11002, 11003, 11004))
	wantKind(t, err, model.KindQuota, "would publish 21 host ports, more than the 20")
	if len(e.owners()) != 16 {
		t.Fatalf("a refused config claimed ports: %v", e.owners())
	}
	cfg := e.config()
	for range 33 {
		cfg.Services = append(cfg.Services, model.Service{InternalPort: 80})
	}
	_, err = e.createIn("app", cfg)
	wantKind(t, err, model.KindInvalid, "config.services may have at most 32 entries")
}

func (e *env) list(app string) []model.Machine {
	e.t.Helper()
	ms, err := e.m.List(context.Background(), app)
	if err != nil {
		e.t.Fatal(err)
	}
	return ms
}
