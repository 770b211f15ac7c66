package policy

import (
	"net/netip"
)

// Pool is what the receive path needs to know about an IP pool.
type Pool struct {
	Name string
	CIDR netip.Prefix
	// DisableBGPExport pools are not advertised; routes inside them are
	// still accepted if a peer sends them.
	DisableBGPExport bool
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
	// addresses (judged by the RIB, which sees next hops).
	RejectedNextHopSelf
	numReasons
)

// NumReasons is the number of Reason values, for arrays indexed by Reason.
const NumReasons = int(numReasons)

var reasonNames = [...]string{"accepted", "own-block", "own-address", "not-in-pool", "filter", "no-filter-match", "unknown-peer", "next-hop-self"}

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
	// Rules are the session's import filters.
	Rules []Rule
}

// Input is everything the import policy depends on.
type Input struct {
	Pools []Pool
	// Services are the Service ranges this node advertises; their routes
	// are accepted from internal sessions like pool routes.
	Services []netip.Prefix
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

// Evaluate judges one prefix from a peer.
func (im *Import) Evaluate(addr netip.Addr, p netip.Prefix) Verdict {
	pp, ok := im.in.Peers[addr]
	return im.EvaluatePeer(pp, ok, p)
}

// EvaluatePeer judges one prefix given the peer's policy (known=false for
// an unknown peer), so that a batch from one peer looks the peer up once.
func (im *Import) EvaluatePeer(pp PeerPolicy, known bool, p netip.Prefix) Verdict {
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
		switch {
		case act == Reject:
			v.Reason = RejectedByFilter
		case v.Pool < 0 && !im.inService(p):
			v.Reason = RejectedNotInPool
		}
		return v
	}
	switch act {
	case Accept:
	case Reject:
		v.Reason = RejectedByFilter
	default:
		v.Reason = RejectedNoFilterMatch
	}
	return v
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
