package network

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"regexp"
)

const (
	bridgePrefix = "tpb-"    // host bridges, one per app
	vethPrefix   = "tpv-"    // host side of a machine's veth pair
	netnsPrefix  = "torpor-" // named network namespaces, one per machine
	ifaceName    = "eth0"    // the machine side of the veth pair, inside its namespace
	subnetBits   = 24        // every app gets a /24
)

// machineIDPattern restricts machine IDs to what is safe in a file name.
var machineIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// validMachineID reports an error if id cannot name a namespace file.
func validMachineID(id string) error {
	if !machineIDPattern.MatchString(id) {
		return fmt.Errorf("%w: machine ID %q (want 1-64 of [A-Za-z0-9_.-], not starting with . _ or -)", ErrInvalid, id)
	}
	return nil
}

// validApp reports an error if app is not a usable app name.
func validApp(app string) error {
	if app == "" || len(app) > 255 {
		return fmt.Errorf("%w: app name %q", ErrInvalid, app)
	}
	return nil
}

// bridgeName is the name of the bridge serving subnet, e.g. "tpb-0ad507"
// for 10.213.7.0/24.
func bridgeName(subnet netip.Prefix) string {
	a := subnet.Addr().As4()
	return fmt.Sprintf("%s%02x%02x%02x", bridgePrefix, a[0], a[1], a[2])
}

// vethName is the name of the host side of a machine's veth pair, for the
// daemon instance (see Config.Instance; "" for the names of a single daemon).
func vethName(instance, machineID string) string {
	key := machineID
	if instance != "" {
		key = instance + "/" + machineID
	}
	sum := sha256.Sum256([]byte(key))
	return vethPrefix + hex.EncodeToString(sum[:5])
}

// netnsName is the name of a machine's network namespace, for the daemon
// instance (see vethName).
func netnsName(instance, machineID string) string {
	if instance != "" {
		return netnsPrefix + instance + "-" + machineID
	}
	return netnsPrefix + machineID
}

// macFor derives a locally administered unicast MAC address from an IPv4
// address, so that an interface re-created by a repair keeps its address.
func macFor(ip netip.Addr) net.HardwareAddr {
	a := ip.As4()
	return net.HardwareAddr{0x0a, 0x74, a[0], a[1], a[2], a[3]}
}

// gatewayOf is the first usable address of subnet, owned by the app's bridge.
func gatewayOf(subnet netip.Prefix) netip.Addr {
	return subnet.Masked().Addr().Next()
}

// ipNet converts an address and prefix length to the form netlink wants.
func ipNet(ip netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: net.IP(ip.AsSlice()), Mask: net.CIDRMask(bits, 32)}
}

// prefixNet converts a prefix (masked) to the form netlink wants.
func prefixNet(p netip.Prefix) *net.IPNet {
	return ipNet(p.Masked().Addr(), p.Bits())
}
