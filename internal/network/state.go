package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
)

const (
	stateFile    = "network.json"
	lockFile     = "network.lock"
	stateVersion = 1
)

// state is what the manager persists: which subnet each app has and which
// address each machine has.
type state struct {
	Version  int                     `json:"version"`
	Range    netip.Prefix            `json:"range"`
	Apps     map[string]appState     `json:"apps"`
	Machines map[string]machineState `json:"machines"`
}

type appState struct {
	Subnet netip.Prefix `json:"subnet"`
}

type machineState struct {
	App string     `json:"app"`
	IP  netip.Addr `json:"ip"`
	// Instance is Config.Instance when the machine was allocated: it names
	// the machine's veth and namespace (see vethName).
	Instance string `json:"instance,omitempty"`
}

// newState returns an empty state for rng.
func newState(rng netip.Prefix) *state {
	return &state{Version: stateVersion, Range: rng, Apps: map[string]appState{}, Machines: map[string]machineState{}}
}

// clone returns a copy that can be changed without touching s.
func (s *state) clone() *state {
	c := *s
	c.Apps = maps.Clone(s.Apps)
	c.Machines = maps.Clone(s.Machines)
	return &c
}

// loadState reads dir/network.json; a missing file is an empty state.
func loadState(dir string, rng netip.Prefix) (*state, error) {
	path := filepath.Join(dir, stateFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return newState(rng), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	s := newState(rng)
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("parse state %s: %w", path, err)
	}
	if s.Apps == nil {
		s.Apps = map[string]appState{}
	}
	if s.Machines == nil {
		s.Machines = map[string]machineState{}
	}
	if err := s.validate(rng); err != nil {
		return nil, fmt.Errorf("state %s: %w", path, err)
	}
	s.Range = rng
	return s, nil
}

// validate checks that every allocation lies in rng and that none collide.
func (s *state) validate(rng netip.Prefix) error {
	if s.Version != stateVersion {
		return fmt.Errorf("unsupported version %d", s.Version)
	}
	subnets := map[netip.Prefix]string{}
	for app, a := range s.Apps {
		p := a.Subnet
		if !p.IsValid() || p.Bits() != subnetBits || p.Masked() != p || !rng.Contains(p.Addr()) {
			return fmt.Errorf("app %q has subnet %s, which is not a /%d inside the configured range %s", app, p, subnetBits, rng)
		}
		if other, dup := subnets[p]; dup {
			return fmt.Errorf("apps %q and %q share subnet %s", app, other, p)
		}
		subnets[p] = app
	}
	ips := map[netip.Addr]string{}
	for id, ms := range s.Machines {
		if err := validMachineID(id); err != nil {
			return err
		}
		a, ok := s.Apps[ms.App]
		if !ok {
			return fmt.Errorf("machine %s belongs to app %q, which has no subnet", id, ms.App)
		}
		if !usableHost(a.Subnet, ms.IP) {
			return fmt.Errorf("machine %s has address %s, not a machine address of %s", id, ms.IP, a.Subnet)
		}
		if other, dup := ips[ms.IP]; dup {
			return fmt.Errorf("machines %s and %s share address %s", id, other, ms.IP)
		}
		ips[ms.IP] = id
	}
	return nil
}

// save writes s to dir/network.json atomically: a temporary file in the same
// directory is written and synced, renamed over the old file, and the
// directory is synced so that the rename survives a crash.
func (s *state) save(dir string) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, stateFile+".tmp-*")
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op once renamed
	if _, err = f.Write(append(b, '\n')); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, stateFile))
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

// syncDir fsyncs a directory, making renames in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// usableHost reports whether ip may be given to a machine of subnet: not the
// network address, the gateway or the broadcast address.
func usableHost(subnet netip.Prefix, ip netip.Addr) bool {
	if !ip.Is4() || !subnet.Contains(ip) {
		return false
	}
	last := ip.As4()[3]
	return last >= 2 && last <= 254
}

// allocSubnet returns the lowest /24 of rng that no app has and that busy
// (routes present on the host) does not report as taken.
func (s *state) allocSubnet(rng netip.Prefix, busy func(netip.Prefix) bool) (netip.Prefix, error) {
	taken := map[netip.Prefix]bool{}
	for _, a := range s.Apps {
		taken[a.Subnet] = true
	}
	n := 1 << (subnetBits - rng.Bits())
	base := u32(rng.Masked().Addr())
	for i := range n {
		p := netip.PrefixFrom(addr4(base+uint32(i)<<(32-subnetBits)), subnetBits)
		if !taken[p] && !busy(p) {
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("%w: no free /%d left in %s", ErrExhausted, subnetBits, rng)
}

// allocIP returns the lowest machine address of subnet that no machine has.
func (s *state) allocIP(subnet netip.Prefix) (netip.Addr, error) {
	taken := map[netip.Addr]bool{}
	for _, m := range s.Machines {
		taken[m.IP] = true
	}
	for ip := gatewayOf(subnet).Next(); usableHost(subnet, ip); ip = ip.Next() {
		if !taken[ip] {
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%w: no free address left in %s", ErrExhausted, subnet)
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addr4(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
