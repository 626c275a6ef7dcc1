package model

import "time"

// PortClaim records that an app owns a host port the proxy publishes: the
// first app whose machine config asked for it keeps it, across daemon
// restarts, until none of its machines publishes it any more. A config of
// another app asking for it is refused (KindConflict).
type PortClaim struct {
	Port    int       `json:"port"`
	App     string    `json:"app"`
	Machine string    `json:"machine"` // the machine whose config claimed it first
	Since   time.Time `json:"since"`
}

// HostPorts returns the host ports cfg's services publish through the
// proxy (ports[].port of tcp and http services), each once, in the order
// they first appear.
func (cfg *MachineConfig) HostPorts() []int {
	var out []int
	seen := map[int]bool{}
	for _, s := range cfg.Services {
		if s.Protocol == "udp" {
			continue // not proxied
		}
		for _, p := range s.Ports {
			if p.Port != nil && !seen[*p.Port] {
				seen[*p.Port] = true
				out = append(out, *p.Port)
			}
		}
	}
	return out
}
