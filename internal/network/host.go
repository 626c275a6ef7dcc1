package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// dumpRetries bounds the retries of a netlink dump that the kernel reports as
// interrupted (the table changed while it was being read).
const dumpRetries = 5

// hostRoute is an IPv4 route of the host namespace that overlaps the range.
type hostRoute struct {
	Dst   netip.Prefix
	Dev   string
	Table int
}

func (r hostRoute) String() string {
	return fmt.Sprintf("%s dev %s table %d", r.Dst, r.Dev, r.Table)
}

// routesIn lists the host's IPv4 routes, in every table, whose destination
// overlaps rng. Default routes are left out: they overlap everything.
func routesIn(h *netlink.Handle, rng netip.Prefix) ([]hostRoute, error) {
	var routes []netlink.Route
	var err error
	for range dumpRetries {
		routes, err = h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	links, err := linkNames(h)
	if err != nil {
		return nil, err
	}
	var out []hostRoute
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		dst, ok := netipPrefix(r.Dst)
		if !ok || dst.Bits() == 0 || !dst.Overlaps(rng) {
			continue
		}
		out = append(out, hostRoute{Dst: dst, Dev: links[r.LinkIndex], Table: r.Table})
	}
	return out, nil
}

// linkNames maps interface indexes of the host namespace to names.
func linkNames(h *netlink.Handle) (map[int]string, error) {
	var links []netlink.Link
	var err error
	for range dumpRetries {
		links, err = h.LinkList()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	names := make(map[int]string, len(links))
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	return names, nil
}

// checkRangeFree fails if a host route overlaps rng, ignoring routes on our
// own bridges (left from an earlier run of the daemon).
func checkRangeFree(h *netlink.Handle, rng netip.Prefix) error {
	routes, err := routesIn(h, rng)
	if err != nil {
		return err
	}
	for _, r := range routes {
		if strings.HasPrefix(r.Dev, bridgePrefix) {
			continue
		}
		return fmt.Errorf("%w: range %s overlaps the host route %s; choose another Config.Range", ErrInvalid, rng, r)
	}
	return nil
}

// netipPrefix converts a netlink destination to a masked IPv4 prefix.
func netipPrefix(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	p, err := a.Unmap().Prefix(bits)
	return p, err == nil && p.Addr().Is4()
}

// ipForwarding reads net.ipv4.ip_forward of the namespace ns.
func ipForwarding(ns netns.NsHandle) (bool, error) {
	var v []byte
	err := inNetns(ns, func() error {
		var err error
		v, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		return err
	})
	if err != nil {
		return false, fmt.Errorf("read ip_forward: %w", err)
	}
	return strings.TrimSpace(string(v)) == "1", nil
}
