package network

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNames(t *testing.T) {
	subnet := netip.MustParsePrefix("10.213.7.0/24")
	if got := bridgeName(subnet); got != "tpb-0ad507" {
		t.Errorf("bridgeName = %q", got)
	}
	long := strings.Repeat("x", 64)
	for _, n := range []string{bridgeName(netip.MustParsePrefix("192.168.255.0/24")), vethName("", long), vethName("", "a")} {
		if len(n) > 15 {
			t.Errorf("%q is longer than IFNAMSIZ-1", n)
		}
	}
	if vethName("", "a") == vethName("", "b") || vethName("", "a") != vethName("", "a") {
		t.Errorf("vethName not deterministic or not distinct")
	}
	if got := macFor(netip.MustParseAddr("10.213.7.2")).String(); got != "0a:74:0a:d5:07:02" {
		t.Errorf("macFor = %s", got)
	}
	for _, id := range []string{"", "../x", "a/b", ".x", "-x", long + "y", "a b"} {
		if err := validMachineID(id); !errors.Is(err, ErrInvalid) {
			t.Errorf("validMachineID(%q) = %v", id, err)
		}
	}
	for _, id := range []string{"3d8d9e7b111e89", "a1-deadbeef", "x_y.z"} {
		if err := validMachineID(id); err != nil {
			t.Errorf("validMachineID(%q) = %v", id, err)
		}
	}
}

func TestAllocation(t *testing.T) {
	rng := netip.MustParsePrefix("10.213.200.0/23") // two subnets
	s := newState(rng)
	never := func(netip.Prefix) bool { return false }
	p1, err := s.allocSubnet(rng, never)
	if err != nil || p1 != netip.MustParsePrefix("10.213.200.0/24") {
		t.Fatalf("first subnet %s, %v", p1, err)
	}
	s.Apps["a"] = appState{Subnet: p1}
	busy := func(p netip.Prefix) bool { return p == netip.MustParsePrefix("10.213.201.0/24") }
	if _, err := s.allocSubnet(rng, busy); !errors.Is(err, ErrExhausted) {
		t.Fatalf("allocSubnet with the rest busy: %v", err)
	}
	for i := 2; i <= 254; i++ {
		ip, err := s.allocIP(p1)
		if err != nil {
			t.Fatalf("allocIP #%d: %v", i, err)
		}
		if ip.As4()[3] != byte(i) {
			t.Fatalf("allocIP #%d = %s", i, ip)
		}
		s.Machines["m"+ip.String()] = machineState{App: "a", IP: ip}
	}
	if _, err := s.allocIP(p1); !errors.Is(err, ErrExhausted) {
		t.Fatalf("allocIP in a full subnet: %v", err)
	}
}

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	rng := netip.MustParsePrefix("10.213.200.0/22")
	s := newState(rng)
	s.Apps["a"] = appState{Subnet: netip.MustParsePrefix("10.213.201.0/24")}
	s.Machines["m1"] = machineState{App: "a", IP: netip.MustParseAddr("10.213.201.2")}
	if err := s.save(dir); err != nil {
		t.Fatal(err)
	}
	got, err := loadState(dir, rng)
	if err != nil {
		t.Fatal(err)
	}
	if got.Machines["m1"] != s.Machines["m1"] || got.Apps["a"] != s.Apps["a"] {
		t.Fatalf("round trip: %+v", got)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
	if _, err := loadState(dir, netip.MustParsePrefix("10.213.0.0/24")); err == nil {
		t.Errorf("load with a range that excludes the allocations: no error")
	}

	bad := map[string]string{
		"gateway address":  `{"version":1,"apps":{"a":{"subnet":"10.213.201.0/24"}},"machines":{"m":{"app":"a","ip":"10.213.201.1"}}}`,
		"unknown app":      `{"version":1,"apps":{},"machines":{"m":{"app":"a","ip":"10.213.201.2"}}}`,
		"shared subnet":    `{"version":1,"apps":{"a":{"subnet":"10.213.201.0/24"},"b":{"subnet":"10.213.201.0/24"}},"machines":{}}`,
		"shared address":   `{"version":1,"apps":{"a":{"subnet":"10.213.201.0/24"}},"machines":{"m":{"app":"a","ip":"10.213.201.2"},"n":{"app":"a","ip":"10.213.201.2"}}}`,
		"unaligned subnet": `{"version":1,"apps":{"a":{"subnet":"10.213.201.5/24"}},"machines":{}}`,
		"version":          `{"version":9}`,
		"garbage":          `{`,
	}
	for name, content := range bad {
		if err := os.WriteFile(filepath.Join(dir, stateFile), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := loadState(dir, rng); err == nil {
			t.Errorf("%s: loaded without error", name)
		}
	}
}
