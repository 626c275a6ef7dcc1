package network

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"
)

// TestFirewall shows that with Firewall a machine reaches no address of the
// host (a service bound to 0.0.0.0, via its own gateway, another app's
// gateway or the host's other addresses) while the host still reaches
// machines and machines of one app reach each other; and that the tables are
// idempotent, repaired by New, removed by DeleteApp and leave other tables
// alone.
func TestFirewall(t *testing.T) {
	requireRoot(t)
	cfg := testConfig(t)
	cfg.Isolate = true
	setForwarding(t, cfg.HostNetns, true)
	m := newManager(t, cfg)
	u := uniq(t)
	a1 := attach(t, m, "a-"+u, "a1-"+u)
	a2 := attach(t, m, "a-"+u, "a2-"+u)
	b1 := attach(t, m, "b-"+u, "b1-"+u)
	hostSrv := listen(t, cfg.HostNetns, netip.IPv4Unspecified()) // a host service on every address
	srvA2 := listen(t, a2.NSPath, a2.IP)
	at := func(ip netip.Addr) netip.AddrPort { return netip.AddrPortFrom(ip, hostSrv.Port()) }
	hostAddrs := []netip.AddrPort{at(a1.Gateway), at(b1.Gateway)}

	// Control: without Firewall the host service answers on the gateway.
	if got, err := dial(a1.NSPath, at(a1.Gateway), 3*time.Second); err != nil || got != "0.0.0.0" {
		t.Fatalf("control: dial host via gateway: %q, %v", got, err)
	}

	m.Close()
	cfg.Firewall = true
	m = newManager(t, cfg) // New installs the tables of known apps
	c := nftConn(t, cfg.HostNetns)
	want := []string{firewallTablePrefix + a1.Bridge, firewallTablePrefix + b1.Bridge}
	if got := ourTables(t, c); !slices.Equal(got, sorted(want)) {
		t.Fatalf("tables after New: %v, want %v", got, want)
	}
	for _, dst := range hostAddrs {
		mustNotReach(t, a1.NSPath, dst)
		mustNotReach(t, b1.NSPath, dst)
	}
	mustReach(t, a1.NSPath, srvA2)     // same app: bridged
	mustReach(t, cfg.HostNetns, srvA2) // the host (proxy) reaches machines
	mustNotReach(t, b1.NSPath, srvA2)  // other app: not forwarded
	attach(t, m, a1.App, a1.MachineID) // idempotent
	if got := ourTables(t, c); !slices.Equal(got, sorted(want)) {
		t.Fatalf("tables after a second Attach: %v, want %v", got, want)
	}

	// Another daemon's table (another range, so another bridge) is never
	// touched; a deleted table of ours is repaired by the next New.
	foreign := &nftables.Table{Family: nftables.TableFamilyINet, Name: firewallTablePrefix + "tpb-0affff"}
	c.AddTable(foreign)
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := deleteFirewall(c, b1.Bridge); err != nil {
		t.Fatal(err)
	}
	mustReachHost(t, b1.NSPath, at(b1.Gateway))
	m.Close()
	m = newManager(t, cfg)
	mustNotReach(t, b1.NSPath, at(b1.Gateway))

	// DeleteApp removes the app's table only.
	ctx := context.Background()
	if err := m.Detach(ctx, b1.MachineID); err != nil {
		t.Fatal(err)
	}
	if err := m.DeleteApp(ctx, b1.App); err != nil {
		t.Fatal(err)
	}
	if got := ourTables(t, c); !slices.Equal(got, sorted([]string{firewallTablePrefix + a1.Bridge, foreign.Name})) {
		t.Fatalf("tables after DeleteApp: %v", got)
	}
}

// mustReachHost fails unless a connection from nsPath to the host service at
// dst is answered.
func mustReachHost(t *testing.T, from string, dst netip.AddrPort) {
	t.Helper()
	if got, err := dial(from, dst, 3*time.Second); err != nil || got != "0.0.0.0" {
		t.Fatalf("dial host service %s: %q, %v", dst, got, err)
	}
}

// nftConn is an nftables connection in the namespace at path.
func nftConn(t *testing.T, path string) *nftables.Conn {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// ourTables lists the names of torpor firewall tables (any daemon's), sorted.
func ourTables(t *testing.T, c *nftables.Conn) []string {
	t.Helper()
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, tb := range tables {
		if strings.HasPrefix(tb.Name, firewallTablePrefix) {
			out = append(out, tb.Name)
		}
	}
	return sorted(out)
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// BenchmarkEnsureFirewallIntact measures what every Attach (each machine
// start or resume) pays to check an intact table.
func BenchmarkEnsureFirewallIntact(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	p := filepath.Join(b.TempDir(), "host")
	if err := createNetns(p); err != nil {
		b.Fatal(err)
	}
	defer deleteNetns(p)
	ns, err := netns.GetFromPath(p)
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		b.Fatal(err)
	}
	if err := ensureFirewall(c, "tpb-0affff", true); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if err := ensureFirewall(c, "tpb-0affff", true); err != nil {
			b.Fatal(err)
		}
	}
}
