package routes

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// This file turns desired state into kernel routes. It is pure: all it knows
// of the kernel is in linkState, so the encapsulation choice is unit-tested
// without one.

// linkState is what compiling needs to know about the node's interfaces.
type linkState struct {
	// Underlay is the interface holding the node's address.
	Underlay int
	// IPIP is tunl0's index, VXLAN the VXLAN device's; 0 while absent.
	IPIP, VXLAN int
	// Subnet4 and Subnet6 are the node's underlay subnets (with the node's
	// own address): next hops inside them are reached directly.
	Subnet4, Subnet6 netip.Prefix
}

// errNoPath says a remote route has no usable next hop and no error either:
// every next hop was this node itself (BGP reflecting our own blocks).
var errNoPath = errors.New("no next hop other than this node")

// compiler holds what one pass (or one Apply) needs to compile routes.
type compiler struct {
	links   linkState
	pools   []Pool
	vteps   map[netip.Addr]VTEP
	resolve func(netip.Addr) ([]NextHop, error)
	cache   map[netip.Addr]resolved
	// one interns single-next-hop slices: most routes have one next hop
	// and a cluster has few distinct ones, so 100k routes share a handful
	// of slices instead of allocating 100k. Routes never modify them.
	one map[NextHop][]NextHop
}

// resolved is how a next hop outside our subnet is reached: the next hops
// of the kernel's route towards it (several when that route is ECMP),
// normalized and shared by every route through it.
type resolved struct {
	nhs []NextHop
	err error
}

func (c *compiler) isSelf(a netip.Addr) bool {
	return a == c.links.Subnet4.Addr() || a == c.links.Subnet6.Addr()
}

func (c *compiler) onSubnet(a netip.Addr) bool {
	if a.Is4() {
		return c.links.Subnet4.IsValid() && c.links.Subnet4.Contains(a)
	}
	return c.links.Subnet6.IsValid() && c.links.Subnet6.Contains(a)
}

// encapFor is the encapsulation of a prefix: its pool's, or none outside
// every pool (Service ranges, routes from routers).
func (c *compiler) encapFor(p netip.Prefix) encap {
	if pl, ok := poolFor(c.pools, p); ok {
		return poolEncap(pl)
	}
	return encap{mode: encapNone}
}

// nextHops decides how to reach one BGP next hop under enc: usually one
// kernel next hop, several when the next hop is reached through an ECMP
// route of the underlay. The slice is shared and must not be modified.
func (c *compiler) nextHops(enc encap, nh netip.Addr) ([]NextHop, error) {
	mode := enc.mode
	if enc.crossSubnet && c.onSubnet(nh) {
		mode = encapNone
	}
	switch mode {
	case encapIPIP:
		if !nh.Is4() {
			return nil, fmt.Errorf("next hop %s: IPIP needs an IPv4 next hop", nh)
		}
		if c.links.IPIP == 0 {
			return nil, fmt.Errorf("next hop %s: the IPIP device tunl0 is not available", nh)
		}
		return c.intern(NextHop{Gateway: nh, LinkIndex: c.links.IPIP, OnLink: true}), nil
	case encapVXLAN:
		v, ok := c.vteps[nh]
		if !ok {
			return nil, fmt.Errorf("next hop %s: no VTEP known for this node", nh)
		}
		if c.links.VXLAN == 0 {
			return nil, fmt.Errorf("next hop %s: the VXLAN device is not available", nh)
		}
		return c.intern(NextHop{Gateway: v.Address, LinkIndex: c.links.VXLAN, OnLink: true}), nil
	}
	if c.onSubnet(nh) {
		return c.intern(NextHop{Gateway: nh, LinkIndex: c.links.Underlay}), nil
	}
	// Not on our subnet and not encapsulated: the kernel only accepts a
	// directly connected gateway, so resolve it the way BIRD's "gateway
	// recursive" does, through the route the kernel has towards it — with
	// all of its next hops when it is ECMP. The Reconciler re-resolves
	// when that route, its links or its addresses change (drifted).
	if r, ok := c.cache[nh]; ok {
		return r.nhs, r.err
	}
	var r resolved
	if c.resolve == nil {
		r.err = fmt.Errorf("next hop %s is not on this node's subnet and cannot be resolved", nh)
	} else {
		r.nhs, r.err = c.resolve(nh)
		switch {
		case r.err != nil:
			r.err = fmt.Errorf("next hop %s: %w", nh, r.err)
			r.nhs = nil
		case len(r.nhs) == 0:
			r.err = fmt.Errorf("next hop %s: no route", nh)
		default:
			rt := Route{NextHops: slices.Clone(r.nhs)}
			rt.Normalize()
			r.nhs = rt.NextHops
		}
	}
	if c.cache == nil {
		c.cache = map[netip.Addr]resolved{}
	}
	c.cache[nh] = r
	return r.nhs, r.err
}

// intern returns a shared one-element slice: most routes have one next hop
// and a cluster has few distinct ones.
func (c *compiler) intern(hop NextHop) []NextHop {
	nhs, ok := c.one[hop]
	if !ok {
		if c.one == nil {
			c.one = map[NextHop][]NextHop{}
		}
		nhs = []NextHop{hop}
		c.one[hop] = nhs
	}
	return nhs
}

// resolvedThrough reports whether a route to dst (or a change of it) can
// change how a next hop outside our subnet is reached, or whether one of
// them leaves through link (0: any).
func (c *compiler) resolvedThrough(dst netip.Prefix, link int) bool {
	for a, r := range c.cache {
		if dst.IsValid() && dst.Contains(a) {
			return true
		}
		for _, nh := range r.nhs {
			if link != 0 && nh.LinkIndex == link {
				return true
			}
		}
	}
	return false
}

// remote compiles one remote route. A route with some unusable next hops
// is returned with the usable ones and an error naming the others.
func (c *compiler) remote(rr *RemoteRoute) (Route, error) {
	enc := c.encapFor(rr.Prefix)
	if len(rr.NextHops) == 1 && !c.isSelf(rr.NextHops[0]) && rr.NextHops[0].Is4() == rr.Prefix.Addr().Is4() {
		nhs, err := c.nextHops(enc, rr.NextHops[0])
		if err != nil {
			return Route{}, fmt.Errorf("route %s (%s): %w", rr.Prefix, enc.mode, err)
		}
		return Route{Dst: rr.Prefix, Kind: Unicast, NextHops: nhs}, nil
	}
	r := Route{Dst: rr.Prefix, Kind: Unicast, NextHops: make([]NextHop, 0, len(rr.NextHops))}
	var errs []error
	for _, nh := range rr.NextHops {
		if c.isSelf(nh) {
			continue
		}
		if nh.Is4() != rr.Prefix.Addr().Is4() {
			errs = append(errs, fmt.Errorf("next hop %s is of the other address family", nh))
			continue
		}
		hops, err := c.nextHops(enc, nh)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r.NextHops = append(r.NextHops, hops...)
	}
	var err error
	if len(errs) > 0 {
		err = fmt.Errorf("route %s (%s): %w", rr.Prefix, enc.mode, errors.Join(errs...))
	}
	if len(r.NextHops) == 0 {
		if err == nil {
			err = errNoPath
		}
		return Route{}, err
	}
	r.Normalize()
	return r, err
}

// desiredSet is the complete desired routing state, indexed for lookups of
// single prefixes (Apply) and for full passes.
type desiredSet struct {
	blocks map[netip.Prefix]*OwnBlock
	lent   map[netip.Prefix]netip.Addr // host prefix -> borrower
	remote map[netip.Prefix]RemoteRoute
}

// lentPool returns the encapsulation for a lent host route: its block's pool.
func (c *compiler) lentRoute(p netip.Prefix, borrower netip.Addr) (Route, error) {
	return c.remote(&RemoteRoute{Prefix: p, NextHops: []netip.Addr{borrower}})
}

// route returns the route prefix p should have, with ok=false when it
// should have none. Own blocks win over anything learned for the same
// prefix; a learned route wins over our fallback for a lent address.
func (d *desiredSet) route(c *compiler, p netip.Prefix) (r Route, ok bool, err error) {
	if _, own := d.blocks[p]; own {
		return Route{Dst: p, Kind: Blackhole}, true, nil
	}
	if rr, remote := d.remote[p]; remote {
		r, err = c.remote(&rr)
		if err == nil || len(r.NextHops) > 0 {
			return r, true, err
		}
		if !errors.Is(err, errNoPath) {
			return Route{}, false, err
		}
	}
	if b, lent := d.lent[p]; lent {
		r, err = c.lentRoute(p, b)
		return r, len(r.NextHops) > 0, err
	}
	return Route{}, false, nil
}

// prefixes calls fn for every prefix that may have a route.
func (d *desiredSet) prefixes(fn func(netip.Prefix)) {
	for p := range d.blocks {
		fn(p)
	}
	for p := range d.remote {
		if _, own := d.blocks[p]; !own {
			fn(p)
		}
	}
	for p := range d.lent {
		_, own := d.blocks[p]
		_, remote := d.remote[p]
		if !own && !remote {
			fn(p)
		}
	}
}
