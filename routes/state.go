package routes

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// State is the node-local part of the desired state, which changes rarely:
// the agent recomputes it from its IPAM blocks, the IP pools and the other
// nodes' RhizomeNode objects and hands it over whole with SetState. Remote
// routes learned over BGP change often and in bulk: they come through
// Apply, not here.
type State struct {
	// Blocks are this node's own IPAM blocks. Each gets a blackhole route,
	// so an unallocated address of the block is dropped here instead of
	// following the default route back out.
	Blocks []OwnBlock
	// Pools are all IP pools (disabled ones too: their addresses still
	// route). They are the only source of a route's encapsulation: a
	// remote route or a lent address inside a pool follows the most
	// specific pool containing it, any other route goes directly. They
	// also decide whether tunnel devices exist, and natOutgoing.
	Pools []Pool
	// VTEPs are the VXLAN endpoints of the other nodes. A VXLAN route to a
	// node whose VTEP is unknown cannot be installed (Status says which).
	VTEPs []VTEP
	// IPIPAddress is the address given to tunl0 (an address of one of our
	// blocks, as Calico does), so that traffic the node itself sends through
	// the tunnel has a source the other side routes back. Optional.
	IPIPAddress netip.Addr
	// VXLANAddress is this node's VTEP address, given to the VXLAN device;
	// the other nodes route to our pods via it. Required when a pool uses
	// VXLAN.
	VXLANAddress netip.Addr
}

// OwnBlock is an IPAM block this node holds by affinity.
type OwnBlock struct {
	Prefix netip.Prefix
	// Lent maps addresses of this block that pods on other nodes hold
	// ("borrowed" from us) to the underlay address of the borrowing node.
	// They must stay reachable despite the block's blackhole, so each gets
	// a host route towards the borrower, with the block's pool's
	// encapsulation, until BGP brings the borrower's own host route (which
	// then wins).
	Lent map[netip.Addr]netip.Addr
}

// Pool is the part of an IPPool that routing needs.
type Pool struct {
	CIDR        netip.Prefix
	IPIPMode    v1alpha1.EncapMode
	VXLANMode   v1alpha1.EncapMode
	NATOutgoing bool
}

// VTEP is another node's VXLAN endpoint, from its RhizomeNode spec.
type VTEP struct {
	// NodeIP is the node's underlay address: the BGP next hop of its
	// routes and the outer destination of VXLAN packets (FDB entry).
	NodeIP netip.Addr
	// MAC is the node's VXLAN device MAC (static neighbour entry).
	MAC net.HardwareAddr
	// Address is the node's VTEP address: the gateway of VXLAN routes.
	Address netip.Addr
}

// encapMode is how traffic to a remote prefix leaves the node.
type encapMode uint8

const (
	// encapNone routes to the next hop directly.
	encapNone encapMode = iota
	// encapIPIP routes through tunl0 to the next hop (onlink).
	encapIPIP
	// encapVXLAN routes through the VXLAN device to the next hop's VTEP.
	encapVXLAN
)

func (m encapMode) String() string {
	switch m {
	case encapIPIP:
		return "ipip"
	case encapVXLAN:
		return "vxlan"
	}
	return "none"
}

// encap says how a remote prefix is reached. Only poolEncap makes one:
// the pools in State decide, never the caller of Apply.
type encap struct {
	mode encapMode
	// crossSubnet encapsulates only towards next hops outside the node's
	// own underlay subnet; inside it, routes go directly.
	crossSubnet bool
}

// RemoteRoute is a prefix that other nodes (or routers) announce: a remote
// block, a borrowed /32, anything learned over BGP.
type RemoteRoute struct {
	Prefix netip.Prefix
	// NextHops are the BGP next hops, normally the announcing nodes'
	// underlay addresses. Several make one ECMP route. A next hop equal to
	// this node's own address is ignored. How they are reached (directly,
	// IPIP, VXLAN) is not the caller's choice: the pool in State.Pools
	// that contains Prefix decides, so a pool change re-encapsulates every
	// route at the next pass without anyone re-sending them. Apply keeps
	// the slice (the RIB shares one between routes): nobody may modify it
	// afterwards.
	NextHops []netip.Addr
}

// Batch is a set of changes to the remote routes, applied in one go.
type Batch struct {
	// Upserts add prefixes or replace their next hops and encapsulation.
	Upserts []RemoteRoute
	// Withdrawals remove prefixes; their kernel routes go at once.
	Withdrawals []netip.Prefix
	// Full says the Upserts are the complete set of remote routes: every
	// remote prefix not in it is withdrawn (used after the BGP layer lost
	// track, e.g. on resubscription).
	Full bool
}

// poolFor returns the most specific pool containing p.
func poolFor(pools []Pool, p netip.Prefix) (Pool, bool) {
	best, found := Pool{}, false
	for _, pl := range pools {
		if pl.CIDR.Bits() <= p.Bits() && pl.CIDR.Contains(p.Addr()) && (!found || pl.CIDR.Bits() > best.CIDR.Bits()) {
			best, found = pl, true
		}
	}
	return best, found
}

// poolEncap turns a pool's modes into an encap (VXLAN wins; the API forbids
// both being on). It is the one place where a route's encapsulation is
// decided.
func poolEncap(pl Pool) encap {
	switch {
	case pl.VXLANMode == v1alpha1.EncapAlways:
		return encap{mode: encapVXLAN}
	case pl.VXLANMode == v1alpha1.EncapCrossSubnet:
		return encap{mode: encapVXLAN, crossSubnet: true}
	case pl.IPIPMode == v1alpha1.EncapAlways:
		return encap{mode: encapIPIP}
	case pl.IPIPMode == v1alpha1.EncapCrossSubnet:
		return encap{mode: encapIPIP, crossSubnet: true}
	}
	return encap{mode: encapNone}
}

// validate checks a State for things the agent must never pass, naming the
// culprit. Errors here reject the whole State (the previous one stays).
func (s *State) validate() error {
	for _, b := range s.Blocks {
		if !b.Prefix.IsValid() || b.Prefix != b.Prefix.Masked() {
			return fmt.Errorf("block %s: not a network prefix", b.Prefix)
		}
		for a, nh := range b.Lent {
			if !b.Prefix.Contains(a) {
				return fmt.Errorf("block %s: lent address %s is outside the block", b.Prefix, a)
			}
			if !nh.IsValid() {
				return fmt.Errorf("block %s: lent address %s has no borrower address", b.Prefix, a)
			}
		}
	}
	for _, p := range s.Pools {
		if !p.CIDR.IsValid() || p.CIDR != p.CIDR.Masked() {
			return fmt.Errorf("pool %s: not a network prefix", p.CIDR)
		}
		for _, m := range []v1alpha1.EncapMode{p.IPIPMode, p.VXLANMode} {
			switch m {
			case "", v1alpha1.EncapNever, v1alpha1.EncapAlways, v1alpha1.EncapCrossSubnet:
			default:
				return fmt.Errorf("pool %s: unknown encapsulation mode %q", p.CIDR, m)
			}
		}
		if p.IPIPMode != "" && p.IPIPMode != v1alpha1.EncapNever && !p.CIDR.Addr().Is4() {
			return fmt.Errorf("pool %s: IPIP is IPv4 only", p.CIDR)
		}
	}
	for _, v := range s.VTEPs {
		if !v.NodeIP.IsValid() || !v.Address.IsValid() || len(v.MAC) != 6 {
			return fmt.Errorf("VTEP of node %s: needs node address, VTEP address and a 6-byte MAC", v.NodeIP)
		}
	}
	if s.IPIPAddress.IsValid() && !s.IPIPAddress.Is4() {
		return fmt.Errorf("IPIP tunnel address %s is not IPv4", s.IPIPAddress)
	}
	if s.VXLANAddress.IsValid() && !s.VXLANAddress.Is4() {
		return fmt.Errorf("VXLAN tunnel address %s is not IPv4 (IPv6 VXLAN is not supported yet)", s.VXLANAddress)
	}
	return nil
}

// validate checks one remote route.
func (rr *RemoteRoute) validate() error {
	if !rr.Prefix.IsValid() || rr.Prefix != rr.Prefix.Masked() {
		return fmt.Errorf("remote route %s: not a network prefix", rr.Prefix)
	}
	for _, nh := range rr.NextHops {
		if !nh.IsValid() {
			return fmt.Errorf("remote route %s: invalid next hop", rr.Prefix)
		}
	}
	return nil
}
