package routes

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/rhizome-net/rhizome/routes/datapath"
)

// The table's layout:
//
//	chain postrouting { type nat hook postrouting priority srcnat;
//	    ip saddr <nat pool> jump masq4          (one rule per natOutgoing pool)
//	    ip6 saddr <nat pool> jump masq6 }
//	chain masq4 { ip daddr <pool> return        (one rule per pool)
//	    masquerade }
//	chain masq6 { ... }
//
// Every rule carries a user-data tag describing it ("rhizome:from:CIDR",
// "rhizome:pool:CIDR", "rhizome:masq"). A sync compares the tags of what is
// in the kernel with the desired ones and, on any difference (or a missing
// table), rebuilds the table in one atomic nftables transaction, so
// masquerading never lapses.

type natRule struct {
	tag   string
	exprs []expr.Any
}

type natChain struct {
	name  string
	base  bool
	rules []natRule
}

// natLayout computes the desired chains.
func natLayout(spec NATSpec) []natChain {
	post := natChain{name: "postrouting", base: true}
	m4, m6 := natChain{name: "masq4"}, natChain{name: "masq6"}
	for _, p := range spec.Masquerade {
		chain := "masq4"
		if p.Addr().Is6() {
			chain = "masq6"
		}
		post.rules = append(post.rules, natRule{tag: "rhizome:from:" + p.String(),
			exprs: append(matchAddr(p, true), &expr.Verdict{Kind: expr.VerdictJump, Chain: chain})})
	}
	for _, p := range spec.Pools {
		r := natRule{tag: "rhizome:pool:" + p.String(), exprs: append(matchAddr(p, false), &expr.Verdict{Kind: expr.VerdictReturn})}
		if p.Addr().Is4() {
			m4.rules = append(m4.rules, r)
		} else {
			m6.rules = append(m6.rules, r)
		}
	}
	masq := natRule{tag: "rhizome:masq", exprs: []expr.Any{&expr.Masq{}}}
	m4.rules = append(m4.rules, masq)
	m6.rules = append(m6.rules, masq)
	return []natChain{post, m4, m6}
}

// matchAddr matches the source (src) or destination address against p,
// after checking the packet's family (the table is inet).
func matchAddr(p netip.Prefix, src bool) []expr.Any {
	proto, off, l := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4)
	if src {
		off = 12
	}
	if p.Addr().Is6() {
		proto, off, l = unix.NFPROTO_IPV6, 24, 16
		if src {
			off = 8
		}
	}
	mask := net.CIDRMask(p.Bits(), p.Addr().BitLen())
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: l},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: l, Mask: mask, Xor: make([]byte, l)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}

// signature is the comparable form of a layout: chain name -> rule tags.
func signature(chains []natChain) map[string][]string {
	s := map[string][]string{}
	for _, c := range chains {
		tags := []string{}
		for _, r := range c.rules {
			tags = append(tags, r.tag)
		}
		s[c.name] = tags
	}
	return s
}

// nftablesNAT implements NAT with github.com/google/nftables.
type nftablesNAT struct {
	ns   netns.NsHandle // -1 for the current namespace
	conn *nftables.Conn
}

func newNFTablesNAT(nsPath string) (*nftablesNAT, error) {
	n := &nftablesNAT{ns: netns.None()}
	var opts []nftables.ConnOption
	if nsPath != "" {
		h, err := netns.GetFromPath(nsPath)
		if err != nil {
			return nil, fmt.Errorf("opening network namespace %s: %w", nsPath, err)
		}
		n.ns = h
		opts = append(opts, nftables.WithNetNSFd(int(h)))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		n.close()
		return nil, fmt.Errorf("nftables: %w", err)
	}
	n.conn = c
	return n, nil
}

func (n *nftablesNAT) close() error {
	if n.ns.IsOpen() {
		return n.ns.Close()
	}
	return nil
}

// current reads the signature of our table; nil if the table is absent.
func (n *nftablesNAT) current() (map[string][]string, error) {
	tables, err := n.conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("listing nftables tables: %w", err)
	}
	var t *nftables.Table
	for _, tb := range tables {
		if tb.Name == datapath.NATTable {
			t = tb
		}
	}
	if t == nil {
		return nil, nil
	}
	chains, err := n.conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("listing chains of %s: %w", datapath.NATTable, err)
	}
	sig := map[string][]string{}
	for _, c := range chains {
		if c.Table.Name != datapath.NATTable {
			continue
		}
		if c.Name == "postrouting" && (c.Hooknum == nil || *c.Hooknum != *nftables.ChainHookPostrouting ||
			c.Type != nftables.ChainTypeNAT || c.Priority == nil || *c.Priority != *nftables.ChainPriorityNATSource) {
			sig[c.Name] = []string{"<wrong hook>"}
			continue
		}
		rules, err := n.conn.GetRules(t, c)
		if err != nil {
			return nil, fmt.Errorf("listing rules of %s/%s: %w", datapath.NATTable, c.Name, err)
		}
		tags := []string{}
		for _, r := range rules {
			tags = append(tags, string(r.UserData))
		}
		sig[c.Name] = tags
	}
	return sig, nil
}

// Sync implements NAT.
func (n *nftablesNAT) Sync(spec NATSpec) error {
	cur, err := n.current()
	if err != nil {
		return err
	}
	empty := len(spec.Masquerade) == 0
	if empty && cur == nil {
		return nil
	}
	layout := natLayout(spec)
	if !empty && cur != nil && sameSignature(cur, signature(layout)) {
		return nil
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: datapath.NATTable}
	if cur != nil {
		n.conn.DelTable(t)
	}
	if !empty {
		n.conn.AddTable(t)
		for _, c := range layout {
			ch := &nftables.Chain{Name: c.name, Table: t}
			if c.base {
				ch.Type, ch.Hooknum, ch.Priority = nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource
			}
			n.conn.AddChain(ch)
		}
		for _, c := range layout {
			ch := &nftables.Chain{Name: c.name, Table: t}
			for _, r := range c.rules {
				n.conn.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r.exprs, UserData: []byte(r.tag)})
			}
		}
	}
	if err := n.conn.Flush(); err != nil {
		return fmt.Errorf("writing nftables table %s (masquerade %s): %w", datapath.NATTable, prefixList(spec.Masquerade), err)
	}
	return nil
}

func sameSignature(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

func prefixList(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
