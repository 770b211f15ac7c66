package policy

import (
	"net/netip"
	"slices"
)

// Pool is what the receive path needs to know about an IP pool.
type Pool struct {
	Name string
	CIDR netip.Prefix
	// DisableBGPExport pools are not advertised; routes inside them are
	// still accepted if a peer sends them.
	DisableBGPExport bool
	// BlockBits is the prefix length of the pool's blocks (0: unknown).
	BlockBits int
}

// Reason says why a prefix was accepted or rejected.
type Reason uint8

// Reasons, also the values of the rejected-prefix metric's reason label.
const (
	Accepted Reason = iota
	RejectedOwnBlock
	RejectedOwnAddress
	RejectedNotInPool
	RejectedByFilter
	RejectedNoFilterMatch
	RejectedUnknownPeer
	// RejectedNextHopSelf: the path's next hop is one of our own
	// addresses.
	RejectedNextHopSelf
	// From our own nodes (Owners):
	// RejectedHeld: inside a pool, and no IPAMBlock justifies it yet (a
	// block's route can arrive before the block reaches this node's
	// cache). The path is kept and judged again on every IPAM change.
	RejectedHeld
	// RejectedNotOwner: IPAM gives the prefix to another node: another
	// node's block, or an address in another node's block that no pod of
	// the announcing node holds.
	RejectedNotOwner
	// RejectedNotOriginated: a prefix no node ever announces: a more
	// specific of a block or of a Service range, a range covering blocks.
	RejectedNotOriginated
	// RejectedNextHop: the next hop is not an address of the node the
	// path comes from.
	RejectedNextHop
	// RejectedUnknownOriginator: reflected with an ORIGINATOR_ID that is
	// no node's router ID (or two nodes'), or from a session whose node is
	// unknown.
	RejectedUnknownOriginator
	numReasons
)

// NumReasons is the number of Reason values, for arrays indexed by Reason.
const NumReasons = int(numReasons)

var reasonNames = [...]string{"accepted", "own-block", "own-address", "not-in-pool", "filter", "no-filter-match", "unknown-peer", "next-hop-self",
	"held", "not-owner", "not-originated", "next-hop", "unknown-originator"}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "unknown"
}

// PeerPolicy is how one session's routes are judged.
type PeerPolicy struct {
	// Internal sessions are to our own nodes (mesh, route reflectors).
	Internal bool
	// Node is the peer's node, for internal sessions: what it sends is
	// judged against what IPAM lets that node originate.
	Node string
	// Reflector: the peer is a route reflector of ours, which passes on
	// other nodes' routes. Each path is then judged against the node whose
	// router ID its ORIGINATOR_ID is (the reflector's own routes carry
	// none). From any other node, ORIGINATOR_ID is ignored: everything it
	// sends is judged as its own.
	Reflector bool
	// Rules are the session's import filters.
	Rules []Rule
}

// Input is everything the import policy depends on.
type Input struct {
	Pools []Pool
	// Services are the Service ranges this node advertises; from internal
	// sessions exactly these prefixes are accepted (every node announces
	// them).
	Services []netip.Prefix
	// Owners and Nodes say what each of our nodes may originate and with
	// which next hops. Nil Owners: nothing from our nodes is justified yet
	// (held); nil Nodes: no node is known.
	Owners *Owners
	Nodes  *Nodes
	// OwnBlocks are this node's affine blocks; OwnAddresses its own
	// addresses (node IPs, router ID).
	OwnBlocks    []netip.Prefix
	OwnAddresses []netip.Addr
	Peers        map[netip.Addr]PeerPolicy
}

// Import is a compiled import policy. It is immutable and safe for
// concurrent use.
type Import struct {
	in Input
}

// Compile builds the policy. Input slices must not change afterwards.
func Compile(in Input) *Import { return &Import{in: in} }

// Verdict is the outcome for one prefix.
type Verdict struct {
	Reason Reason
	// Pool is the index in Pools of the pool holding the prefix, or -1.
	Pool int
}

// Accepted reports whether the prefix is accepted.
func (v Verdict) Accepted() bool { return v.Reason == Accepted }

// Pools returns the pools Verdict.Pool indexes.
func (im *Import) Pools() []Pool { return im.in.Pools }

// Input returns the policy's input (read-only).
func (im *Import) Input() Input { return im.in }

// IsOwnAddress reports whether a is one of this node's addresses.
func (im *Import) IsOwnAddress(a netip.Addr) bool {
	for _, o := range im.in.OwnAddresses {
		if o == a {
			return true
		}
	}
	return false
}

// Peer returns the policy of one session; ok is false for a peer the
// policy does not know, whose routes are all rejected.
func (im *Import) Peer(addr netip.Addr) (PeerPolicy, bool) {
	p, ok := im.in.Peers[addr]
	return p, ok
}

// Evaluate judges one path from a peer.
func (im *Import) Evaluate(peer netip.Addr, p netip.Prefix, nextHop, originator netip.Addr) Verdict {
	pp, ok := im.in.Peers[peer]
	return im.EvaluatePath(pp, ok, p, nextHop, originator)
}

// EvaluatePath judges one path given the peer's policy (known=false for an
// unknown peer), so that a batch from one peer looks the peer up once.
// originator is the path's ORIGINATOR_ID (invalid when it has none).
func (im *Import) EvaluatePath(pp PeerPolicy, known bool, p netip.Prefix, nextHop, originator netip.Addr) Verdict {
	v := Verdict{Pool: im.poolOf(p)}
	if r := im.guard(pp.Internal, p); r != Accepted {
		v.Reason = r
		return v
	}
	if !known {
		v.Reason = RejectedUnknownPeer
		return v
	}
	act := First(pp.Rules, p)
	if pp.Internal {
		if act == Reject {
			v.Reason = RejectedByFilter
			return v
		}
		v.Reason = im.fromNode(pp, p, nextHop, originator, v.Pool)
		return v
	}
	switch act {
	case Accept:
		if im.IsOwnAddress(nextHop) {
			v.Reason = RejectedNextHopSelf
		}
	case Reject:
		v.Reason = RejectedByFilter
	default:
		v.Reason = RejectedNoFilterMatch
	}
	return v
}

// fromNode judges a path from one of our nodes: the prefix must be one the
// originating node may announce, and the next hop that node's address.
func (im *Import) fromNode(pp PeerPolicy, p netip.Prefix, nextHop, originator netip.Addr, pool int) Reason {
	origin := pp.Node
	if pp.Reflector && originator.IsValid() {
		n, ok := im.in.Nodes.ByRouterID(originator)
		if !ok {
			return RejectedUnknownOriginator
		}
		origin = n
	}
	if origin == "" {
		return RejectedUnknownOriginator
	}
	if r := im.originates(origin, p, pool); r != Accepted {
		return r
	}
	if im.IsOwnAddress(nextHop) {
		return RejectedNextHopSelf
	}
	if n, ok := im.in.Nodes.ByAddress(nextHop); !ok || n != origin {
		return RejectedNextHop
	}
	return Accepted
}

// originates reports whether IPAM lets node originate p: one of its
// blocks, an address its pod borrowed from another node's block (as a
// host route), or exactly a Service range.
func (im *Import) originates(node string, p netip.Prefix, pool int) Reason {
	if slices.Contains(im.in.Services, p) {
		return Accepted
	}
	if pool < 0 {
		if im.inService(p) {
			return RejectedNotOriginated
		}
		return RejectedNotInPool
	}
	host := isHost(p)
	b, rel := im.in.Owners.lookup(p)
	switch rel {
	case isBlock, inBlock:
		if rel == isBlock && b.node != "" && b.node == node {
			return Accepted
		}
		if !host {
			if rel == inBlock {
				return RejectedNotOriginated
			}
			return RejectedNotOwner
		}
		if n, ok := im.in.Owners.borrower(p.Addr()); ok {
			if n == node {
				return Accepted
			}
			return RejectedNotOwner
		}
		if rel == inBlock && b.node == node {
			// A host route of its own block, which it never announces.
			return RejectedNotOriginated
		}
		// Another node's block, and no pod of this node holds the
		// address (or not yet: a borrow the cache has not seen).
		return RejectedNotOwner
	case coversBlocks:
		return RejectedNotOriginated
	}
	if bits := im.in.Pools[pool].BlockBits; host || bits == 0 || p.Bits() == bits {
		return RejectedHeld
	}
	return RejectedNotOriginated
}

func isDefault(p netip.Prefix) bool { return p.Bits() == 0 }

func isHost(p netip.Prefix) bool { return p.Bits() == p.Addr().BitLen() }

func (im *Import) guard(internal bool, p netip.Prefix) Reason {
	for _, b := range im.in.OwnBlocks {
		if b.Addr().Is4() != p.Addr().Is4() {
			continue
		}
		switch {
		case p == b:
			return RejectedOwnBlock
		case Within(p, b):
			// Another node's pod may hold an address of our block (a
			// borrowed address); that node advertises it as a host route.
			if !(internal && isHost(p)) {
				return RejectedOwnBlock
			}
		case Within(b, p) && !isDefault(p):
			return RejectedOwnBlock
		}
	}
	for _, a := range im.in.OwnAddresses {
		if a.Is4() == p.Addr().Is4() && p.Contains(a) && !isDefault(p) {
			return RejectedOwnAddress
		}
	}
	return Accepted
}

func (im *Import) poolOf(p netip.Prefix) int {
	best := -1
	for i, pool := range im.in.Pools {
		if Within(p, pool.CIDR) && (best < 0 || pool.CIDR.Bits() > im.in.Pools[best].CIDR.Bits()) {
			best = i
		}
	}
	return best
}

func (im *Import) inService(p netip.Prefix) bool {
	for _, s := range im.in.Services {
		if Within(p, s) {
			return true
		}
	}
	return false
}

// SameBesidesOwners reports whether two policies judge every path alike
// as long as their Owners agree: everything but the Owners is equal. A
// caller that holds the old policy then only needs Owners.Changed to know
// which prefixes to judge again.
func (im *Import) SameBesidesOwners(o *Import) bool {
	if im == nil || o == nil {
		return im == o
	}
	a, b := &im.in, &o.in
	if !slices.Equal(a.Pools, b.Pools) || !slices.Equal(a.Services, b.Services) ||
		!slices.Equal(a.OwnBlocks, b.OwnBlocks) || !slices.Equal(a.OwnAddresses, b.OwnAddresses) ||
		!a.Nodes.Equal(b.Nodes) || len(a.Peers) != len(b.Peers) {
		return false
	}
	for k, p := range a.Peers {
		q, ok := b.Peers[k]
		if !ok || p.Internal != q.Internal || p.Node != q.Node || p.Reflector != q.Reflector || !slices.Equal(p.Rules, q.Rules) {
			return false
		}
	}
	return true
}

// WithOwners returns the policy with other Owners and everything else the
// same (the inputs are shared, being immutable). It lets an IPAM change
// reach the receive path on its own, ahead of a full recompute of the
// policy: what the owners change is exactly what IPAM says, and the rest
// of the policy is the one in force (docs/design/0014).
func (im *Import) WithOwners(o *Owners) *Import {
	in := im.in
	in.Owners = o
	return &Import{in: in}
}

// Check returns the policy as the speaker's import check (bgp.ImportCheck):
// a path from one of our nodes enters the speaker's table, and may be
// passed on by route reflection, only if the policy accepts it. Paths of
// external peers pass (the speaker never passes them on; the RIB judges
// what reaches the kernel); paths of unknown peers do not.
func (im *Import) Check(peer netip.Addr, p netip.Prefix, nextHop, originator netip.Addr) bool {
	pp, ok := im.in.Peers[peer]
	if !ok {
		return false
	}
	if !pp.Internal {
		return true
	}
	return im.EvaluatePath(pp, true, p, nextHop, originator).Accepted()
}
