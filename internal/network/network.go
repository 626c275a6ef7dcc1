package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Defaults for Config.
var (
	DefaultRange    = netip.MustParsePrefix("10.213.0.0/16")
	DefaultNetnsDir = "/run/netns"
)

// Errors, to be matched with errors.Is.
var (
	ErrInvalid   = errors.New("invalid argument")
	ErrExhausted = errors.New("address space exhausted")
	ErrAppInUse  = errors.New("app still has attached machines")
	ErrOtherApp  = errors.New("machine is attached to another app")
	ErrClosed    = errors.New("manager closed")
)

// Config configures a Manager.
type Config struct {
	// Range is the private IPv4 range machines get their addresses from, one
	// /24 per app (so it must be /24 or larger). It must not overlap any route
	// of the host. Default DefaultRange (10.213.0.0/16).
	Range netip.Prefix
	// StateDir is where allocations persist (network.json); required. It is
	// created (mode 0700) if missing.
	StateDir string
	// NetnsDir is where machine namespaces are bind-mounted. Default
	// DefaultNetnsDir (/run/netns, where `ip netns` finds them).
	NetnsDir string
	// Isolate adds, for each app bridge, a rule that refuses to route packets
	// from the bridge into Range, so that apps stay apart even if the host has
	// IP forwarding enabled. See the package documentation.
	Isolate bool
	// Firewall gives each app bridge an nftables table that drops whatever
	// machines send to the host (except replies to connections the host
	// opened) and anything the host would forward out of the bridge, so that
	// machines reach neither the daemon nor other host services. See
	// firewall.go.
	Firewall bool
	// HostNetns is the path of the namespace that holds the bridges and the
	// host ends of the veth pairs. Empty means the daemon's own namespace;
	// tests use it to work in a throw-away namespace.
	HostNetns string
	// Instance, if set, names this daemon's veths and namespaces apart from
	// those of other daemons on the same host (several hosts of a cluster
	// on one machine, as in its tests). Machines allocated before keep
	// their names.
	Instance string
	// Logger receives warnings (e.g. IP forwarding enabled on the host).
	// Default slog.Default().
	Logger *slog.Logger
}

// Attachment describes a machine's network.
type Attachment struct {
	MachineID string
	App       string
	// NSPath is the bind-mounted network namespace, for the runtime spec
	// (linux.namespaces of type network).
	NSPath string
	// IP is eth0's address inside the namespace.
	IP netip.Addr
	// Prefix is IP with the subnet's length (e.g. 10.213.7.2/24), as set on
	// eth0; Prefix.Masked() is the app's subnet.
	Prefix netip.Prefix
	// Gateway is the app bridge's address, eth0's default route.
	Gateway netip.Addr
	// Bridge and HostVeth are the interface names on the host side.
	Bridge   string
	HostVeth string
	// MAC is eth0's hardware address, derived from IP.
	MAC net.HardwareAddr
}

// Manager allocates addresses and wires machines' namespaces. It is safe for
// concurrent use; operations are serialized.
type Manager struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	st     *state
	hostNS netns.NsHandle
	host   *netlink.Handle
	nft    *nftables.Conn // in the host namespace
	lock   *os.File       // flock on StateDir/network.lock
	closed bool
}

// New checks cfg, loads the persisted allocations and returns a Manager. It
// refuses a Range that overlaps a route of the host namespace. It creates no
// interface: Attach does, on demand.
func New(cfg Config) (*Manager, error) {
	cfg, err := withDefaults(cfg)
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, hostNS: netns.None()}
	if err := m.open(); err != nil {
		m.Close()
		return nil, fmt.Errorf("network: %w", err)
	}
	return m, nil
}

// withDefaults validates cfg and fills in defaults.
func withDefaults(cfg Config) (Config, error) {
	if !cfg.Range.IsValid() {
		cfg.Range = DefaultRange
	}
	if !cfg.Range.Addr().Is4() || cfg.Range.Bits() > subnetBits || cfg.Range.Bits() < 8 {
		return cfg, fmt.Errorf("%w: Range %s must be an IPv4 prefix between /8 and /%d", ErrInvalid, cfg.Range, subnetBits)
	}
	if cfg.Range.Masked() != cfg.Range {
		return cfg, fmt.Errorf("%w: Range %s has host bits set (did you mean %s?)", ErrInvalid, cfg.Range, cfg.Range.Masked())
	}
	if !cfg.Range.Addr().IsPrivate() {
		return cfg, fmt.Errorf("%w: Range %s is not a private (RFC 1918) range", ErrInvalid, cfg.Range)
	}
	if cfg.StateDir == "" {
		return cfg, fmt.Errorf("%w: StateDir is required", ErrInvalid)
	}
	if cfg.NetnsDir == "" {
		cfg.NetnsDir = DefaultNetnsDir
	}
	var err error
	if cfg.StateDir, err = filepath.Abs(cfg.StateDir); err != nil {
		return cfg, err
	}
	if cfg.NetnsDir, err = filepath.Abs(cfg.NetnsDir); err != nil {
		return cfg, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg, nil
}

// open does New's work on the host: state lock, namespace handles, range
// check, state, namespace directory, forwarding warning.
func (m *Manager) open() error {
	if err := os.MkdirAll(m.cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(m.cfg.StateDir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open lock: %w", err)
	}
	m.lock = lock
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("state dir %s is in use by another manager: %w", m.cfg.StateDir, err)
	}
	if m.hostNS, err = openHostNetns(m.cfg.HostNetns); err != nil {
		return err
	}
	if m.host, err = netlink.NewHandleAt(m.hostNS); err != nil {
		return fmt.Errorf("netlink handle in host netns: %w", err)
	}
	if m.nft, err = nftables.New(nftables.WithNetNSFd(int(m.hostNS))); err != nil {
		return fmt.Errorf("nftables in host netns: %w", err)
	}
	if err := checkRangeFree(m.host, m.cfg.Range); err != nil {
		return err
	}
	if m.st, err = loadState(m.cfg.StateDir, m.cfg.Range); err != nil {
		return err
	}
	if err := prepareNetnsDir(m.cfg.NetnsDir); err != nil {
		return err
	}
	m.warnForwarding()
	return m.repairFirewalls()
}

// repairFirewalls puts every allocated app's firewall table in the state
// Config.Firewall asks for, before any machine starts: a table removed while
// the daemon was down (or by a reboot) is back before the daemon serves.
func (m *Manager) repairFirewalls() error {
	for _, as := range m.st.Apps {
		if err := ensureFirewall(m.nft, bridgeName(as.Subnet), m.cfg.Firewall); err != nil {
			return err
		}
	}
	return nil
}

// warnForwarding logs when the host routes between interfaces, which would
// let machines of different apps reach each other unless Isolate is set.
func (m *Manager) warnForwarding() {
	fwd, err := ipForwarding(m.hostNS)
	switch {
	case err != nil:
		m.log.Warn("network: cannot read net.ipv4.ip_forward", "err", err)
	case fwd && !m.cfg.Isolate:
		m.log.Warn("network: net.ipv4.ip_forward is 1: the host routes between app subnets; set Isolate to refuse it")
	case fwd:
		m.log.Info("network: net.ipv4.ip_forward is 1; app bridges get isolation rules")
	}
}

// Close releases the manager's handles and the state directory lock. It
// leaves every interface and namespace in place.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	if m.host != nil {
		m.host.Close()
		m.host = nil
	}
	if m.hostNS.IsOpen() {
		m.hostNS.Close()
	}
	if m.lock != nil {
		m.lock.Close() // releases the flock
		m.lock = nil
	}
	return nil
}

// Attach gives machineID of app its network, creating or repairing whatever
// is missing: address allocation (persisted), app bridge, namespace, veth
// pair, and eth0's address and default route, which it always re-applies.
// Call it before every sandbox create or restore, never for a running
// sandbox: Adopt is for those.
func (m *Manager) Attach(ctx context.Context, app, machineID string) (Attachment, error) {
	return m.locked(ctx, "attach", app, machineID, func() (Attachment, error) {
		ms, err := m.allocate(app, machineID)
		if err != nil {
			return Attachment{}, err
		}
		a := m.attachment(machineID, ms)
		return a, m.wire(a)
	})
}

// locked checks app and machineID, then runs fn under m.mu unless ctx has
// ended or the manager is closed; errors name op and the machine.
func (m *Manager) locked(ctx context.Context, op, app, machineID string, fn func() (Attachment, error)) (Attachment, error) {
	a, err := func() (Attachment, error) {
		if err := validApp(app); err != nil {
			return Attachment{}, err
		}
		if err := validMachineID(machineID); err != nil {
			return Attachment{}, err
		}
		if err := ctx.Err(); err != nil {
			return Attachment{}, err
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.closed {
			return Attachment{}, ErrClosed
		}
		return fn()
	}()
	if err != nil {
		return Attachment{}, fmt.Errorf("network: %s %s: %w", op, machineID, err)
	}
	return a, nil
}

// allocate returns machineID's allocation, creating (and persisting) the
// app's subnet and the machine's address if needed.
func (m *Manager) allocate(app, machineID string) (machineState, error) {
	if ms, ok := m.st.Machines[machineID]; ok {
		if ms.App != app {
			return ms, fmt.Errorf("%w: %s belongs to %q, not %q", ErrOtherApp, machineID, ms.App, app)
		}
		return ms, nil
	}
	var ms machineState
	err := m.update(func(next *state) error {
		as, ok := next.Apps[app]
		if !ok {
			busy, err := m.hostBusy()
			if err != nil {
				return err
			}
			subnet, err := next.allocSubnet(m.cfg.Range, busy)
			if err != nil {
				return err
			}
			as = appState{Subnet: subnet}
			next.Apps[app] = as
		}
		ip, err := next.allocIP(as.Subnet)
		if err != nil {
			return err
		}
		ms = machineState{App: app, IP: ip, Instance: m.cfg.Instance}
		next.Machines[machineID] = ms
		return nil
	})
	return ms, err
}

// update applies change to a copy of the allocations, saves the copy
// durably and only then makes it current, so the saved file and memory never
// disagree. Callers hold m.mu.
func (m *Manager) update(change func(next *state) error) error {
	next := m.st.clone()
	if err := change(next); err != nil {
		return err
	}
	if err := next.save(m.cfg.StateDir); err != nil {
		return err
	}
	m.st = next
	return nil
}

// hostBusy returns a function that reports whether a route of the host
// already covers part of a subnet (e.g. a bridge left over from a lost state
// file); allocation skips such subnets.
func (m *Manager) hostBusy() (func(netip.Prefix) bool, error) {
	routes, err := routesIn(m.host, m.cfg.Range)
	if err != nil {
		return nil, err
	}
	return func(subnet netip.Prefix) bool {
		for _, r := range routes {
			if r.Dst.Overlaps(subnet) {
				return true
			}
		}
		return false
	}, nil
}

// attachment describes a machine from its allocation.
func (m *Manager) attachment(machineID string, ms machineState) Attachment {
	subnet := m.st.Apps[ms.App].Subnet
	return Attachment{
		MachineID: machineID,
		App:       ms.App,
		NSPath:    filepath.Join(m.cfg.NetnsDir, netnsName(ms.Instance, machineID)),
		IP:        ms.IP,
		Prefix:    netip.PrefixFrom(ms.IP, subnet.Bits()),
		Gateway:   gatewayOf(subnet),
		Bridge:    bridgeName(subnet),
		HostVeth:  vethName(ms.Instance, machineID),
		MAC:       macFor(ms.IP),
	}
}

// wire creates or repairs the kernel objects of a.
func (m *Manager) wire(a Attachment) error {
	br, err := m.wireBridge(a.Prefix.Masked())
	if err != nil {
		return err
	}
	created, err := ensureNetns(a.NSPath)
	if err != nil {
		return err
	}
	if created {
		m.log.Debug("network: created netns", "machine", a.MachineID, "path", a.NSPath)
	}
	ns, nsh, closeNS, err := openNS(a.NSPath)
	if err != nil {
		return err
	}
	defer closeNS()
	eth0, err := ensureVeth(m.host, nsh, ns, a.HostVeth, br, a.MAC)
	if err != nil {
		return err
	}
	return configureMachine(nsh, eth0, a.Prefix, a.Gateway)
}

// Adopt repairs the host side of the network of machineID, whose sandbox is
// already running (a restarted daemon adopting it): the app bridge, its
// isolation rule and firewall table, and the host end of the veth pair as a
// port of the bridge, up. It leaves everything inside the machine's
// namespace alone: runsc --network=sandbox moved eth0's address and routes
// into gVisor's netstack when the sandbox started, and putting the address
// back on the kernel's eth0 makes the namespace's kernel answer every SYN
// with a RST (DESIGN.md). It fails if the machine has no allocation, its
// namespace is gone or its veth pair is broken: recreating them would not
// reach a sandbox that is bound to the old ones.
func (m *Manager) Adopt(ctx context.Context, app, machineID string) (Attachment, error) {
	return m.locked(ctx, "adopt", app, machineID, func() (Attachment, error) {
		ms, ok := m.st.Machines[machineID]
		switch {
		case !ok:
			return Attachment{}, fmt.Errorf("%w: %s has no address allocation to adopt", ErrInvalid, machineID)
		case ms.App != app:
			return Attachment{}, fmt.Errorf("%w: %s belongs to %q, not %q", ErrOtherApp, machineID, ms.App, app)
		}
		a := m.attachment(machineID, ms)
		return a, m.wireHost(a)
	})
}

// openNS opens the network namespace at path and a netlink handle in it;
// closeNS releases both.
func openNS(path string) (ns netns.NsHandle, nsh *netlink.Handle, closeNS func(), err error) {
	if ns, err = netns.GetFromPath(path); err != nil {
		return ns, nil, nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	if nsh, err = netlink.NewHandleAt(ns); err != nil {
		ns.Close()
		return ns, nil, nil, fmt.Errorf("netlink handle in %s: %w", path, err)
	}
	return ns, nsh, func() { nsh.Close(); ns.Close() }, nil
}

// describeLink says what a lookup found, for the error of a broken pair.
func describeLink(l netlink.Link) string {
	if l == nil {
		return "missing"
	}
	return fmt.Sprintf("%s %s index %d peer %d", l.Attrs().Name, l.Type(), l.Attrs().Index, l.Attrs().ParentIndex)
}

// wireHost repairs the host-side objects of a running machine's network
// (see Adopt).
func (m *Manager) wireHost(a Attachment) error {
	br, err := m.wireBridge(a.Prefix.Masked())
	if err != nil {
		return err
	}
	if ok, err := isNetns(a.NSPath); err != nil || !ok {
		return errors.Join(err, fmt.Errorf("namespace %s is gone", a.NSPath))
	}
	_, nsh, closeNS, err := openNS(a.NSPath)
	if err != nil {
		return err
	}
	defer closeNS()
	// One look: a broken pair is given up (and its machine stopped) at
	// once. (A look again for 2 s was added when, on a loaded host, a
	// machine adopted 0.4 s after its start found a side of its pair
	// missing; the cause was the daemon taking the empty namespace the
	// gofers join for the host's, fixed in pinNullNetns, not a pair still
	// being made.)
	host, err := linkByName(m.host, a.HostVeth)
	if err != nil {
		return err
	}
	eth0, err := linkByName(nsh, ifaceName)
	if err != nil {
		return err
	}
	if !vethPeers(host, eth0) {
		return fmt.Errorf("veth pair %s ⇄ %s is broken (%s; %s)", a.HostVeth, ifaceName, describeLink(host), describeLink(eth0))
	}
	if host.Attrs().MasterIndex != br.Attrs().Index {
		if err := m.host.LinkSetMasterByIndex(host, br.Attrs().Index); err != nil {
			return fmt.Errorf("attach %s to %s: %w", a.HostVeth, br.Attrs().Name, err)
		}
	}
	return setUp(m.host, host)
}

// wireBridge creates or repairs the app bridge serving subnet, with its
// isolation rule and firewall table.
func (m *Manager) wireBridge(subnet netip.Prefix) (netlink.Link, error) {
	br, err := ensureBridge(m.host, subnet)
	if err != nil {
		return nil, err
	}
	if err := ensureIsolationRule(m.host, br.Attrs().Name, m.cfg.Range, m.cfg.Isolate); err != nil {
		return nil, err
	}
	if err := ensureFirewall(m.nft, br.Attrs().Name, m.cfg.Firewall); err != nil {
		return nil, err
	}
	return br, nil
}

// Detach removes machineID's veth pair and namespace and frees its address.
// Detaching an unknown machine is not an error (leftover interfaces and
// namespace, found by their derived names, are still removed).
func (m *Manager) Detach(ctx context.Context, machineID string) error {
	if err := m.detach(ctx, machineID); err != nil {
		return fmt.Errorf("network: detach %s: %w", machineID, err)
	}
	return nil
}

func (m *Manager) detach(ctx context.Context, machineID string) error {
	if err := validMachineID(machineID); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	instance := m.cfg.Instance
	ms, ok := m.st.Machines[machineID]
	if ok {
		instance = ms.Instance
	}
	if err := deleteLink(m.host, vethName(instance, machineID)); err != nil {
		return err
	}
	if err := deleteNetns(filepath.Join(m.cfg.NetnsDir, netnsName(instance, machineID))); err != nil {
		return err
	}
	if !ok {
		return nil
	}
	return m.update(func(next *state) error {
		delete(next.Machines, machineID)
		return nil
	})
}

// DeleteApp removes app's bridge (with its isolation rule and firewall
// table) and frees its subnet.
// It fails with ErrAppInUse while machines of the app are attached; deleting
// an unknown app is not an error.
func (m *Manager) DeleteApp(ctx context.Context, app string) error {
	if err := m.deleteApp(ctx, app); err != nil {
		return fmt.Errorf("network: delete app %q: %w", app, err)
	}
	return nil
}

func (m *Manager) deleteApp(ctx context.Context, app string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	as, ok := m.st.Apps[app]
	if !ok {
		return nil
	}
	if n := m.machinesOf(app); n > 0 {
		return fmt.Errorf("%w (%d)", ErrAppInUse, n)
	}
	br := bridgeName(as.Subnet)
	if err := deleteIsolationRule(m.host, br); err != nil {
		return err
	}
	if err := deleteFirewall(m.nft, br); err != nil {
		return err
	}
	if err := deleteLink(m.host, br); err != nil {
		return err
	}
	return m.update(func(next *state) error {
		delete(next.Apps, app)
		return nil
	})
}

// machinesOf counts the machines allocated to app.
func (m *Manager) machinesOf(app string) int {
	n := 0
	for _, ms := range m.st.Machines {
		if ms.App == app {
			n++
		}
	}
	return n
}

// Lookup returns machineID's allocation as persisted. It does not check the
// kernel objects: Attach does.
func (m *Manager) Lookup(machineID string) (Attachment, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ms, ok := m.st.Machines[machineID]
	if !ok {
		return Attachment{}, false
	}
	return m.attachment(machineID, ms), true
}

// List returns every allocated machine, sorted by machine ID, e.g. for the
// daemon to detach machines that no longer exist.
func (m *Manager) List() []Attachment {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Attachment, 0, len(m.st.Machines))
	for id, ms := range m.st.Machines {
		out = append(out, m.attachment(id, ms))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].MachineID < out[j].MachineID })
	return out
}

// Reconfigure re-applies, inside the network namespace at nsPath, what
// Attach applies there before a sandbox starts: lo and eth0 up, eth0's
// address addr and the default route via gw. It is for a tool that
// restores a machine's image with runsc itself (the benchmark's raw
// restore), bypassing the daemon; the daemon uses Attach.
func Reconfigure(nsPath string, addr netip.Prefix, gw netip.Addr) error {
	_, nsh, closeNS, err := openNS(nsPath)
	if err != nil {
		return err
	}
	defer closeNS()
	eth0, err := nsh.LinkByName(ifaceName)
	if err != nil {
		return fmt.Errorf("network: look up %s in %s: %w", ifaceName, nsPath, err)
	}
	return configureMachine(nsh, eth0, addr, gw)
}
