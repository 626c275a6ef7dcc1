package cluster

import (
	"fmt"
	"sort"
	"strings"

	"github.com/torpor-dev/torpor/internal/machine"
	"github.com/torpor-dev/torpor/internal/model"
)

// Placement: a machine reserves its guest's CPUs and memory on the host
// that owns it for as long as it exists (whatever its state, so that a
// stopped or suspended machine can always start again where it is). A new
// machine goes to the live, uncordoned host with the most free memory that
// has room; the reservation is taken by the owner's transaction (Admit,
// takeOwnership), which compares the host's place/<host> revision, so two
// placements racing for the last room on a host cannot both win.

// usage is what a host has and what its machines reserve.
type usage struct {
	host     hostRecord
	cordoned bool
	alive    bool
	cpus     int // reserved
	memoryMB int // reserved
	machines int
	rev      int64 // mod revision of place/<host> when read
}

func (u usage) freeCPUs() int     { return u.host.CPUs - u.cpus }
func (u usage) freeMemoryMB() int { return u.host.MemoryMB - u.memoryMB }

func (u usage) fits(g model.Guest) bool {
	return u.freeCPUs() >= g.CPUs && u.freeMemoryMB() >= g.MemoryMB
}

// usages returns every known host's usage, by ID. except names a machine
// whose reservation does not count (the one being placed, when it moves).
func (v *view) usages(except string) []usage {
	v.mu.RLock()
	defer v.mu.RUnlock()
	byHost := map[string]*usage{}
	for id, c := range v.hostCfg {
		u := &usage{host: c.Host, cordoned: c.Cordoned, rev: v.placeRev[id]}
		if h, ok := v.hosts[id]; ok {
			u.host, u.alive = h, true
		}
		byHost[id] = u
	}
	for id, e := range v.machines {
		u := byHost[v.owners[id]]
		if u == nil || id == except || e.Machine.State == model.StateDestroyed {
			continue
		}
		g := machine.WithGuestDefaults(e.Machine.Config.Guest)
		u.cpus += g.CPUs
		u.memoryMB += g.MemoryMB
		u.machines++
	}
	out := make([]usage, 0, len(byHost))
	for _, u := range byHost {
		out = append(out, *u)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].host.ID < out[j].host.ID })
	return out
}

// fits returns the place/<host> revision to compare when reserving g on
// host, or a KindQuota error when it has no room (except: see usages).
func (v *view) fits(host string, g model.Guest, except *string) (int64, error) {
	g = machine.WithGuestDefaults(g)
	ex := ""
	if except != nil {
		ex = *except
	}
	for _, u := range v.usages(ex) {
		if u.host.ID != host {
			continue
		}
		if !u.fits(g) {
			return 0, model.Errorf(model.KindQuota, "host %s has no room for %d CPUs and %d MB: %d CPUs and %d MB free of %d and %d",
				host, g.CPUs, g.MemoryMB, max(0, u.freeCPUs()), max(0, u.freeMemoryMB()), u.host.CPUs, u.host.MemoryMB)
		}
		return u.rev, nil
	}
	return 0, model.Errorf(model.KindNotFound, "host %q is not a member of the cluster", host)
}

// compat is what a snapshot needs of the host that restores it.
type compat struct{ runtime, version, cpu string }

func (c compat) String() string { return fmt.Sprintf("%s %q on CPU %s", c.runtime, c.version, c.cpu) }

func (c compat) matches(h hostRecord) bool {
	return h.Runtime == c.runtime && h.RuntimeVersion == c.version && h.CPU == c.cpu
}

// place picks the host for a machine with guest g: among live, uncordoned
// hosts not in exclude with room, those compatible with want (when set)
// first, then the most free memory, then the lowest ID. It reports whether
// the host is compatible; the error (KindQuota) says why no host fits.
func (v *view) place(g model.Guest, want *compat, exclude map[string]bool, except string) (string, bool, error) {
	g = machine.WithGuestDefaults(g)
	var best *usage
	bestCompat := false
	var why []string
	for _, u := range v.usages(except) {
		switch {
		case exclude[u.host.ID]:
			continue
		case !u.alive:
			why = append(why, u.host.ID+" is down")
			continue
		case u.cordoned:
			why = append(why, u.host.ID+" is cordoned")
			continue
		case !u.fits(g):
			why = append(why, fmt.Sprintf("%s has %d CPUs and %d MB free", u.host.ID, max(0, u.freeCPUs()), max(0, u.freeMemoryMB())))
			continue
		}
		c := want == nil || want.matches(u.host)
		if best == nil || c && !bestCompat || c == bestCompat && u.freeMemoryMB() > best.freeMemoryMB() {
			b := u
			best, bestCompat = &b, c
		}
	}
	if best == nil {
		if len(why) == 0 {
			why = append(why, "no other host")
		}
		return "", false, model.Errorf(model.KindQuota, "no host has room for %d CPUs and %d MB: %s", g.CPUs, g.MemoryMB, strings.Join(why, "; "))
	}
	return best.host.ID, bestCompat, nil
}
