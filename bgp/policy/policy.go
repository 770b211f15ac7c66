// Package policy is Rhizome's BGP import policy: which received prefixes a
// node accepts into its kernel, evaluated in Go on the receive path.
//
// Import policy lives here rather than in GoBGP because the receive path
// bypasses GoBGP's post-policy stream for speed (see bgp/rib), and because
// one plain function is easier to test than a generated GoBGP policy. The
// rules, in order:
//
//  1. The guard, which no filter can override: a prefix equal to one of this
//     node's blocks, inside one (except a host route from another node: an
//     address that node borrowed from our block), or covering one of our
//     blocks or our own address, is rejected. The default route is exempt
//     from "covering": longest-prefix match means it can never take traffic
//     from a more specific local route, and it is the one route an operator
//     typically accepts from a ToR.
//  2. From our own nodes (mesh and route-reflector sessions): the session's
//     filters may reject; what is left is accepted only if IPAM lets the
//     node that originated it announce it (Owners: one of its blocks, or an
//     address its pod borrowed from another node's block as a host route;
//     or exactly a Service range), and only with that node's address as
//     next hop. Through a route reflector the originating node is the one
//     whose router ID the path's ORIGINATOR_ID is. A path nothing in IPAM
//     justifies yet (a new block's route before the block reaches this
//     node) is held: rejected, kept, and judged again on every change.
//  3. From external peers: the session's filters, first match wins; nothing
//     is accepted unless a filter accepts it (RFC 8212's default).
//  4. A peer the policy does not know: rejected.
//  5. A next hop that is one of our own addresses: rejected (a loop).
package policy

import (
	"fmt"
	"net/netip"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// Action is what a matching rule does.
type Action uint8

const (
	// Accept the route.
	Accept Action = iota + 1
	// Reject the route.
	Reject
)

func (a Action) String() string {
	switch a {
	case Accept:
		return "Accept"
	case Reject:
		return "Reject"
	}
	return fmt.Sprintf("Action(%d)", uint8(a))
}

// Op compares a route with a rule's CIDR.
type Op uint8

const (
	// In matches routes inside the CIDR, the CIDR included.
	In Op = iota
	// NotIn matches routes of the CIDR's family outside it.
	NotIn
	// Equal matches the CIDR itself.
	Equal
	// NotEqual matches every route of the CIDR's family but the CIDR.
	NotEqual
)

// Rule is one rule of an ordered prefix filter. Rules only ever match
// routes of their own CIDR's address family.
type Rule struct {
	CIDR netip.Prefix
	Op   Op
	// MinLen and MaxLen further limit the matched routes' prefix length;
	// -1 means no limit.
	MinLen, MaxLen int
	Action         Action
}

// Matches reports whether the rule applies to the route.
func (r Rule) Matches(p netip.Prefix) bool {
	if p.Addr().Is4() != r.CIDR.Addr().Is4() {
		return false
	}
	if (r.MinLen >= 0 && p.Bits() < r.MinLen) || (r.MaxLen >= 0 && p.Bits() > r.MaxLen) {
		return false
	}
	switch r.Op {
	case In:
		return Within(p, r.CIDR)
	case NotIn:
		return !Within(p, r.CIDR)
	case Equal:
		return p == r.CIDR
	case NotEqual:
		return p != r.CIDR
	}
	return false
}

// Within reports whether p lies inside (or is) outer.
func Within(p, outer netip.Prefix) bool {
	return p.Bits() >= outer.Bits() && outer.Contains(p.Addr())
}

// First returns the action of the first rule matching p, or 0 if none does.
func First(rules []Rule, p netip.Prefix) Action {
	for _, r := range rules {
		if r.Matches(p) {
			return r.Action
		}
	}
	return 0
}

// FromFilters converts BGPPeer filter rules, naming the first bad rule.
func FromFilters(in []v1alpha1.FilterRule) ([]Rule, error) {
	out := make([]Rule, 0, len(in))
	for i, f := range in {
		cidr, err := netip.ParsePrefix(f.CIDR)
		if err != nil {
			return nil, fmt.Errorf("filter rule %d: cidr %q: %w", i, f.CIDR, err)
		}
		if cidr != cidr.Masked() {
			return nil, fmt.Errorf("filter rule %d: cidr %s has host bits set", i, f.CIDR)
		}
		r := Rule{CIDR: cidr, MinLen: -1, MaxLen: -1}
		switch f.MatchOperator {
		case v1alpha1.MatchIn, "":
			r.Op = In
		case v1alpha1.MatchNotIn:
			r.Op = NotIn
		case v1alpha1.MatchEqual:
			r.Op = Equal
		case v1alpha1.MatchNotEqual:
			r.Op = NotEqual
		default:
			return nil, fmt.Errorf("filter rule %d: unknown matchOperator %q", i, f.MatchOperator)
		}
		switch f.Action {
		case v1alpha1.FilterAccept:
			r.Action = Accept
		case v1alpha1.FilterReject:
			r.Action = Reject
		default:
			return nil, fmt.Errorf("filter rule %d: unknown action %q", i, f.Action)
		}
		if pl := f.PrefixLength; pl != nil {
			if pl.Min != nil {
				r.MinLen = int(*pl.Min)
			}
			if pl.Max != nil {
				r.MaxLen = int(*pl.Max)
			}
			if r.MinLen > cidr.Addr().BitLen() || r.MaxLen > cidr.Addr().BitLen() {
				return nil, fmt.Errorf("filter rule %d: prefixLength beyond /%d", i, cidr.Addr().BitLen())
			}
			if r.MinLen >= 0 && r.MaxLen >= 0 && r.MinLen > r.MaxLen {
				return nil, fmt.Errorf("filter rule %d: prefixLength min %d > max %d", i, r.MinLen, r.MaxLen)
			}
		}
		out = append(out, r)
	}
	return out, nil
}
