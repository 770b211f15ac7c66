package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
)

// exportPolicyName is the one GoBGP policy Rhizome manages. It is assigned
// to the global RIB's export direction with default action reject.
const exportPolicyName = "rhizome-export"

// SetExportPolicy implements Speaker. The whole policy is replaced in one
// GoBGP call. Peers that may now receive more get a soft reset out. GoBGP
// v3 cannot retract a route that a tightened export policy now holds back
// (a soft reset out only sends what passes, and withdrawals are filtered by
// the new policy too), so a peer whose deny list now covers a route it was
// already sent gets its session reset, alone.
func (s *GoBGP) SetExportPolicy(ctx context.Context, p ExportPolicy) error {
	defer s.changed() // the session listing may differ (gobgp_peers.go)
	srv, err := s.server()
	if err != nil {
		return err
	}
	p = normalizeExport(p)
	s.mu.Lock()
	old := s.export
	s.mu.Unlock()
	if exportEqual(old, p) {
		return nil
	}
	if err := applyExportPolicy(ctx, srv, p, false); err != nil {
		return err
	}
	s.mu.Lock()
	s.export = p
	peers := make([]netip.Addr, 0, len(s.peers))
	for a := range s.peers {
		peers = append(peers, a)
	}
	var retract map[netip.Addr][]netip.Prefix
	for a, l := range p.Deny {
		for _, pf := range l {
			if _, advertised := s.ads[pf]; advertised && !slices.Contains(old.Deny[a], pf) {
				if retract == nil {
					retract = make(map[netip.Addr][]netip.Prefix)
				}
				retract[a] = append(retract[a], pf)
			}
		}
	}
	s.mu.Unlock()
	for _, a := range peers {
		if !exportChangedFor(old, p, a) {
			continue
		}
		if l := retract[a]; len(l) > 0 {
			s.log.Info("resetting session to retract routes its export filters now reject", "op", "set-export-policy", "peer", a, "prefixes", l)
			if err := srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: a.String(), Communication: "export policy changed"}); err != nil {
				return fmt.Errorf("resetting peer %s after an export policy change: %w", a, err)
			}
			continue
		}
		// A soft reset out fails for a peer that is not established; it
		// gets the new policy when it comes up anyway.
		_ = srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: a.String(), Soft: true, Direction: api.ResetPeerRequest_OUT})
	}
	return nil
}

// normalizeExport sorts and de-duplicates, so that equal policies compare
// equal and reflect sets hold no entry covered by another (GoBGP's prefix
// set matches only the longest entry containing a route, so a covered entry
// with a narrower length range would hide the wider one).
func normalizeExport(p ExportPolicy) ExportPolicy {
	out := ExportPolicy{Deny: make(map[netip.Addr][]netip.Prefix)}
	for a, l := range p.Deny {
		if len(l) == 0 {
			continue
		}
		l = slices.Clone(l)
		slices.SortFunc(l, comparePrefix)
		out.Deny[a] = slices.Compact(l)
	}
	out.Reflect = coverSet(p.Reflect)
	out.NoReflect = slices.Clone(p.NoReflect)
	slices.SortFunc(out.NoReflect, netip.Addr.Compare)
	out.NoReflect = slices.Compact(out.NoReflect)
	return out
}

// coverSet returns the prefixes sorted, without those inside another one.
func coverSet(in []netip.Prefix) []netip.Prefix {
	l := slices.Clone(in)
	slices.SortFunc(l, comparePrefix)
	var out []netip.Prefix
	for _, p := range l {
		covered := false
		for _, q := range out {
			if q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, p)
		}
	}
	return out
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func exportEqual(a, b ExportPolicy) bool {
	if len(a.Deny) != len(b.Deny) || !slices.Equal(a.Reflect, b.Reflect) || !slices.Equal(a.NoReflect, b.NoReflect) {
		return false
	}
	for k, v := range a.Deny {
		if !slices.Equal(v, b.Deny[k]) {
			return false
		}
	}
	return true
}

func exportChangedFor(a, b ExportPolicy, peer netip.Addr) bool {
	if !slices.Equal(a.Deny[peer], b.Deny[peer]) {
		return true
	}
	inA := len(a.Reflect) > 0 && !slices.Contains(a.NoReflect, peer)
	inB := len(b.Reflect) > 0 && !slices.Contains(b.NoReflect, peer)
	return inA != inB || (inB && !slices.Equal(a.Reflect, b.Reflect))
}

func hostPrefix(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

// applyExportPolicy writes the policy into GoBGP:
//
//	deny-N:    peer N's denied prefixes, if locally originated → reject
//	local:     any locally originated route                    → accept
//	reflect-F: an iBGP-learned route inside Reflect, towards a
//	           peer not in NoReflect (family F)                 → accept
//	default:                                                    reject
func applyExportPolicy(ctx context.Context, srv *server.BgpServer, p ExportPolicy, initial bool) error {
	var sets []*api.DefinedSet
	pol := &api.Policy{Name: exportPolicyName}
	peers := make([]netip.Addr, 0, len(p.Deny))
	for a := range p.Deny {
		peers = append(peers, a)
	}
	slices.SortFunc(peers, netip.Addr.Compare)
	for i, a := range peers {
		nbr := fmt.Sprintf("rhizome-deny-%d-peer", i)
		sets = append(sets, &api.DefinedSet{DefinedType: api.DefinedType_NEIGHBOR, Name: nbr, List: []string{hostPrefix(a)}})
		for _, f := range []Family{IPv4, IPv6} {
			var prefixes []*api.Prefix
			for _, pf := range p.Deny[a] {
				if FamilyOf(pf.Addr()) == f {
					prefixes = append(prefixes, &api.Prefix{IpPrefix: pf.String(), MaskLengthMin: uint32(pf.Bits()), MaskLengthMax: uint32(pf.Bits())})
				}
			}
			if len(prefixes) == 0 {
				continue
			}
			name := fmt.Sprintf("rhizome-deny-%d-v%d", i, f)
			sets = append(sets, &api.DefinedSet{DefinedType: api.DefinedType_PREFIX, Name: name, Prefixes: prefixes})
			pol.Statements = append(pol.Statements, &api.Statement{
				Name: name,
				Conditions: &api.Conditions{
					NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: nbr},
					PrefixSet:   &api.MatchSet{Type: api.MatchSet_ANY, Name: name},
					RouteType:   api.Conditions_ROUTE_TYPE_LOCAL,
				},
				Actions: &api.Actions{RouteAction: api.RouteAction_REJECT},
			})
		}
	}
	pol.Statements = append(pol.Statements, &api.Statement{
		Name:       "rhizome-local",
		Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ACCEPT},
	})
	if len(p.Reflect) > 0 {
		// Towards every peer but the external ones: a neighbor set of
		// those few, inverted. GoBGP matches a neighbor set by scanning
		// it, so a set of every node would cost a reflector O(nodes) per
		// route and peer.
		var notTo *api.DefinedSet
		if len(p.NoReflect) > 0 {
			notTo = &api.DefinedSet{DefinedType: api.DefinedType_NEIGHBOR, Name: "rhizome-no-reflect"}
			for _, a := range p.NoReflect {
				notTo.List = append(notTo.List, hostPrefix(a))
			}
			sets = append(sets, notTo)
		}
		for _, f := range []Family{IPv4, IPv6} {
			var prefixes []*api.Prefix
			for _, pf := range p.Reflect {
				if FamilyOf(pf.Addr()) == f {
					prefixes = append(prefixes, &api.Prefix{IpPrefix: pf.String(), MaskLengthMin: uint32(pf.Bits()), MaskLengthMax: uint32(pf.Addr().BitLen())})
				}
			}
			if len(prefixes) == 0 {
				continue
			}
			name := fmt.Sprintf("rhizome-reflect-v%d", f)
			sets = append(sets, &api.DefinedSet{DefinedType: api.DefinedType_PREFIX, Name: name, Prefixes: prefixes})
			cond := &api.Conditions{
				PrefixSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: name},
				RouteType: api.Conditions_ROUTE_TYPE_INTERNAL,
			}
			if notTo != nil {
				cond.NeighborSet = &api.MatchSet{Type: api.MatchSet_INVERT, Name: notTo.Name}
			}
			pol.Statements = append(pol.Statements, &api.Statement{
				Name:       name,
				Conditions: cond,
				Actions:    &api.Actions{RouteAction: api.RouteAction_ACCEPT},
			})
		}
	}
	if err := srv.SetPolicies(ctx, &api.SetPoliciesRequest{DefinedSets: sets, Policies: []*api.Policy{pol}}); err != nil {
		return fmt.Errorf("setting export policy: %w", err)
	}
	if initial {
		err := srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
			Name:          "global",
			Direction:     api.PolicyDirection_EXPORT,
			Policies:      []*api.Policy{{Name: exportPolicyName}},
			DefaultAction: api.RouteAction_REJECT,
		}})
		if err != nil {
			return fmt.Errorf("assigning export policy: %w", err)
		}
	}
	return nil
}
