package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// isolationRulePriority is the priority of the "iif <bridge> to <range>
// prohibit" rules added with Config.Isolate: before the main table (32766).
const isolationRulePriority = 2130

// linkByName returns the named link, or nil if there is none.
func linkByName(h *netlink.Handle, name string) (netlink.Link, error) {
	l, err := h.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up link %s: %w", name, err)
	}
	return l, nil
}

// deleteLink deletes the named link if it exists.
func deleteLink(h *netlink.Handle, name string) error {
	l, err := linkByName(h, name)
	if err != nil || l == nil {
		return err
	}
	if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete link %s: %w", name, err)
	}
	return nil
}

// setUp brings a link up unless it already is.
func setUp(h *netlink.Handle, l netlink.Link) error {
	if l.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", l.Attrs().Name, err)
	}
	return nil
}

// ensureBridge makes sure the bridge serving subnet exists, owns the
// gateway address and is up, and returns it.
func ensureBridge(h *netlink.Handle, subnet netip.Prefix) (netlink.Link, error) {
	name, gw := bridgeName(subnet), gatewayOf(subnet)
	br, err := linkByName(h, name)
	if err != nil {
		return nil, err
	}
	if br == nil {
		la := netlink.NewLinkAttrs()
		la.Name = name
		la.HardwareAddr = macFor(gw)
		if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create bridge %s: %w", name, err)
		}
		if br, err = h.LinkByName(name); err != nil {
			return nil, fmt.Errorf("look up bridge %s: %w", name, err)
		}
	}
	if br.Type() != "bridge" {
		return nil, fmt.Errorf("%s exists but is a %s, not a bridge", name, br.Type())
	}
	if err := setAddress(h, br, netip.PrefixFrom(gw, subnetBits)); err != nil {
		return nil, err
	}
	return br, setUp(h, br)
}

// setAddress makes p the only IPv4 address of l.
func setAddress(h *netlink.Handle, l netlink.Link, p netip.Prefix) error {
	addrs, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return fmt.Errorf("list addresses of %s: %w", l.Attrs().Name, err)
	}
	for _, a := range addrs {
		if got, ok := netipPrefixOf(a.IPNet); ok && got != p {
			if err := h.AddrDel(l, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return fmt.Errorf("remove stray address %s from %s: %w", got, l.Attrs().Name, err)
			}
		}
	}
	if err := h.AddrReplace(l, &netlink.Addr{IPNet: ipNet(p.Addr(), p.Bits())}); err != nil {
		return fmt.Errorf("set address %s on %s: %w", p, l.Attrs().Name, err)
	}
	return nil
}

// netipPrefixOf converts an interface address (not masked) to a netip.Prefix.
func netipPrefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), bits), ok
}

// isolationRule is the rule that refuses to route packets arriving on bridge
// into rng.
func isolationRule(bridge string, rng netip.Prefix) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = netlink.FAMILY_V4
	r.Priority = isolationRulePriority
	r.IifName = bridge
	r.Type = unix.RTN_PROHIBIT // FR_ACT_PROHIBIT
	if rng.IsValid() {
		r.Dst = prefixNet(rng)
	}
	return r
}

// hasIsolationRule reports whether bridge has an isolation rule.
func hasIsolationRule(h *netlink.Handle, bridge string) (bool, error) {
	rules, err := h.RuleListFiltered(netlink.FAMILY_V4, nil, 0)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return false, fmt.Errorf("list rules: %w", err)
	}
	for _, r := range rules {
		if r.IifName == bridge && r.Priority == isolationRulePriority {
			return true, nil
		}
	}
	return false, nil
}

// ensureIsolationRule adds (want) or removes (!want) bridge's isolation rule.
func ensureIsolationRule(h *netlink.Handle, bridge string, rng netip.Prefix, want bool) error {
	has, err := hasIsolationRule(h, bridge)
	if err != nil {
		return err
	}
	switch {
	case want && !has:
		if err := h.RuleAdd(isolationRule(bridge, rng)); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add isolation rule for %s: %w", bridge, err)
		}
	case !want && has:
		return deleteIsolationRule(h, bridge)
	}
	return nil
}

// deleteIsolationRule removes every isolation rule of bridge, whatever range
// it was added for.
func deleteIsolationRule(h *netlink.Handle, bridge string) error {
	for range 16 { // a rule per attempt; more than one would be a leftover
		err := h.RuleDel(isolationRule(bridge, netip.Prefix{}))
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("delete isolation rule for %s: %w", bridge, err)
		}
	}
	return nil
}

// ensureVeth makes sure the veth pair hostName ⇄ eth0 (inside the namespace
// ns, reached through nsh) exists, that its host side is a port of bridge and
// up, and returns the eth0 link. A pair that is half there or whose ends are
// not each other's peers is deleted and created again.
func ensureVeth(h, nsh *netlink.Handle, ns netns.NsHandle, hostName string, bridge netlink.Link, mac net.HardwareAddr) (netlink.Link, error) {
	host, err := linkByName(h, hostName)
	if err != nil {
		return nil, err
	}
	eth0, err := linkByName(nsh, ifaceName)
	if err != nil {
		return nil, err
	}
	if !vethPeers(host, eth0) {
		if eth0, err = recreateVeth(h, nsh, ns, hostName, mac); err != nil {
			return nil, err
		}
		if host, err = h.LinkByName(hostName); err != nil {
			return nil, fmt.Errorf("look up %s: %w", hostName, err)
		}
	}
	if host.Attrs().MasterIndex != bridge.Attrs().Index {
		if err := h.LinkSetMasterByIndex(host, bridge.Attrs().Index); err != nil {
			return nil, fmt.Errorf("attach %s to %s: %w", hostName, bridge.Attrs().Name, err)
		}
	}
	return eth0, setUp(h, host)
}

// vethPeers reports whether host (host namespace) and eth0 (machine
// namespace) are the two ends of one veth pair.
func vethPeers(host, eth0 netlink.Link) bool {
	if host == nil || eth0 == nil || host.Type() != "veth" || eth0.Type() != "veth" {
		return false
	}
	return host.Attrs().ParentIndex == eth0.Attrs().Index && eth0.Attrs().ParentIndex == host.Attrs().Index
}

// recreateVeth deletes whatever is left of the pair and creates it again, the
// peer directly inside the machine namespace under its final name.
func recreateVeth(h, nsh *netlink.Handle, ns netns.NsHandle, hostName string, mac net.HardwareAddr) (netlink.Link, error) {
	if err := deleteLink(h, hostName); err != nil {
		return nil, err
	}
	if err := deleteLink(nsh, ifaceName); err != nil {
		return nil, err
	}
	la := netlink.NewLinkAttrs()
	la.Name = hostName
	veth := &netlink.Veth{
		LinkAttrs:        la,
		PeerName:         ifaceName,
		PeerHardwareAddr: mac,
		PeerNamespace:    netlink.NsFd(int(ns)),
		PeerTxQLen:       -1,
	}
	if err := h.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("create veth %s: %w", hostName, err)
	}
	eth0, err := nsh.LinkByName(ifaceName)
	if err != nil {
		return nil, fmt.Errorf("look up %s in netns: %w", ifaceName, err)
	}
	return eth0, nil
}

// configureMachine brings lo and eth0 up inside the machine namespace and
// (re)applies eth0's address and the default route via gw.
func configureMachine(nsh *netlink.Handle, eth0 netlink.Link, addr netip.Prefix, gw netip.Addr) error {
	lo, err := nsh.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("look up lo: %w", err)
	}
	if err := setUp(nsh, lo); err != nil {
		return err
	}
	if err := setUp(nsh, eth0); err != nil {
		return err
	}
	if err := setAddress(nsh, eth0, addr); err != nil {
		return err
	}
	route := &netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.IP(gw.AsSlice()), Scope: netlink.SCOPE_UNIVERSE}
	if err := nsh.RouteReplace(route); err != nil {
		return fmt.Errorf("set default route via %s: %w", gw, err)
	}
	return nil
}
