package routes

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Kind is the kernel route type of a Route.
type Kind uint8

const (
	// Unicast forwards to one or more next hops.
	Unicast Kind = iota
	// Blackhole silently drops. Own blocks get one so that traffic to an
	// unallocated address of the block dies here instead of looping back
	// to the default route.
	Blackhole
)

func (k Kind) String() string {
	if k == Blackhole {
		return "blackhole"
	}
	return "unicast"
}

// NextHop is one path of a kernel route.
type NextHop struct {
	// Gateway is the next hop's address: a node on our subnet (direct), the
	// remote node (IPIP), or the remote VTEP address (VXLAN).
	Gateway netip.Addr
	// LinkIndex is the outgoing interface.
	LinkIndex int
	// OnLink tells the kernel to take Gateway as directly reachable through
	// LinkIndex even though no connected route covers it (tunnels).
	OnLink bool
}

func (n NextHop) compare(o NextHop) int {
	if c := n.Gateway.Compare(o.Gateway); c != 0 {
		return c
	}
	if c := cmp.Compare(n.LinkIndex, o.LinkIndex); c != 0 {
		return c
	}
	switch {
	case n.OnLink == o.OnLink:
		return 0
	case !n.OnLink:
		return -1
	}
	return 1
}

// Route is a kernel route as Rhizome owns it. The table, the protocol number
// and the metric are not part of it: a Table fixes them for all its routes,
// so a Route is identified in its Table by Dst alone.
type Route struct {
	Dst  netip.Prefix
	Kind Kind
	// NextHops are the paths of a Unicast route, sorted (see Normalize); more
	// than one makes an ECMP route. Empty for a Blackhole.
	NextHops []NextHop
}

// Normalize sorts and de-duplicates the next hops and masks Dst, so that two
// routes that mean the same compare Equal.
func (r *Route) Normalize() {
	r.Dst = r.Dst.Masked()
	if len(r.NextHops) > 1 {
		slices.SortFunc(r.NextHops, NextHop.compare)
		r.NextHops = slices.CompactFunc(r.NextHops, func(a, b NextHop) bool { return a == b })
	}
}

// Equal reports whether both routes would be the same kernel route. Both
// must be normalized.
func (r Route) Equal(o Route) bool {
	return r.Dst == o.Dst && r.Kind == o.Kind && slices.Equal(r.NextHops, o.NextHops)
}

// Validate reports a route that the kernel would refuse or that makes no
// sense, naming the route.
func (r Route) Validate() error {
	if !r.Dst.IsValid() {
		return fmt.Errorf("route has no destination")
	}
	switch r.Kind {
	case Blackhole:
		if len(r.NextHops) > 0 {
			return fmt.Errorf("route %s: a blackhole has no next hops", r.Dst)
		}
	case Unicast:
		if len(r.NextHops) == 0 {
			return fmt.Errorf("route %s: no next hop", r.Dst)
		}
		for _, nh := range r.NextHops {
			if !nh.Gateway.IsValid() || nh.LinkIndex <= 0 {
				return fmt.Errorf("route %s: next hop %v needs a gateway and an interface", r.Dst, nh)
			}
			if nh.Gateway.Is4() != r.Dst.Addr().Is4() {
				return fmt.Errorf("route %s: next hop %s is of the other address family", r.Dst, nh.Gateway)
			}
		}
	default:
		return fmt.Errorf("route %s: unknown kind %d", r.Dst, r.Kind)
	}
	return nil
}

// String is like `ip route`: "10.0.0.0/26 via 192.168.1.2 dev#3 onlink".
func (r Route) String() string {
	var b strings.Builder
	if r.Kind == Blackhole {
		b.WriteString("blackhole ")
	}
	b.WriteString(r.Dst.String())
	for _, nh := range r.NextHops {
		fmt.Fprintf(&b, " via %s dev#%d", nh.Gateway, nh.LinkIndex)
		if nh.OnLink {
			b.WriteString(" onlink")
		}
	}
	return b.String()
}
