package routes

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
	mac1 = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
)

const underlayIdx = 2

func testCompiler() *compiler {
	return &compiler{
		links: linkState{Underlay: underlayIdx, IPIP: FakeIPIPIndex, VXLAN: FakeVXLANIndex,
			Subnet4: pfx("192.168.1.10/24"), Subnet6: pfx("fd00:1::10/64")},
		pools: []Pool{{CIDR: pfx("10.2.0.0/16"), VXLANMode: v1alpha1.EncapAlways}},
		vteps: map[netip.Addr]VTEP{
			addr("192.168.1.11"): {NodeIP: addr("192.168.1.11"), MAC: mac1, Address: addr("10.244.1.0")},
			addr("192.168.2.11"): {NodeIP: addr("192.168.2.11"), MAC: mac1, Address: addr("10.244.2.0")},
		},
		resolve: (&FakeDevices{Resolved: map[netip.Addr][]NextHop{
			addr("192.168.2.11"): {{Gateway: addr("192.168.1.1"), LinkIndex: underlayIdx}},
			// reached through an ECMP route of the underlay
			addr("192.168.4.11"): {{Gateway: addr("192.168.1.3"), LinkIndex: underlayIdx}, {Gateway: addr("192.168.1.2"), LinkIndex: underlayIdx}},
		}}).Resolve,
	}
}

func TestNextHopEncapsulationChoice(t *testing.T) {
	onNet, offNet, noVTEP := addr("192.168.1.11"), addr("192.168.2.11"), addr("192.168.3.11")
	direct := func(gw netip.Addr) NextHop { return NextHop{Gateway: gw, LinkIndex: underlayIdx} }
	ipip := func(gw netip.Addr) NextHop { return NextHop{Gateway: gw, LinkIndex: FakeIPIPIndex, OnLink: true} }
	vxlan := func(gw string) NextHop { return NextHop{Gateway: addr(gw), LinkIndex: FakeVXLANIndex, OnLink: true} }
	tests := []struct {
		name    string
		enc     encap
		nh      netip.Addr
		noDevs  bool
		want    NextHop
		ecmp    []NextHop
		wantErr string
	}{
		{name: "none on subnet", enc: encap{mode: encapNone}, nh: onNet, want: direct(onNet)},
		{name: "none off subnet resolves recursively", enc: encap{mode: encapNone}, nh: offNet, want: direct(addr("192.168.1.1"))},
		{name: "none off subnet unresolvable", enc: encap{mode: encapNone}, nh: noVTEP, wantErr: "no route to 192.168.3.11"},
		{name: "ipip always on subnet", enc: encap{mode: encapIPIP}, nh: onNet, want: ipip(onNet)},
		{name: "ipip always off subnet", enc: encap{mode: encapIPIP}, nh: offNet, want: ipip(offNet)},
		{name: "ipip cross-subnet on subnet goes direct", enc: encap{mode: encapIPIP, crossSubnet: true}, nh: onNet, want: direct(onNet)},
		{name: "ipip cross-subnet off subnet tunnels", enc: encap{mode: encapIPIP, crossSubnet: true}, nh: offNet, want: ipip(offNet)},
		{name: "ipip without tunl0", enc: encap{mode: encapIPIP}, nh: offNet, noDevs: true, wantErr: "tunl0 is not available"},
		{name: "ipip with IPv6 next hop", enc: encap{mode: encapIPIP}, nh: addr("fd00:1::11"), wantErr: "IPv4 next hop"},
		{name: "vxlan always on subnet", enc: encap{mode: encapVXLAN}, nh: onNet, want: vxlan("10.244.1.0")},
		{name: "vxlan always off subnet", enc: encap{mode: encapVXLAN}, nh: offNet, want: vxlan("10.244.2.0")},
		{name: "vxlan cross-subnet on subnet goes direct", enc: encap{mode: encapVXLAN, crossSubnet: true}, nh: onNet, want: direct(onNet)},
		{name: "vxlan cross-subnet off subnet tunnels", enc: encap{mode: encapVXLAN, crossSubnet: true}, nh: offNet, want: vxlan("10.244.2.0")},
		{name: "vxlan without VTEP", enc: encap{mode: encapVXLAN}, nh: noVTEP, wantErr: "no VTEP known"},
		{name: "vxlan without device", enc: encap{mode: encapVXLAN}, nh: onNet, noDevs: true, wantErr: "VXLAN device is not available"},
		{name: "ipv6 direct", enc: encap{mode: encapNone}, nh: addr("fd00:1::11"), want: direct(addr("fd00:1::11"))},
		{name: "none off subnet through an ECMP route keeps every path", enc: encap{mode: encapNone}, nh: addr("192.168.4.11"),
			ecmp: []NextHop{direct(addr("192.168.1.2")), direct(addr("192.168.1.3"))}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := testCompiler()
			if tc.noDevs {
				c.links.IPIP, c.links.VXLAN = 0, 0
			}
			got, err := c.nextHops(tc.enc, tc.nh)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, %v; want error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := tc.ecmp
			if want == nil {
				want = []NextHop{tc.want}
			}
			if !slices.Equal(got, want) {
				t.Errorf("got %+v, want %+v", got, want)
			}
		})
	}
}

func TestPoolDecidesEncapsulation(t *testing.T) {
	pools := []Pool{
		{CIDR: pfx("10.244.0.0/16"), VXLANMode: v1alpha1.EncapCrossSubnet, IPIPMode: v1alpha1.EncapNever},
		{CIDR: pfx("10.244.128.0/17"), IPIPMode: v1alpha1.EncapAlways, VXLANMode: v1alpha1.EncapNever},
		{CIDR: pfx("10.250.0.0/16"), IPIPMode: v1alpha1.EncapNever, VXLANMode: v1alpha1.EncapNever},
		{CIDR: pfx("10.251.0.0/16"), VXLANMode: v1alpha1.EncapAlways},
		{CIDR: pfx("10.252.0.0/16"), IPIPMode: v1alpha1.EncapCrossSubnet},
	}
	tests := []struct {
		prefix string
		want   encap
	}{
		{"10.244.1.0/26", encap{mode: encapVXLAN, crossSubnet: true}},
		{"10.244.200.0/26", encap{mode: encapIPIP}}, // the more specific pool wins
		{"10.250.0.0/26", encap{mode: encapNone}},
		{"10.251.0.7/32", encap{mode: encapVXLAN}},
		{"10.252.0.0/26", encap{mode: encapIPIP, crossSubnet: true}},
		{"172.16.0.0/24", encap{mode: encapNone}}, // no pool
		{"10.0.0.0/8", encap{mode: encapNone}},    // wider than every pool
	}
	c := &compiler{pools: pools}
	for _, tc := range tests {
		if got := c.encapFor(pfx(tc.prefix)); got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.prefix, got, tc.want)
		}
	}
}

func TestRemoteRouteECMPAndPartialFailure(t *testing.T) {
	c := testCompiler()
	tests := []struct {
		name    string
		rr      RemoteRoute
		want    Route
		wantErr string
	}{
		{
			name: "two next hops make one ECMP route, sorted",
			rr:   RemoteRoute{Prefix: pfx("10.1.0.0/24"), NextHops: []netip.Addr{addr("192.168.1.12"), addr("192.168.1.11")}},
			want: Route{Dst: pfx("10.1.0.0/24"), NextHops: []NextHop{
				{Gateway: addr("192.168.1.11"), LinkIndex: underlayIdx}, {Gateway: addr("192.168.1.12"), LinkIndex: underlayIdx}}},
		},
		{
			name: "ourselves as next hop is skipped",
			rr:   RemoteRoute{Prefix: pfx("10.1.0.0/24"), NextHops: []netip.Addr{addr("192.168.1.10"), addr("192.168.1.11")}},
			want: Route{Dst: pfx("10.1.0.0/24"), NextHops: []NextHop{{Gateway: addr("192.168.1.11"), LinkIndex: underlayIdx}}},
		},
		{
			name:    "only ourselves: no route, no error",
			rr:      RemoteRoute{Prefix: pfx("10.1.0.0/24"), NextHops: []netip.Addr{addr("192.168.1.10")}},
			wantErr: errNoPath.Error(),
		},
		{
			name: "one VTEP missing: route with the other, error names the missing one",
			rr:   RemoteRoute{Prefix: pfx("10.2.0.0/24"), NextHops: []netip.Addr{addr("192.168.1.11"), addr("192.168.3.3")}},
			want: Route{Dst: pfx("10.2.0.0/24"), NextHops: []NextHop{
				{Gateway: addr("10.244.1.0"), LinkIndex: FakeVXLANIndex, OnLink: true}}},
			wantErr: "192.168.3.3: no VTEP",
		},
		{
			name:    "family mismatch",
			rr:      RemoteRoute{Prefix: pfx("fd00:244::/64"), NextHops: []netip.Addr{addr("192.168.1.11")}},
			wantErr: "other address family",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.remote(&tc.rr)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
				cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("route (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRouteMessageRoundTrip(t *testing.T) {
	ra := routeAttrs{table: 1000, protocol: 114}
	routes := []Route{
		{Dst: pfx("10.0.0.0/26"), Kind: Blackhole},
		{Dst: pfx("fd00::/120"), Kind: Blackhole},
		{Dst: pfx("10.0.1.0/26"), NextHops: []NextHop{{Gateway: addr("192.168.1.11"), LinkIndex: 2}}},
		{Dst: pfx("10.0.2.0/26"), NextHops: []NextHop{{Gateway: addr("10.244.3.0"), LinkIndex: 7, OnLink: true}}},
		{Dst: pfx("10.0.3.7/32"), NextHops: []NextHop{
			{Gateway: addr("192.168.1.11"), LinkIndex: 2}, {Gateway: addr("192.168.9.1"), LinkIndex: 9, OnLink: true}}},
		{Dst: pfx("fd00:1::/64"), NextHops: []NextHop{{Gateway: addr("fd00::1"), LinkIndex: 2}, {Gateway: addr("fd00::2"), LinkIndex: 2}}},
	}
	var b []byte
	for i := range routes {
		b = appendRouteMsg(b, opReplace, uint32(i), i == len(routes)-1, &routes[i], ra)
	}
	var got []Route
	err := walkMessages(b, func(typ, flags uint16, seq uint32, body []byte) error {
		pr, ok := parseRouteMsg(body)
		if !ok || pr.table != ra.table || pr.protocol != ra.protocol {
			t.Errorf("message %d: parsed %+v, ok=%v", seq, pr, ok)
		}
		got = append(got, pr.Route)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(routes) {
		t.Fatalf("parsed %d routes, want %d", len(got), len(routes))
	}
	for i := range routes {
		if !got[i].Equal(routes[i]) {
			t.Errorf("round trip: got %v, want %v", got[i], routes[i])
		}
	}
}

func TestStateValidationNamesTheCulprit(t *testing.T) {
	tests := []struct {
		name string
		s    State
		want string
	}{
		{"host bits", State{Blocks: []OwnBlock{{Prefix: pfx("10.0.0.1/26")}}}, "block 10.0.0.1/26: not a network prefix"},
		{"lent outside", State{Blocks: []OwnBlock{{Prefix: pfx("10.0.0.0/26"), Lent: map[netip.Addr]netip.Addr{addr("10.0.1.1"): addr("192.168.1.2")}}}}, "lent address 10.0.1.1 is outside"},
		{"bad mode", State{Pools: []Pool{{CIDR: pfx("10.0.0.0/16"), VXLANMode: "Sometimes"}}}, `unknown encapsulation mode "Sometimes"`},
		{"ipip v6", State{Pools: []Pool{{CIDR: pfx("fd00::/48"), IPIPMode: v1alpha1.EncapAlways}}}, "IPIP is IPv4 only"},
		{"short mac", State{VTEPs: []VTEP{{NodeIP: addr("192.168.1.2"), Address: addr("10.0.0.1"), MAC: net.HardwareAddr{1}}}}, "6-byte MAC"},
	}
	for _, tc := range tests {
		err := tc.s.validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
}
