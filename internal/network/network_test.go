package network

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// TestAttachConnectivity attaches two machines of app A and one of app B and
// checks their namespaces, that A1 reaches A2, that A1 does not reach B1, that
// the host reaches them, and that Attach is idempotent.
func TestAttachConnectivity(t *testing.T) {
	requireRoot(t)
	cfg := testConfig(t)
	m := newManager(t, cfg)
	u := uniq(t)
	appA, appB := "a-"+u, "b-"+u

	a1 := attach(t, m, appA, "a1-"+u)
	a2 := attach(t, m, appA, "a2-"+u)
	b1 := attach(t, m, appB, "b1-"+u)

	if a1.Prefix.Masked() != a2.Prefix.Masked() || a1.Bridge != a2.Bridge {
		t.Fatalf("A1 %s/%s and A2 %s/%s should share subnet and bridge", a1.Prefix, a1.Bridge, a2.Prefix, a2.Bridge)
	}
	if a1.Prefix.Masked() == b1.Prefix.Masked() || a1.Bridge == b1.Bridge {
		t.Fatalf("A and B share subnet or bridge: %s %s / %s %s", a1.Prefix, a1.Bridge, b1.Prefix, b1.Bridge)
	}
	for _, a := range []Attachment{a1, a2, b1} {
		if !testRange.Contains(a.IP) || a.IP == a.Gateway || a.Prefix.Bits() != 24 {
			t.Errorf("%s: bad address %s (gateway %s)", a.MachineID, a.Prefix, a.Gateway)
		}
		if a.NSPath != filepath.Join(cfg.NetnsDir, "torpor-"+a.MachineID) {
			t.Errorf("%s: NSPath %s", a.MachineID, a.NSPath)
		}
		if len(a.Bridge) > 15 || len(a.HostVeth) > 15 {
			t.Errorf("%s: names too long: %q %q", a.MachineID, a.Bridge, a.HostVeth)
		}
		checkWired(t, cfg.HostNetns, a)
	}

	srvA2 := listen(t, a2.NSPath, a2.IP)
	srvB1 := listen(t, b1.NSPath, b1.IP)
	mustReach(t, a1.NSPath, srvA2)
	mustNotReach(t, a1.NSPath, srvB1)
	mustReach(t, cfg.HostNetns, srvA2) // the host (proxy) reaches machines
	mustReach(t, cfg.HostNetns, srvB1)

	// Attach again: same answer, same kernel objects, still wired.
	nsBefore, before := nsIno(t, a1.NSPath), inspect(t, a1).eth0.Attrs().Index
	again := attach(t, m, appA, a1.MachineID)
	if again.IP != a1.IP || again.NSPath != a1.NSPath || again.Bridge != a1.Bridge || again.HostVeth != a1.HostVeth {
		t.Fatalf("second Attach returned %+v, first %+v", again, a1)
	}
	if after := inspect(t, a1).eth0.Attrs().Index; after != before {
		t.Errorf("second Attach re-created eth0 (index %d → %d)", before, after)
	}
	if nsIno(t, a1.NSPath) != nsBefore {
		t.Errorf("second Attach re-created the namespace")
	}
	checkWired(t, cfg.HostNetns, again)
	mustReach(t, a1.NSPath, srvA2)

	if got, ok := m.Lookup(a2.MachineID); !ok || got.IP != a2.IP {
		t.Errorf("Lookup(%s) = %+v, %v", a2.MachineID, got, ok)
	}
	if _, ok := m.Lookup("nope-" + u); ok {
		t.Errorf("Lookup of unknown machine succeeded")
	}
	if _, err := m.Attach(context.Background(), appB, a1.MachineID); !errors.Is(err, ErrOtherApp) {
		t.Errorf("Attach of A1 to app B: %v, want ErrOtherApp", err)
	}
	if got := len(m.List()); got != 3 {
		t.Errorf("List: %d machines, want 3", got)
	}
}

// nsIno identifies the namespace mounted at path.
func nsIno(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestIsolate shows that with IP forwarding on (in a throw-away host
// namespace), apps reach each other unless Isolate is set, and that Isolate
// keeps machines of one app and the host reaching machines.
func TestIsolate(t *testing.T) {
	requireRoot(t)
	cfg := testConfig(t)
	setForwarding(t, cfg.HostNetns, true)
	var logged strings.Builder
	var mu sync.Mutex
	cfg.Logger = slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logged.Write(p)
	}), nil))
	m := newManager(t, cfg)
	mu.Lock()
	if !strings.Contains(logged.String(), "ip_forward is 1") {
		t.Errorf("no warning about IP forwarding; log: %q", logged.String())
	}
	mu.Unlock()
	u := uniq(t)
	a1 := attach(t, m, "a-"+u, "a1-"+u)
	a2 := attach(t, m, "a-"+u, "a2-"+u)
	b1 := attach(t, m, "b-"+u, "b1-"+u)
	srvA2 := listen(t, a2.NSPath, a2.IP)
	srvB1 := listen(t, b1.NSPath, b1.IP)

	// Control: without Isolate a forwarding host routes between apps.
	if r := isolationRules(t, cfg.HostNetns); len(r) != 0 {
		t.Fatalf("isolation rules without Isolate: %v", r)
	}
	mustReach(t, a1.NSPath, srvB1)

	// Same state, Isolate on: Attach adds the rules.
	m.Close()
	cfg.Isolate = true
	m = newManager(t, cfg)
	for _, a := range []Attachment{a1, a2, b1} {
		attach(t, m, a.App, a.MachineID)
	}
	if r := isolationRules(t, cfg.HostNetns); len(r) != 2 {
		t.Fatalf("isolation rules %v, want one per bridge (%s, %s)", r, a1.Bridge, b1.Bridge)
	}
	mustNotReach(t, a1.NSPath, srvB1)
	mustReach(t, a1.NSPath, srvA2)
	mustReach(t, cfg.HostNetns, srvB1)

	// Isolate off again: Attach removes the rule of the bridge it touches;
	// DeleteApp removes the rule with the bridge.
	m.Close()
	cfg.Isolate = false
	m = newManager(t, cfg)
	attach(t, m, a1.App, a1.MachineID)
	if r := isolationRules(t, cfg.HostNetns); len(r) != 1 || r[0] != b1.Bridge {
		t.Fatalf("isolation rules %v, want only %s", r, b1.Bridge)
	}
	ctx := context.Background()
	if err := m.Detach(ctx, b1.MachineID); err != nil {
		t.Fatal(err)
	}
	if err := m.DeleteApp(ctx, b1.App); err != nil {
		t.Fatal(err)
	}
	if r := isolationRules(t, cfg.HostNetns); len(r) != 0 {
		t.Fatalf("isolation rules after DeleteApp: %v", r)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestDetachAndDeleteApp checks that Detach removes the namespace and veth
// and frees the address, and that DeleteApp removes the bridge once empty.
func TestDetachAndDeleteApp(t *testing.T) {
	requireRoot(t)
	cfg := testConfig(t)
	m := newManager(t, cfg)
	ctx := context.Background()
	u := uniq(t)
	app := "a-" + u
	a1 := attach(t, m, app, "a1-"+u)
	a2 := attach(t, m, app, "a2-"+u)

	if err := m.Detach(ctx, a1.MachineID); err != nil {
		t.Fatalf("Detach: %v", err)
	}
	if _, err := os.Stat(a1.NSPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("netns file %s still there (%v)", a1.NSPath, err)
	}
	if linkExists(t, cfg.HostNetns, a1.HostVeth) {
		t.Errorf("host veth %s still there", a1.HostVeth)
	}
	if _, ok := m.Lookup(a1.MachineID); ok {
		t.Errorf("Lookup after Detach succeeded")
	}
	if err := m.Detach(ctx, a1.MachineID); err != nil {
		t.Errorf("second Detach: %v", err)
	}
	if err := m.Detach(ctx, "never-"+u); err != nil {
		t.Errorf("Detach of unknown machine: %v", err)
	}
	checkWired(t, cfg.HostNetns, a2) // untouched

	// The freed address is handed out again.
	a3 := attach(t, m, app, "a3-"+u)
	if a3.IP != a1.IP {
		t.Errorf("new machine got %s, want freed %s", a3.IP, a1.IP)
	}

	if err := m.DeleteApp(ctx, app); !errors.Is(err, ErrAppInUse) {
		t.Fatalf("DeleteApp with machines: %v, want ErrAppInUse", err)
	}
	for _, id := range []string{a2.MachineID, a3.MachineID} {
		if err := m.Detach(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.DeleteApp(ctx, app); err != nil {
		t.Fatalf("DeleteApp: %v", err)
	}
	if linkExists(t, cfg.HostNetns, a1.Bridge) {
		t.Errorf("bridge %s still there", a1.Bridge)
	}
	if err := m.DeleteApp(ctx, app); err != nil {
		t.Errorf("second DeleteApp: %v", err)
	}
	entries, _ := os.ReadDir(cfg.NetnsDir)
	if len(entries) != 0 {
		t.Errorf("namespaces left in %s: %v", cfg.NetnsDir, entries)
	}
}

// TestPersistence checks that a new manager on the same state directory
// keeps the allocations, and that two managers cannot share it.
func TestPersistence(t *testing.T) {
	requireRoot(t)
	cfg := testConfig(t)
	m1 := newManager(t, cfg)
	u := uniq(t)
	a1 := attach(t, m1, "a-"+u, "a1-"+u)
	a2 := attach(t, m1, "a-"+u, "a2-"+u)
	b1 := attach(t, m1, "b-"+u, "b1-"+u)

	if _, err := New(cfg); err == nil {
		t.Fatal("second manager on a state directory in use: no error")
	}
	m1.Close()
	if _, err := m1.Attach(context.Background(), "a-"+u, "a1-"+u); !errors.Is(err, ErrClosed) {
		t.Errorf("Attach after Close: %v, want ErrClosed", err)
	}

	m2 := newManager(t, cfg)
	for _, want := range []Attachment{a1, a2, b1} {
		got, ok := m2.Lookup(want.MachineID)
		if !ok || got.IP != want.IP || got.Bridge != want.Bridge || got.NSPath != want.NSPath {
			t.Errorf("after restart Lookup(%s) = %+v, %v; want %+v", want.MachineID, got, ok, want)
		}
		again := attach(t, m2, want.App, want.MachineID)
		if again.IP != want.IP {
			t.Errorf("after restart Attach(%s) gave %s, want %s", want.MachineID, again.IP, want.IP)
		}
		checkWired(t, cfg.HostNetns, again)
	}
	a3 := attach(t, m2, "a-"+u, "a3-"+u)
	if a3.IP == a1.IP || a3.IP == a2.IP || a3.Prefix.Masked() != a1.Prefix.Masked() {
		t.Errorf("new machine after restart got %s (A1 %s, A2 %s)", a3.Prefix, a1.IP, a2.IP)
	}
	srv := listen(t, a2.NSPath, a2.IP)
	mustReach(t, a3.NSPath, srv)

	b, err := os.ReadFile(filepath.Join(cfg.StateDir, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("state file: %v\n%s", err, b)
	}
	if len(st.Machines) != 4 || len(st.Apps) != 2 {
		t.Errorf("state file has %d machines and %d apps:\n%s", len(st.Machines), len(st.Apps), b)
	}
}

// TestRepair breaks a machine's network behind the manager's back in the
// ways a reboot, an operator or runsc can, and checks that Attach repairs it.
func TestRepair(t *testing.T) {
	requireRoot(t)
	cfg := testConfig(t)
	m := newManager(t, cfg)
	u := uniq(t)
	a1 := attach(t, m, "a-"+u, "a1-"+u)
	a2 := attach(t, m, "a-"+u, "a2-"+u)
	srv := listen(t, a2.NSPath, a2.IP)
	mustReach(t, a1.NSPath, srv)

	breakages := []struct {
		name    string
		breakIt func(t *testing.T)
	}{
		{"netns deleted (reboot)", func(t *testing.T) {
			if err := deleteNetns(a1.NSPath); err != nil {
				t.Fatal(err)
			}
		}},
		{"netns file left unmounted", func(t *testing.T) {
			if err := deleteNetns(a1.NSPath); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(a1.NSPath, nil, 0o444); err != nil {
				t.Fatal(err)
			}
		}},
		{"host veth deleted", func(t *testing.T) {
			withHandle(t, cfg.HostNetns, func(h *netlink.Handle) {
				if err := deleteLink(h, a1.HostVeth); err != nil {
					t.Fatal(err)
				}
			})
		}},
		{"address removed (runsc)", func(t *testing.T) {
			dropAddress(t, a1)
			withHandle(t, a1.NSPath, func(h *netlink.Handle) {
				eth0, err := h.LinkByName(ifaceName)
				if err != nil {
					t.Fatal(err)
				}
				if err := h.LinkSetDown(eth0); err != nil {
					t.Fatal(err)
				}
			})
		}},
		{"bridge deleted", func(t *testing.T) {
			withHandle(t, cfg.HostNetns, func(h *netlink.Handle) {
				if err := deleteLink(h, a1.Bridge); err != nil {
					t.Fatal(err)
				}
			})
		}},
	}
	for _, b := range breakages {
		t.Run(b.name, func(t *testing.T) {
			b.breakIt(t)
			if _, err := dial(a1.NSPath, srv, time.Second); err == nil {
				t.Fatalf("breakage did not break connectivity")
			}
			for _, a := range []Attachment{a1, a2} { // the daemon attaches each machine before (re)starting it
				got := attach(t, m, a.App, a.MachineID)
				if got.IP != a.IP {
					t.Fatalf("repair changed %s's address: %s → %s", a.MachineID, a.IP, got.IP)
				}
				checkWired(t, cfg.HostNetns, got)
			}
			mustReach(t, a1.NSPath, srv)
		})
	}
}

// TestConcurrentAttach attaches machines of two apps at once.
func TestConcurrentAttach(t *testing.T) {
	requireRoot(t)
	cfg := testConfig(t)
	m := newManager(t, cfg)
	u := uniq(t)
	const n = 8
	res := make([]Attachment, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			app := []string{"a-" + u, "b-" + u}[i%2]
			res[i], errs[i] = m.Attach(context.Background(), app, app+"-m"+string(rune('0'+i)))
		})
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Attach %d: %v", i, errs[i])
		}
		if seen[res[i].IP] {
			t.Fatalf("address %s handed out twice", res[i].IP)
		}
		seen[res[i].IP] = true
		checkWired(t, cfg.HostNetns, res[i])
	}
}

// TestNewChecksRange checks that New refuses bad ranges and ranges that
// overlap host routes, tolerates bridges of ours, and that allocation skips
// subnets already routed on the host.
func TestNewChecksRange(t *testing.T) {
	requireRoot(t)
	for _, r := range []string{"fd00::/64", "10.219.200.0/25", "8.8.0.0/16", "10.219.200.1/22"} {
		cfg := Config{Range: netip.MustParsePrefix(r), StateDir: t.TempDir()}
		if _, err := New(cfg); !errors.Is(err, ErrInvalid) {
			t.Errorf("New with Range %s: %v, want ErrInvalid", r, err)
		}
	}
	if _, err := New(Config{Range: testRange}); !errors.Is(err, ErrInvalid) {
		t.Errorf("New without StateDir: %v, want ErrInvalid", err)
	}

	cfg := testConfig(t)
	addLink := func(l netlink.Link, addr string) {
		withHandle(t, cfg.HostNetns, func(h *netlink.Handle) {
			if err := h.LinkAdd(l); err != nil {
				t.Fatal(err)
			}
			if err := h.AddrAdd(l, &netlink.Addr{IPNet: prefixNet(netip.MustParsePrefix(addr))}); err != nil {
				t.Fatal(err)
			}
			if err := h.LinkSetUp(l); err != nil {
				t.Fatal(err)
			}
		})
	}
	// A bridge of ours left behind (state lost): tolerated, its subnet skipped.
	addLink(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "tpb-0adbc8", TxQLen: -1}}, "10.219.200.1/24")
	m := newManager(t, cfg)
	a := attach(t, m, "a-"+uniq(t), "m-"+uniq(t))
	if a.Prefix.Masked() != netip.MustParsePrefix("10.219.201.0/24") {
		t.Errorf("allocated %s, want 10.219.201.0/24 (10.219.200.0/24 is in use on the host)", a.Prefix.Masked())
	}
	m.Close()

	// A foreign interface in the range: refused.
	addLink(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "foreign0", TxQLen: -1}}, "10.219.203.7/24")
	_, err := New(cfg)
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("New with a host route in the range: %v, want ErrInvalid", err)
	}
	t.Logf("refused as expected: %v", err)
	cfg.Range = netip.MustParsePrefix("10.218.0.0/16")
	if _, err := New(cfg); err == nil {
		t.Fatalf("New with a Range that excludes persisted allocations: no error")
	} else {
		t.Logf("refused as expected: %v", err)
	}
}

// TestRealHost runs one machine through its life in the daemon's own
// namespace (Config.HostNetns empty), removing everything it creates.
func TestRealHost(t *testing.T) {
	requireRoot(t)
	cfg := Config{Range: testRange, StateDir: t.TempDir(), NetnsDir: testNetnsDir(t), Logger: testLogger(t)}
	m, err := New(cfg)
	if err != nil {
		t.Skipf("test range unusable on this host: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	u := uniq(t)
	app, id := "real-"+u, "real-"+u
	var a Attachment
	t.Cleanup(func() { // whatever happened, leave nothing on the host
		ctx := context.Background()
		if err := m.Detach(ctx, id); err != nil {
			t.Errorf("cleanup Detach: %v", err)
		}
		if err := m.DeleteApp(ctx, app); err != nil {
			t.Errorf("cleanup DeleteApp: %v", err)
		}
		if a.Bridge != "" {
			if l, _ := netlink.LinkByName(a.Bridge); l != nil {
				t.Errorf("bridge %s left on the host; deleting", a.Bridge)
				netlink.LinkDel(l)
			}
		}
		if l, _ := netlink.LinkByName(vethName("", id)); l != nil {
			t.Errorf("veth %s left on the host; deleting", vethName("", id))
			netlink.LinkDel(l)
		}
	})
	a = attach(t, m, app, id)
	checkWired(t, "/proc/self/ns/net", a)
	srv := listen(t, a.NSPath, a.IP)
	mustReach(t, "/proc/self/ns/net", srv)
}

// TestAdoptLeavesTheNamespaceAlone: adopting a running machine (issue 17,
// F1) repairs the host side but never puts eth0's address back, which runsc
// --network=sandbox has taken out of the kernel; it refuses what it cannot
// repair without cutting the sandbox off.
func TestAdoptLeavesTheNamespaceAlone(t *testing.T) {
	requireRoot(t)
	cfg := testConfig(t)
	m := newManager(t, cfg)
	u := uniq(t)
	a := attach(t, m, "a-"+u, "a1-"+u)
	dropAddress(t, a) // what runsc does at start: the address (and its routes) leave the kernel
	// Something broke on the host side while the daemon was down.
	withHandle(t, cfg.HostNetns, func(h *netlink.Handle) {
		veth, err := h.LinkByName(a.HostVeth)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetNoMaster(veth); err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetDown(veth); err != nil {
			t.Fatal(err)
		}
	})
	got, err := m.Adopt(context.Background(), a.App, a.MachineID)
	if err != nil {
		t.Fatal(err)
	}
	if got.IP != a.IP || got.NSPath != a.NSPath {
		t.Fatalf("Adopt = %+v, Attach gave %+v", got, a)
	}
	if v := inspect(t, a); len(v.addrs) != 0 || len(v.gateways) != 0 {
		t.Fatalf("Adopt put eth0's address or route back in the namespace: %v via %v", v.addrs, v.gateways)
	}
	withHandle(t, cfg.HostNetns, func(h *netlink.Handle) {
		br, _ := h.LinkByName(a.Bridge)
		veth, err := h.LinkByName(a.HostVeth)
		if err != nil || br == nil || veth.Attrs().MasterIndex != br.Attrs().Index || veth.Attrs().Flags&net.FlagUp == 0 {
			t.Fatalf("Adopt did not put %s back up on %s (%v)", a.HostVeth, a.Bridge, err)
		}
	})

	if _, err := m.Adopt(context.Background(), "other-"+u, a.MachineID); !errors.Is(err, ErrOtherApp) {
		t.Fatalf("Adopt for another app = %v, want ErrOtherApp", err)
	}
	if _, err := m.Adopt(context.Background(), a.App, "nope-"+u); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Adopt of a machine with no allocation = %v, want ErrInvalid", err)
	}
	// A pair missing its host side is refused at once, naming what is
	// missing (and not panicking on the nil link).
	withHandle(t, cfg.HostNetns, func(h *netlink.Handle) {
		if err := deleteLink(h, a.HostVeth); err != nil {
			t.Fatal(err)
		}
	})
	if _, err := m.Adopt(context.Background(), a.App, a.MachineID); err == nil || !strings.Contains(err.Error(), "is broken (missing;") {
		t.Fatalf("Adopt of a machine whose veth is gone = %v, want a broken pair naming the missing side", err)
	}
	if err := deleteNetns(a.NSPath); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Adopt(context.Background(), a.App, a.MachineID); err == nil {
		t.Fatal("Adopt of a machine whose namespace is gone succeeded")
	}
}

// dropAddress removes eth0's address in a's namespace, as runsc
// --network=sandbox does when it takes the interface over.
func dropAddress(t *testing.T, a Attachment) {
	t.Helper()
	withHandle(t, a.NSPath, func(h *netlink.Handle) {
		eth0, err := h.LinkByName(ifaceName)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.AddrDel(eth0, &netlink.Addr{IPNet: ipNet(a.IP, 24)}); err != nil {
			t.Fatal(err)
		}
	})
}
