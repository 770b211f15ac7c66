package policy

import (
	"cmp"
	"net/netip"
	"slices"
	"sort"
)

// Owners is what IPAM says each of our nodes may originate: the blocks
// whose affinity is the node, and the addresses its pods hold in other
// nodes' blocks (borrowed addresses, advertised as host routes). The import
// policy judges a path from one of our nodes against it, so that a node can
// take over no other node's pods (docs/design/0014).
//
// It is immutable once built and safe for concurrent use. Lookups cost one
// binary search over the blocks of the prefix's family and one map lookup:
// the receive path judges every path with it.
type Owners struct {
	// blocks per family (0: IPv4, 1: IPv6), sorted by address, disjoint.
	blocks [2][]ownedBlock
	// hosts maps a borrowed address to the node whose pod holds it.
	hosts map[netip.Addr]string
}

type ownedBlock struct {
	prefix netip.Prefix
	node   string // "" for a block no node owns
}

// OwnedBlock is one IPAMBlock as the policy needs it.
type OwnedBlock struct {
	CIDR netip.Prefix
	// Node is the block's affinity; empty for a block no node owns (its
	// route is then nobody's to announce).
	Node string
}

// NewOwners indexes blocks and borrowed addresses (address → the node of
// the pod holding it, for addresses allocated to a node other than their
// block's). Blocks must not overlap, as the IPAM's view guarantees; of
// blocks that do, only the first in address order is kept, so that a
// lookup can never find two owners.
func NewOwners(blocks []OwnedBlock, borrowed map[netip.Addr]string) *Owners {
	o := &Owners{hosts: make(map[netip.Addr]string, len(borrowed))}
	for _, b := range blocks {
		if !b.CIDR.IsValid() || b.CIDR != b.CIDR.Masked() || b.CIDR.Addr().Is4In6() {
			continue
		}
		f := family(b.CIDR.Addr())
		o.blocks[f] = append(o.blocks[f], ownedBlock{prefix: b.CIDR, node: b.Node})
	}
	for f := range o.blocks {
		l := o.blocks[f]
		slices.SortFunc(l, func(a, b ownedBlock) int {
			return cmp.Or(a.prefix.Addr().Compare(b.prefix.Addr()), a.prefix.Bits()-b.prefix.Bits())
		})
		out := l[:0]
		for _, b := range l {
			if n := len(out); n > 0 && out[n-1].prefix.Overlaps(b.prefix) {
				continue
			}
			out = append(out, b)
		}
		o.blocks[f] = slices.Clip(out)
	}
	for a, n := range borrowed {
		if a.IsValid() && n != "" {
			o.hosts[a.Unmap()] = n
		}
	}
	return o
}

func family(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

// relation is how a prefix stands to the blocks.
type relation uint8

const (
	// noBlock: no block overlaps the prefix.
	noBlock relation = iota
	// isBlock: the prefix is a block.
	isBlock
	// inBlock: the prefix lies inside a block (and is not the block).
	inBlock
	// coversBlocks: the prefix holds one or more blocks.
	coversBlocks
)

// lookup finds the block a prefix is, or lies in, or that it covers.
func (o *Owners) lookup(p netip.Prefix) (ownedBlock, relation) {
	if o == nil {
		return ownedBlock{}, noBlock
	}
	l := o.blocks[family(p.Addr())]
	start := p.Addr()
	// l[:i] start at or before p.
	i := sort.Search(len(l), func(i int) bool { return l[i].prefix.Addr().Compare(start) > 0 })
	if i > 0 {
		b := l[i-1]
		if b.prefix.Contains(start) {
			switch {
			case b.prefix.Bits() == p.Bits():
				return b, isBlock
			case b.prefix.Bits() < p.Bits():
				return b, inBlock
			}
			// A longer block starting where p starts: p covers it.
			return b, coversBlocks
		}
	}
	if i < len(l) && p.Contains(l[i].prefix.Addr()) {
		return l[i], coversBlocks
	}
	return ownedBlock{}, noBlock
}

// borrower returns the node whose pod holds a borrowed address.
func (o *Owners) borrower(a netip.Addr) (string, bool) {
	if o == nil {
		return "", false
	}
	n, ok := o.hosts[a]
	return n, ok
}

// Changed returns the prefixes whose originator differs between o and n:
// blocks added, removed or given to another node, and borrowed addresses
// (as host routes) added, removed or moved. Only for these prefixes can a
// path's acceptance change when only the owners change; the reasons of
// prefixes around them (a more specific of a block, a range covering it)
// may change too, but such paths are rejected either way.
func (o *Owners) Changed(n *Owners) []netip.Prefix {
	if o == n {
		return nil // the agent keeps one index per IPAM snapshot generation
	}
	var out []netip.Prefix
	for f := range 2 {
		var a, b []ownedBlock
		if o != nil {
			a = o.blocks[f]
		}
		if n != nil {
			b = n.blocks[f]
		}
		i, j := 0, 0
		for i < len(a) || j < len(b) {
			switch {
			case j == len(b) || (i < len(a) && comparePrefix(a[i].prefix, b[j].prefix) < 0):
				out = append(out, a[i].prefix)
				i++
			case i == len(a) || comparePrefix(a[i].prefix, b[j].prefix) > 0:
				out = append(out, b[j].prefix)
				j++
			default:
				if a[i].node != b[j].node {
					out = append(out, a[i].prefix)
				}
				i++
				j++
			}
		}
	}
	var oh, nh map[netip.Addr]string
	if o != nil {
		oh = o.hosts
	}
	if n != nil {
		nh = n.hosts
	}
	for a, node := range oh {
		if m, ok := nh[a]; !ok || m != node {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	for a := range nh {
		if _, ok := oh[a]; !ok {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out)
}

func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), a.Bits()-b.Bits())
}

// Nodes is what the policy knows of each of our nodes: its addresses (the
// only next hops its routes may carry) and its BGP router ID (what a route
// reflector puts in ORIGINATOR_ID). Immutable once built.
type Nodes struct {
	addrs     map[netip.Addr]string
	routerIDs map[netip.Addr]string
}

// NodeInfo is one node for NewNodes.
type NodeInfo struct {
	Name      string
	Addresses []netip.Addr
	RouterID  netip.Addr
}

// ambiguous marks an address or router ID claimed by two nodes: nothing
// is judged to come from either through it.
const ambiguous = "\x00ambiguous"

// NewNodes indexes the nodes' addresses and router IDs. An address or
// router ID that two nodes claim belongs to neither.
func NewNodes(nodes []NodeInfo) *Nodes {
	t := &Nodes{addrs: make(map[netip.Addr]string, 2*len(nodes)), routerIDs: make(map[netip.Addr]string, len(nodes))}
	put := func(m map[netip.Addr]string, a netip.Addr, name string) {
		if !a.IsValid() {
			return
		}
		a = a.Unmap()
		if old, ok := m[a]; ok && old != name {
			m[a] = ambiguous
			return
		}
		m[a] = name
	}
	for _, n := range nodes {
		for _, a := range n.Addresses {
			put(t.addrs, a, n.Name)
		}
		put(t.routerIDs, n.RouterID, n.Name)
	}
	return t
}

// ByRouterID returns the node with this router ID.
func (t *Nodes) ByRouterID(id netip.Addr) (string, bool) {
	if t == nil {
		return "", false
	}
	n, ok := t.routerIDs[id]
	return n, ok && n != ambiguous
}

// ByAddress returns the node with this address.
func (t *Nodes) ByAddress(a netip.Addr) (string, bool) {
	if t == nil {
		return "", false
	}
	n, ok := t.addrs[a]
	return n, ok && n != ambiguous
}

// Equal reports whether two tables hold the same nodes.
func (t *Nodes) Equal(u *Nodes) bool {
	if t == nil || u == nil {
		return t == u
	}
	return mapsEqual(t.addrs, u.addrs) && mapsEqual(t.routerIDs, u.routerIDs)
}

func mapsEqual(a, b map[netip.Addr]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// EachBlock calls fn with every block's prefix, IPv4 first, each family in
// address order.
func (o *Owners) EachBlock(fn func(netip.Prefix)) {
	if o == nil {
		return
	}
	for _, l := range o.blocks {
		for _, b := range l {
			fn(b.prefix)
		}
	}
}
