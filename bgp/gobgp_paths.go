package bgp

import (
	"context"
	"fmt"
	"net/netip"

	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// The paths this node originates: advertised into GoBGP's global RIB and
// withdrawn from it.
// Advertise implements Speaker.
func (s *GoBGP) Advertise(ctx context.Context, a Advertisement) error {
	defer s.changed() // the session listing may differ (gobgp_peers.go)
	if !a.Prefix.IsValid() || a.Prefix != a.Prefix.Masked() {
		return fmt.Errorf("advertising %s: not a network prefix", a.Prefix)
	}
	if a.NextHop.IsValid() && FamilyOf(a.NextHop) != FamilyOf(a.Prefix.Addr()) {
		return fmt.Errorf("advertising %s: next hop %s is of another family", a.Prefix, a.NextHop)
	}
	srv, err := s.server()
	if err != nil {
		return err
	}
	s.mu.Lock()
	old, exists := s.ads[a.Prefix]
	s.mu.Unlock()
	if exists && old.Equal(a) {
		return nil
	}
	p, err := toAPIPath(a)
	if err != nil {
		return fmt.Errorf("advertising %s: %w", a.Prefix, err)
	}
	// Adding a path for a prefix we already originate replaces it (an
	// implicit withdraw in GoBGP's RIB).
	if _, err := srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: p}); err != nil {
		return fmt.Errorf("advertising %s: %w", a.Prefix, err)
	}
	s.mu.Lock()
	s.paths[a.Prefix], s.ads[a.Prefix] = p, a
	s.mu.Unlock()
	return nil
}

// Withdraw implements Speaker.
func (s *GoBGP) Withdraw(ctx context.Context, prefix netip.Prefix) error {
	defer s.changed() // the session listing may differ (gobgp_peers.go)
	srv, err := s.server()
	if err != nil {
		return err
	}
	s.mu.Lock()
	p, exists := s.paths[prefix]
	s.mu.Unlock()
	if !exists {
		return nil
	}
	if err := srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Family: p.Family, Path: p}); err != nil {
		return fmt.Errorf("withdrawing %s: %w", prefix, err)
	}
	s.mu.Lock()
	delete(s.paths, prefix)
	delete(s.ads, prefix)
	s.mu.Unlock()
	return nil
}

// toAPIPath builds the GoBGP path of an advertisement: ORIGIN IGP, our next
// hop (0.0.0.0 / :: mean the session's local address), communities.
func toAPIPath(a Advertisement) (*api.Path, error) {
	fam := FamilyOf(a.Prefix.Addr())
	nlri, err := anypb.New(&api.IPAddressPrefix{PrefixLen: uint32(a.Prefix.Bits()), Prefix: a.Prefix.Addr().String()})
	if err != nil {
		return nil, err
	}
	attrs := []proto.Message{&api.OriginAttribute{Origin: 0}}
	nh := a.NextHop
	if fam == IPv4 {
		if !nh.IsValid() {
			nh = netip.IPv4Unspecified()
		}
		attrs = append(attrs, &api.NextHopAttribute{NextHop: nh.String()})
	} else {
		if !nh.IsValid() {
			nh = netip.IPv6Unspecified()
		}
		attrs = append(attrs, &api.MpReachNLRIAttribute{Family: familyAPI(IPv6), NextHops: []string{nh.String()}, Nlris: []*anypb.Any{nlri}})
	}
	if len(a.Communities) > 0 {
		attrs = append(attrs, &api.CommunitiesAttribute{Communities: a.Communities})
	}
	if len(a.LargeCommunities) > 0 {
		lc := &api.LargeCommunitiesAttribute{}
		for _, c := range a.LargeCommunities {
			lc.Communities = append(lc.Communities, &api.LargeCommunity{GlobalAdmin: c.Global, LocalData1: c.Local1, LocalData2: c.Local2})
		}
		attrs = append(attrs, lc)
	}
	p := &api.Path{Family: familyAPI(fam), Nlri: nlri}
	for _, m := range attrs {
		x, err := anypb.New(m)
		if err != nil {
			return nil, err
		}
		p.Pattrs = append(p.Pattrs, x)
	}
	return p, nil
}
