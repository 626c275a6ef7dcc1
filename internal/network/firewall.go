package network

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
)

// Each app bridge gets its own nftables table, family inet (IPv4 and IPv6),
// named after the bridge ("torpor-tpb-0ad507"). Bridge names are unique per
// host as long as ranges do not overlap (New checks), so two daemons with
// different ranges never touch each other's tables, and no other table is
// ever read, flushed or deleted. The table holds two base chains:
//
//	input   (hook input, priority filter, policy accept)
//	        iifname "tpb-…" ct state established,related accept
//	        iifname "tpb-…" drop
//	forward (hook forward, priority filter, policy accept)
//	        iifname "tpb-…" oifname != "tpb-…" drop
//
// So a machine cannot open a connection to any address of the host (its
// gateway, the host's other interfaces, link-local IPv6) whatever the
// service binds to, while replies to connections the host opened (the proxy,
// health checks) come back. Nothing from a bridge is routed anywhere; only
// bridged traffic between machines of the same app passes (with br_netfilter
// it reaches the forward hook with the bridge as both interfaces). Machines
// need nothing from the host over IP: their resolv.conf points at their own
// loopback and the in-machine API is a Unix socket.
//
// An accept in our chains only ends our chains: other tables' chains on the
// same hooks still see the packet, so these rules never weaken another
// firewall on the host.
const firewallTablePrefix = "torpor-"

// Chain names of a bridge's firewall table.
const (
	inputChain   = "input"
	forwardChain = "forward"
)

// firewallTable is the nftables table of bridge.
func firewallTable(bridge string) *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: firewallTablePrefix + bridge}
}

// firewallRules are the expected rule counts per chain, to recognise an
// intact table.
var firewallRules = map[string]int{inputChain: 2, forwardChain: 1}

// ensureFirewall installs bridge's firewall table (want) or removes it
// (!want). An intact table is left alone; a missing or altered one is
// replaced in one atomic transaction, so the bridge is never unprotected
// while it is being repaired.
func ensureFirewall(c *nftables.Conn, bridge string, want bool) error {
	if !want {
		return deleteFirewall(c, bridge)
	}
	intact, err := firewallIntact(c, bridge)
	if err != nil || intact {
		return err
	}
	t := firewallTable(bridge)
	c.AddTable(t) // so that the delete below cannot fail: the pair empties it
	c.DelTable(t)
	c.AddTable(t)
	accept := nftables.ChainPolicyAccept
	in := c.AddChain(&nftables.Chain{Name: inputChain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	fwd := c.AddChain(&nftables.Chain{Name: forwardChain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: concat(
		matchIface(expr.MetaKeyIIFNAME, bridge, expr.CmpOpEq),
		replyOnly(),
		verdict(expr.VerdictAccept))})
	c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: concat(
		matchIface(expr.MetaKeyIIFNAME, bridge, expr.CmpOpEq),
		verdict(expr.VerdictDrop))})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: concat(
		matchIface(expr.MetaKeyIIFNAME, bridge, expr.CmpOpEq),
		matchIface(expr.MetaKeyOIFNAME, bridge, expr.CmpOpNeq),
		verdict(expr.VerdictDrop))})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install firewall table %s: %w", t.Name, err)
	}
	return nil
}

// firewallIntact reports whether bridge's table exists with its chains and
// their rules.
func firewallIntact(c *nftables.Conn, bridge string) (bool, error) {
	t, found, err := findFirewall(c, bridge)
	if err != nil || !found {
		return false, err
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("list nftables chains: %w", err)
	}
	seen := 0
	for _, ch := range chains {
		want, ok := firewallRules[ch.Name]
		if ch.Table.Name != t.Name || !ok {
			continue
		}
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return false, fmt.Errorf("list rules of %s/%s: %w", t.Name, ch.Name, err)
		}
		if len(rules) != want {
			return false, nil
		}
		seen++
	}
	return seen == len(firewallRules), nil
}

// findFirewall looks bridge's table up.
func findFirewall(c *nftables.Conn, bridge string) (*nftables.Table, bool, error) {
	want := firewallTable(bridge)
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, false, fmt.Errorf("list nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == want.Name {
			return t, true, nil
		}
	}
	return want, false, nil
}

// deleteFirewall removes bridge's table, if any.
func deleteFirewall(c *nftables.Conn, bridge string) error {
	t, found, err := findFirewall(c, bridge)
	if err != nil || !found {
		return err
	}
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete firewall table %s: %w", t.Name, err)
	}
	return nil
}

// matchIface compares the input or output interface name with name.
func matchIface(key expr.MetaKey, name string, op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: ifname(name)},
	}
}

// replyOnly matches packets of connections in state established or related.
func replyOnly() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

func verdict(kind expr.VerdictKind) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: kind}}
}

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// ifname is an interface name as the kernel compares it: NUL-padded to
// IFNAMSIZ bytes.
func ifname(name string) []byte {
	b := make([]byte, 16)
	copy(b, name)
	return b
}
