package machine

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/store"
)

// Published host ports belong to apps, first come first served, for good
// (issue 17, F2: after a restart the proxy used to give a contested port to
// the first app in name order, and one tenant's traffic to another's
// machine). The first app whose machine config publishes a port owns it,
// recorded in the store, until none of its machines publishes it any more.
// A config asking for a port another app owns, or one the daemon keeps for
// itself (its own API address: F3), is refused before anything happens, with
// a KindConflict error naming the field; one that would make its app publish
// more than Config.MaxPortsPerApp ports, with KindQuota (F12).

// DefaultMaxPortsPerApp is Config.MaxPortsPerApp's default.
const DefaultMaxPortsPerApp = 64

// checkPorts refuses cfg for machine id of app if it asks for a host port
// that is reserved or owned by another app, or takes the app over its
// number of ports. It claims nothing.
func (m *Manager) checkPorts(tx *store.Tx, app string, cfg *model.MachineConfig) error {
	ports := cfg.HostPorts()
	if len(ports) == 0 {
		return nil
	}
	claims, err := tx.PortClaims()
	if err != nil {
		return err
	}
	owner := make(map[int]model.PortClaim, len(claims))
	owned := 0
	for _, c := range claims {
		owner[c.Port] = c
		if c.App == app {
			owned++
		}
	}
	for _, p := range ports {
		if what, ok := m.cfg.ReservedPorts[p]; ok {
			return model.Errorf(model.KindConflict, "%s: host port %d is reserved for %s", portField(cfg, p), p, what)
		}
		c, ok := owner[p]
		switch {
		case ok && c.App != app:
			return model.Errorf(model.KindConflict, "%s: host port %d is published by another app (since %s); pick another port",
				portField(cfg, p), p, c.Since.UTC().Format(time.RFC3339))
		case !ok:
			owned++
		}
	}
	if max := m.maxPortsPerApp(); owned > max {
		return model.Errorf(model.KindQuota, "config.services: app %q would publish %d host ports, more than the %d an app may publish", app, owned, max)
	}
	return nil
}

// claimPorts checks cfg (checkPorts) and makes app the owner of every host
// port it publishes that nobody owns yet, recording machine id as the
// claimer.
func (m *Manager) claimPorts(tx *store.Tx, app, id string, cfg *model.MachineConfig) error {
	if err := m.checkPorts(tx, app, cfg); err != nil {
		return err
	}
	now := time.Now().UTC()
	for _, p := range cfg.HostPorts() {
		if _, ok, err := tx.PortClaim(p); err != nil || ok {
			if err != nil {
				return err
			}
			continue
		}
		if err := tx.PutPortClaim(model.PortClaim{Port: p, App: app, Machine: id, Since: now}); err != nil {
			return err
		}
	}
	return nil
}

// releasePorts frees every host port of app that none of its machines
// publishes any more, counting machine id with cfg (nil: as gone) instead
// of its stored record, which the caller is about to replace.
func releasePorts(tx *store.Tx, app, id string, cfg *model.MachineConfig) error {
	ms, err := tx.Machines(app)
	if err != nil {
		return err
	}
	used := map[int]bool{}
	for _, mc := range ms {
		if mc.ID == id || mc.State == model.StateDestroyed {
			continue
		}
		for _, p := range mc.Config.HostPorts() {
			used[p] = true
		}
	}
	if cfg != nil {
		for _, p := range cfg.HostPorts() {
			used[p] = true
		}
	}
	claims, err := tx.PortClaims()
	if err != nil {
		return err
	}
	for _, c := range claims {
		if c.App == app && !used[c.Port] {
			if err := tx.DeletePortClaim(c.Port); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *Manager) maxPortsPerApp() int {
	if m.cfg.MaxPortsPerApp > 0 {
		return m.cfg.MaxPortsPerApp
	}
	return DefaultMaxPortsPerApp
}

// portField names the first ports[] entry of cfg that publishes port.
func portField(cfg *model.MachineConfig, port int) string {
	for i, s := range cfg.Services {
		for j, p := range s.Ports {
			if p.Port != nil && *p.Port == port {
				return fmt.Sprintf("config.services[%d].ports[%d].port", i, j)
			}
		}
	}
	return "config.services"
}

// PortOwners returns the app that owns each published host port.
func (m *Manager) PortOwners(ctx context.Context) (map[int]string, error) {
	out := map[int]string{}
	err := m.store.View(func(tx *store.Tx) error {
		claims, err := tx.PortClaims()
		for _, c := range claims {
			out[c.Port] = c.App
		}
		return err
	})
	return out, err
}

// recoverPorts brings the port claims in line with the machines, at start:
// a store from before claims existed (or a port whose claim went missing)
// gets its ports claimed in the order the machines were created, and claims
// no machine publishes any more are released. A port two apps publish (only
// possible in a store from before claims) stays its first claimer's and the
// conflict is logged: the proxy publishes it for the owner alone.
func (m *Manager) recoverPorts() error {
	return m.store.Update(func(tx *store.Tx) error {
		ms, err := tx.Machines("")
		if err != nil {
			return err
		}
		sort.SliceStable(ms, func(i, j int) bool { return ms[i].CreatedAt.Before(ms[j].CreatedAt) })
		apps := map[string]bool{}
		for _, mc := range ms {
			if mc.State == model.StateDestroyed {
				continue
			}
			apps[mc.App] = true
			for _, p := range mc.Config.HostPorts() {
				c, ok, err := tx.PortClaim(p)
				switch {
				case err != nil:
					return err
				case !ok:
					if err := tx.PutPortClaim(model.PortClaim{Port: p, App: mc.App, Machine: mc.ID, Since: mc.CreatedAt.UTC()}); err != nil {
						return err
					}
				case c.App != mc.App:
					m.log.Error("host port published by two apps: it stays its owner's; change the other app's config",
						"port", p, "owner", c.App, "other_app", mc.App, "machine", mc.ID)
				}
			}
		}
		claims, err := tx.PortClaims()
		if err != nil {
			return err
		}
		for _, c := range claims {
			apps[c.App] = true
		}
		for app := range apps {
			if err := releasePorts(tx, app, "", nil); err != nil {
				return err
			}
		}
		return nil
	})
}
