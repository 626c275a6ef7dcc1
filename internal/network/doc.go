// Package network gives every machine its own Linux network namespace, wired
// to a per-app bridge with a veth pair and an IPv4 address from a private
// range. Everything is done with netlink (vishvananda/netlink, netns); nothing
// shells out to ip(8).
//
// # Layout
//
// Config.Range (default 10.213.0.0/16) is carved into /24 subnets, one per
// app. The app's bridge owns the subnet's first address (the machines'
// gateway); machines get .2 to .254. For the subnet 10.213.7.0/24:
//
//	host netns                                    machine netns "torpor-<id>"
//	tpb-0ad507 (bridge, 10.213.7.1/24) ── tpv-<hash> ═══ veth ═══ eth0 10.213.7.2/24
//	                                                              lo, default via 10.213.7.1
//
// Names are deterministic and at most 15 bytes (IFNAMSIZ-1):
//   - bridge "tpb-" + hex of the subnet's first three octets (unique per host
//     as long as ranges do not overlap, and derivable from the persisted
//     allocation);
//   - host-side veth "tpv-" + 10 hex digits of SHA-256(machine ID), so Detach
//     can clean up a machine even when the state file does not know it;
//   - namespace "torpor-" + machine ID, bind-mounted at NetnsDir/<name> the way
//     `ip netns add` does it (NetnsDir is made a shared mount point);
//   - MAC addresses are derived from the IPv4 address (0a:74:a:b:c:d) so that
//     a repaired or restored machine keeps its link-layer identity.
//
// Machines of one app share a bridge and reach each other at layer 2. Apps are
// on different bridges and subnets; packets between them would have to be
// routed by the host, which this package never enables (it does not touch
// net.ipv4.ip_forward). If the host forwards anyway, New logs a warning, and
// Config.Isolate adds, per bridge, a policy-routing rule
// "iif <bridge> to <Range> prohibit" (priority 2130) so that forwarded traffic
// from a machine bridge into the range is refused. Config.Firewall adds, per
// bridge, an nftables table "torpor-<bridge>" (family inet) that drops every
// packet a machine sends to the host itself (gateway or any other host
// address) except replies to connections the host opened, and everything the
// host would forward out of the bridge to another interface (firewall.go).
//
// # Allocation and persistence
//
// Allocations (app → subnet, machine → app and address) are kept in
// StateDir/network.json, rewritten atomically (temporary file, fsync, rename,
// fsync of the directory) before any kernel object is created, so that a
// daemon restart never hands an address out twice. An flock on
// StateDir/network.lock keeps two managers from sharing a state directory.
// New refuses a Range that overlaps a route of the host (except routes on
// tpb- bridges, which are ours), and new subnets skip any /24 that a route
// already covers (e.g. a bridge left behind by a lost state file). Freed
// addresses and subnets are reused, lowest first.
//
// # Repair
//
// Attach is idempotent and is meant to be called before every sandbox create
// or restore: it re-creates whatever is missing (bridge, its address, the
// namespace after a reboot, the veth pair, a veth whose peer is not the
// namespace's eth0) and always re-applies eth0's address and default route,
// which runsc --network=sandbox removes from the namespace when it takes the
// interface over.
//
// # Namespaces and threads
//
// Bridges and host-side veths live in the daemon's namespace, or in
// Config.HostNetns if set (the tests use a throw-away namespace there, so they
// can turn IP forwarding on and cannot leave interfaces on the real host).
// Work inside a machine's namespace goes through netlink handles opened in
// that namespace (netlink.NewHandleAt). The only code that switches a thread's
// namespace (creating a namespace, reading a sysctl of the host namespace)
// runs on a dedicated goroutine locked to its OS thread, which restores the
// original namespace afterwards; if it cannot, the thread is left locked so
// that the Go runtime discards it.
package network
