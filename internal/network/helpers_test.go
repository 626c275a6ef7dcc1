package network

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// testRange is the only range the tests give addresses from. It is apart
// from the daemon tests' default ranges (10.213/16, 10.214/16, 10.212/16):
// `go test ./...` runs the packages at once, and one test here routes it on
// the real host, which a daemon then refuses as overlapping.
var testRange = netip.MustParsePrefix("10.219.200.0/22")

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (netlink, namespaces, mounts)")
	}
}

// uniq returns a short random suffix for app and machine names.
func uniq(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// tlog routes the manager's log to the test log.
type tlog struct{ t *testing.T }

func (w tlog) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testHost creates a throw-away namespace that stands in for the host
// namespace: bridges and host-side veths created in it vanish with it, so a
// failed test cannot leave interfaces on the real host.
func testHost(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "host")
	if err := createNetns(p); err != nil {
		t.Fatalf("create test host netns: %v", err)
	}
	t.Cleanup(func() {
		if err := deleteNetns(p); err != nil {
			t.Errorf("delete test host netns: %v", err)
		}
	})
	withHandle(t, p, func(h *netlink.Handle) {
		lo, err := h.LinkByName("lo")
		if err == nil {
			err = h.LinkSetUp(lo)
		}
		if err != nil {
			t.Fatalf("lo up in test host: %v", err)
		}
	})
	return p
}

// testNetnsDir returns a directory for machine namespaces that is unmounted
// and emptied (namespaces included) when the test ends.
func testNetnsDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "netns")
	t.Cleanup(func() { cleanNetnsDir(t, dir) })
	return dir
}

// cleanNetnsDir unmounts every namespace in dir, then dir itself.
func cleanNetnsDir(t *testing.T, dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if err := deleteNetns(filepath.Join(dir, e.Name())); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
	for unix.Unmount(dir, unix.MNT_DETACH) == nil {
	}
}

// testConfig is a configuration that works in a throw-away host namespace.
func testConfig(t *testing.T) Config {
	return Config{
		Range:     testRange,
		StateDir:  t.TempDir(),
		NetnsDir:  testNetnsDir(t),
		HostNetns: testHost(t),
		Logger:    testLogger(t),
	}
}

// newManager creates a manager that is closed when the test ends.
func newManager(t *testing.T, cfg Config) *Manager {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func attach(t *testing.T, m *Manager, app, id string) Attachment {
	t.Helper()
	a, err := m.Attach(context.Background(), app, id)
	if err != nil {
		t.Fatalf("Attach(%s, %s): %v", app, id, err)
	}
	return a
}

// withHandle runs fn with a netlink handle in the namespace at path.
func withHandle(t *testing.T, path string, fn func(h *netlink.Handle)) {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatalf("open netns %s: %v", path, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", path, err)
	}
	defer h.Close()
	fn(h)
}

// inNetnsPath runs fn on an OS thread switched into the namespace at path.
func inNetnsPath(path string, fn func() error) error {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return err
	}
	defer ns.Close()
	return inNetns(ns, fn)
}

// setForwarding sets net.ipv4.ip_forward in the namespace at path (only ever
// a throw-away test namespace).
func setForwarding(t *testing.T, path string, on bool) {
	t.Helper()
	v := "0"
	if on {
		v = "1"
	}
	err := inNetnsPath(path, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte(v), 0o644)
	})
	if err != nil {
		t.Fatalf("set ip_forward in %s: %v", path, err)
	}
}

// listen starts a TCP server inside the namespace at nsPath on ip that
// answers every connection with its own address and closes it. The socket
// belongs to that namespace for good once created.
func listen(t *testing.T, nsPath string, ip netip.Addr) netip.AddrPort {
	t.Helper()
	var ln net.Listener
	err := inNetnsPath(nsPath, func() error {
		var err error
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(ip, 0).String())
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", nsPath, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, ip.String())
			c.Close()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// dial connects from inside the namespace at nsPath to dst and returns what
// the server said.
func dial(nsPath string, dst netip.AddrPort, timeout time.Duration) (string, error) {
	var got []byte
	err := inNetnsPath(nsPath, func() error {
		d := net.Dialer{Timeout: timeout}
		c, err := d.Dial("tcp4", dst.String())
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		got, err = io.ReadAll(c)
		return err
	})
	return string(got), err
}

// mustReach fails unless a connection from nsPath to dst is answered by dst.
func mustReach(t *testing.T, from string, dst netip.AddrPort) {
	t.Helper()
	got, err := dial(from, dst, 3*time.Second)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", dst, filepath.Base(from), err)
	}
	if got != dst.Addr().String() {
		t.Fatalf("dial %s from %s: got answer %q", dst, filepath.Base(from), got)
	}
}

// mustNotReach fails if a connection from nsPath to dst succeeds.
func mustNotReach(t *testing.T, from string, dst netip.AddrPort) {
	t.Helper()
	got, err := dial(from, dst, time.Second)
	if err == nil {
		t.Fatalf("dial %s from %s succeeded (answer %q); want it blocked", dst, filepath.Base(from), got)
	}
	t.Logf("dial %s from %s blocked as expected: %v", dst, filepath.Base(from), err)
}

// machineView is what a machine's namespace looks like from inside.
type machineView struct {
	eth0     netlink.Link
	loUp     bool
	addrs    []netip.Prefix
	gateways []netip.Addr // of default routes
}

func inspect(t *testing.T, a Attachment) machineView {
	t.Helper()
	var v machineView
	withHandle(t, a.NSPath, func(h *netlink.Handle) {
		lo, err := h.LinkByName("lo")
		if err != nil {
			t.Fatalf("lo: %v", err)
		}
		v.loUp = lo.Attrs().Flags&net.FlagUp != 0
		if v.eth0, err = h.LinkByName(ifaceName); err != nil {
			t.Fatalf("%s in %s: %v", ifaceName, a.NSPath, err)
		}
		addrs, err := h.AddrList(v.eth0, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		for _, ad := range addrs {
			p, _ := netipPrefixOf(ad.IPNet)
			v.addrs = append(v.addrs, p)
		}
		routes, err := h.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range routes {
			if r.Dst == nil || r.Dst.IP.IsUnspecified() {
				gw, _ := netip.AddrFromSlice(r.Gw)
				v.gateways = append(v.gateways, gw.Unmap())
			}
		}
	})
	return v
}

// checkWired fails unless a's namespace, veth pair, bridge port, address and
// default route are all as Attach promises.
func checkWired(t *testing.T, hostNS string, a Attachment) {
	t.Helper()
	v := inspect(t, a)
	if !v.loUp {
		t.Errorf("%s: lo is down", a.MachineID)
	}
	if v.eth0.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("%s: eth0 is down", a.MachineID)
	}
	if len(v.addrs) != 1 || v.addrs[0] != a.Prefix {
		t.Errorf("%s: eth0 addresses %v, want [%s]", a.MachineID, v.addrs, a.Prefix)
	}
	if len(v.gateways) != 1 || v.gateways[0] != a.Gateway {
		t.Errorf("%s: default routes via %v, want [%s]", a.MachineID, v.gateways, a.Gateway)
	}
	if v.eth0.Attrs().HardwareAddr.String() != a.MAC.String() {
		t.Errorf("%s: eth0 MAC %s, want %s", a.MachineID, v.eth0.Attrs().HardwareAddr, a.MAC)
	}
	withHandle(t, hostNS, func(h *netlink.Handle) {
		br, err := h.LinkByName(a.Bridge)
		if err != nil {
			t.Fatalf("bridge %s: %v", a.Bridge, err)
		}
		veth, err := h.LinkByName(a.HostVeth)
		if err != nil {
			t.Fatalf("host veth %s: %v", a.HostVeth, err)
		}
		if veth.Attrs().MasterIndex != br.Attrs().Index {
			t.Errorf("%s: %s is not a port of %s", a.MachineID, a.HostVeth, a.Bridge)
		}
		if !vethPeers(veth, v.eth0) {
			t.Errorf("%s: %s and eth0 are not peers", a.MachineID, a.HostVeth)
		}
		addrs, err := h.AddrList(br, netlink.FAMILY_V4)
		if err != nil || len(addrs) != 1 || addrs[0].IP.String() != a.Gateway.String() {
			t.Errorf("bridge %s addresses %v (%v), want %s", a.Bridge, addrs, err, a.Gateway)
		}
	})
}

// linkExists reports whether the namespace at nsPath has a link name.
func linkExists(t *testing.T, nsPath, name string) bool {
	t.Helper()
	var found bool
	withHandle(t, nsPath, func(h *netlink.Handle) {
		l, err := linkByName(h, name)
		if err != nil {
			t.Fatal(err)
		}
		found = l != nil
	})
	return found
}

// isolationRules lists the bridges that have an isolation rule in nsPath.
func isolationRules(t *testing.T, nsPath string) []string {
	t.Helper()
	var out []string
	withHandle(t, nsPath, func(h *netlink.Handle) {
		rules, err := h.RuleList(netlink.FAMILY_V4)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			t.Fatal(err)
		}
		for _, r := range rules {
			if r.Priority == isolationRulePriority {
				out = append(out, r.IifName)
			}
		}
	})
	return out
}
