package bgp

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	gobgp "github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestDecodePath checks the decoder on every attribute it reads, given
// GoBGP's packet types (the watch) and given GoBGP's API messages (the
// listings, converted by GoBGP's apiutil).
func TestDecodePath(t *testing.T) {
	pfx := netip.MustParsePrefix("10.244.1.0/26")
	native := []gobgp.PathAttributeInterface{
		gobgp.NewPathAttributeOrigin(2),
		gobgp.NewPathAttributeAsPath([]gobgp.AsPathParamInterface{
			gobgp.NewAs4PathParam(gobgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint32{65001, 4200000000}),
			gobgp.NewAs4PathParam(gobgp.BGP_ASPATH_ATTR_TYPE_SET, []uint32{7, 8}),
		}),
		gobgp.NewPathAttributeNextHop("10.0.0.1"),
		gobgp.NewPathAttributeMultiExitDisc(50),
		gobgp.NewPathAttributeLocalPref(300),
		gobgp.NewPathAttributeCommunities([]uint32{1, CommunityLLGRStale}),
		gobgp.NewPathAttributeOriginatorId("10.0.0.9"),
		gobgp.NewPathAttributeClusterList([]string{"224.0.0.1", "224.0.0.2"}),
		gobgp.NewPathAttributeLargeCommunities([]*gobgp.LargeCommunity{gobgp.NewLargeCommunity(1, 2, 3)}),
	}
	apiPath := &api.Path{Family: familyAPI(IPv4), Nlri: mustAny(t, &api.IPAddressPrefix{PrefixLen: 26, Prefix: "10.244.1.0"}), Pattrs: []*anypb.Any{
		mustAny(t, &api.OriginAttribute{Origin: 2}),
		mustAny(t, &api.AsPathAttribute{Segments: []*api.AsSegment{
			{Type: api.AsSegment_AS_SEQUENCE, Numbers: []uint32{65001, 4200000000}},
			{Type: api.AsSegment_AS_SET, Numbers: []uint32{7, 8}},
		}}),
		mustAny(t, &api.NextHopAttribute{NextHop: "10.0.0.1"}),
		mustAny(t, &api.MultiExitDiscAttribute{Med: 50}),
		mustAny(t, &api.LocalPrefAttribute{LocalPref: 300}),
		mustAny(t, &api.CommunitiesAttribute{Communities: []uint32{1, CommunityLLGRStale}}),
		mustAny(t, &api.OriginatorIdAttribute{Id: "10.0.0.9"}),
		mustAny(t, &api.ClusterListAttribute{Ids: []string{"224.0.0.1", "224.0.0.2"}}),
		mustAny(t, &api.LargeCommunitiesAttribute{Communities: []*api.LargeCommunity{{GlobalAdmin: 1, LocalData1: 2, LocalData2: 3}}}),
	}}
	for _, tc := range []struct {
		name   string
		decode func(*decoder) (ReceivedPath, error)
	}{
		{"packet types", func(d *decoder) (ReceivedPath, error) { return d.path(pfx, native) }},
		{"API", func(d *decoder) (ReceivedPath, error) { return nativePath(d, apiPath) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d decoder
			rp, err := tc.decode(&d)
			if err != nil {
				t.Fatal(err)
			}
			a := rp.Attrs
			if rp.Prefix != pfx || rp.NextHop != netip.MustParseAddr("10.0.0.1") {
				t.Errorf("prefix/next hop = %s %s", rp.Prefix, rp.NextHop)
			}
			if a.Origin != 2 || !slices.Equal(a.ASPath, []uint32{65001, 4200000000, 7, 8}) || a.ASPathLen != 3 || a.NeighborAS() != 65001 {
				t.Errorf("origin/AS path = %d %v %d", a.Origin, a.ASPath, a.ASPathLen)
			}
			if !a.HasMED || a.MED != 50 || !a.HasLocalPref || a.LocalPref != 300 {
				t.Errorf("MED/local-pref = %+v", a)
			}
			if !a.HasCommunity(CommunityLLGRStale) || !a.HasCommunity(1) || !slices.Equal(a.LargeCommunities, []LargeCommunity{{Global: 1, Local1: 2, Local2: 3}}) {
				t.Errorf("communities = %v %v", a.Communities, a.LargeCommunities)
			}
			if a.OriginatorID != netip.MustParseAddr("10.0.0.9") || a.ClusterListLen != 2 {
				t.Errorf("reflection attributes = %s %d", a.OriginatorID, a.ClusterListLen)
			}
		})
	}

	// The next path of the same UPDATE (the same attribute values) shares
	// the decoded attributes; one with other attributes does not.
	var d decoder
	rp, _ := d.path(pfx, native)
	rp2, err := d.path(netip.MustParsePrefix("10.244.9.9/32"), native)
	if err != nil || rp2.Attrs != rp.Attrs {
		t.Errorf("second path of an UPDATE: shared=%v err=%v", rp2.Attrs == rp.Attrs, err)
	}
	rp3, _ := d.path(pfx, native[:3])
	if rp3.Attrs == rp.Attrs || rp3.Attrs.HasMED {
		t.Errorf("a path with other attributes reused the previous ones")
	}
	// Equal values in other objects (another UPDATE) are decoded again.
	rp4, _ := d.path(pfx, []gobgp.PathAttributeInterface{gobgp.NewPathAttributeOrigin(2), native[1], native[2]})
	if rp4.Attrs == rp3.Attrs || rp4.Attrs.Origin != 2 {
		t.Errorf("another UPDATE's attributes reused the previous ones")
	}

	// A 2-byte AS path (a peer without the 4-byte AS capability) with a
	// confederation segment, which does not count towards the length.
	rp5, err := d.path(pfx, []gobgp.PathAttributeInterface{
		gobgp.NewPathAttributeAsPath([]gobgp.AsPathParamInterface{
			gobgp.NewAsPathParam(gobgp.BGP_ASPATH_ATTR_TYPE_CONFED_SEQ, []uint16{64999}),
			gobgp.NewAsPathParam(gobgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint16{65001, 65002}),
		}),
		native[2],
	})
	if err != nil || !slices.Equal(rp5.Attrs.ASPath, []uint32{64999, 65001, 65002}) || rp5.Attrs.ASPathLen != 2 {
		t.Errorf("2-byte AS path = %+v, %v", rp5.Attrs, err)
	}

	// IPv6: the next hop comes from MP_REACH, which differs per path.
	nlri6 := gobgp.NewIPv6AddrPrefix(122, "fd00:244::40")
	attrs6 := []gobgp.PathAttributeInterface{
		gobgp.NewPathAttributeOrigin(0),
		gobgp.NewPathAttributeMpReachNLRI("fd00::1", []gobgp.AddrPrefixInterface{nlri6}),
	}
	pfx6, err := nlriPrefix(nlri6)
	if err != nil {
		t.Fatal(err)
	}
	rp6, err := d.path(pfx6, attrs6)
	if err != nil || rp6.NextHop != netip.MustParseAddr("fd00::1") || rp6.Prefix.String() != "fd00:244::40/122" {
		t.Errorf("IPv6 path = %+v, %v", rp6, err)
	}
	attrs6b := []gobgp.PathAttributeInterface{attrs6[0], gobgp.NewPathAttributeMpReachNLRI("fd00::2", []gobgp.AddrPrefixInterface{nlri6})}
	if rp7, _ := d.path(pfx6, attrs6b); rp7.Attrs != rp6.Attrs || rp7.NextHop != netip.MustParseAddr("fd00::2") {
		t.Errorf("an IPv6 path of the same UPDATE = %+v (shared %v)", rp7, rp7.Attrs == rp6.Attrs)
	}

	// Bad input is an error, not a panic.
	if _, err := d.path(pfx, native[:1]); err == nil {
		t.Error("a path without a next hop decoded")
	}
	if _, err := nlriPrefix(gobgp.NewLabeledIPAddrPrefix(24, "10.0.0.0", *gobgp.NewMPLSLabelStack(100))); err == nil {
		t.Error("a labelled NLRI decoded as unicast")
	}
	if _, err := nativePath(&d, &api.Path{Family: familyAPI(IPv4), Nlri: &anypb.Any{TypeUrl: "type.googleapis.com/apipb.IPAddressPrefix", Value: []byte{0x0a, 0xff}}}); err == nil {
		t.Error("a truncated NLRI decoded")
	}
}

func TestToAPIPeer(t *testing.T) {
	p := Peer{
		Address: netip.MustParseAddr("10.0.0.1"), Port: 1179, ASN: 65001, LocalASN: 64512,
		Password: "pw", LocalAddress: netip.MustParseAddr("10.0.0.2"), EBGPMultihop: 4, Passive: true,
		Timers:      Timers{Keepalive: 3 * time.Second, Hold: 9 * time.Second, ConnectRetry: 5 * time.Second},
		MaxPrefixes: 100, RouteReflectorClient: true, RouteReflectorClusterID: netip.MustParseAddr("224.0.0.1"),
		GracefulRestart: GracefulRestart{Enabled: true, RestartTime: 30 * time.Second, LongLivedStaleTime: time.Hour},
	}
	a := toAPIPeer(p, false)
	c := a.Conf
	if c.NeighborAddress != "10.0.0.1" || c.PeerAsn != 65001 || c.LocalAsn != 64512 || c.AuthPassword != "pw" {
		t.Errorf("conf = %+v", c)
	}
	if tr := a.Transport; tr.RemotePort != 1179 || !tr.PassiveMode || tr.LocalAddress != "10.0.0.2" {
		t.Errorf("transport = %+v", tr)
	}
	if tc := a.Timers.Config; tc.KeepaliveInterval != 3 || tc.HoldTime != 9 || tc.ConnectRetry != 5 {
		t.Errorf("timers = %+v", tc)
	}
	if !a.EbgpMultihop.Enabled || a.EbgpMultihop.MultihopTtl != 4 || a.TtlSecurity != nil {
		t.Errorf("multihop = %+v, ttl security = %+v", a.EbgpMultihop, a.TtlSecurity)
	}
	if !a.RouteReflector.RouteReflectorClient || a.RouteReflector.RouteReflectorClusterId != "224.0.0.1" {
		t.Errorf("route reflector = %+v", a.RouteReflector)
	}
	af := a.AfiSafis[0]
	if af.PrefixLimits.MaxPrefixes != 100 || !af.MpGracefulRestart.Config.Enabled || af.LongLivedGracefulRestart.Config.RestartTime != 3600 {
		t.Errorf("afi-safi = %+v", af)
	}
	if gr := a.GracefulRestart; !gr.Enabled || gr.RestartTime != 30 || !gr.LonglivedEnabled || gr.LocalRestarting || gr.DeferralTime != 30 {
		t.Errorf("graceful restart = %+v", gr)
	}
	if gr := toAPIPeer(p, true).GracefulRestart; !gr.LocalRestarting {
		t.Errorf("a restarting speaker's session: graceful restart = %+v, want LocalRestarting", gr)
	}

	g := toAPIPeer(Peer{Address: netip.MustParseAddr("fd00::1"), ASN: 1, TTLSecurityHops: 1, Timers: Timers{Hold: HoldTimeDisabled}}, true)
	if !g.TtlSecurity.Enabled || g.TtlSecurity.TtlMin != 255 || g.EbgpMultihop != nil || g.AfiSafis[0].Config.Family.Afi != api.Family_AFI_IP6 {
		t.Errorf("GTSM peer = %+v", g)
	}
	if g.Timers.Config.HoldTime != 65535 || g.Timers.Config.ConnectRetry != 30 || g.GracefulRestart != nil {
		t.Errorf("defaults = %+v %+v", g.Timers.Config, g.GracefulRestart)
	}
}

func TestPeerValidate(t *testing.T) {
	ok := Peer{Address: netip.MustParseAddr("10.0.0.1"), ASN: 1}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []Peer{
		{ASN: 1},
		{Address: ok.Address},
		{Address: ok.Address, ASN: 1, LocalAddress: netip.MustParseAddr("fd00::1")},
		{Address: ok.Address, ASN: 1, EBGPMultihop: 2, TTLSecurityHops: 1},
		{Address: ok.Address, ASN: 1, RouteReflectorClient: true},
		{Address: ok.Address, ASN: 1, Timers: Timers{Keepalive: 10 * time.Second, Hold: 9 * time.Second}},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil", bad)
		}
	}
}
