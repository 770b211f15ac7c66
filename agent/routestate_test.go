package agent

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/ipam"
	"github.com/rhizome-net/rhizome/routes"
)

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func TestRouteState(t *testing.T) {
	pools := []ipam.Pool{{Name: "p", CIDR: pfx("10.244.0.0/16"), VXLANMode: v1alpha1.EncapCrossSubnet, IPIPMode: v1alpha1.EncapNever, NATOutgoing: true}}
	others := []peerNode{
		{Name: "n3", IPv4: addr("10.0.2.10"), VXLANMAC: mac("02:00:00:00:00:03"), VXLANAddress: addr("10.244.2.0")},
		{Name: "n2", IPv4: addr("10.0.1.11"), VXLANMAC: mac("02:00:00:00:00:02"), VXLANAddress: addr("10.244.1.0")},
		{Name: "n4", IPv4: addr("10.0.2.11")}, // no VTEP published yet
	}
	cases := []struct {
		name   string
		snap   ipam.Snapshot
		lentTo map[netip.Addr]string
		want   routes.State
	}{
		{
			name: "blocks, pools, VTEPs sorted, unpublished VTEP left out",
			snap: ipam.Snapshot{Ready: true, Pools: pools, Affine: []ipam.Block{{CIDR: pfx("10.244.0.0/26"), Node: "n1"}}},
			want: routes.State{
				Blocks: []routes.OwnBlock{{Prefix: pfx("10.244.0.0/26")}},
				Pools:  []routes.Pool{{CIDR: pfx("10.244.0.0/16"), VXLANMode: v1alpha1.EncapCrossSubnet, IPIPMode: v1alpha1.EncapNever, NATOutgoing: true}},
				VTEPs: []routes.VTEP{
					{NodeIP: addr("10.0.1.11"), MAC: mac("02:00:00:00:00:02"), Address: addr("10.244.1.0")},
					{NodeIP: addr("10.0.2.10"), MAC: mac("02:00:00:00:00:03"), Address: addr("10.244.2.0")},
				},
				VXLANAddress: addr("10.244.0.0"),
			},
		},
		{
			name: "lent addresses routed to their borrower, in the right block",
			snap: ipam.Snapshot{Ready: true, Affine: []ipam.Block{{CIDR: pfx("10.244.0.0/26")}, {CIDR: pfx("10.244.0.64/26")}},
				Lent: []netip.Addr{addr("10.244.0.5"), addr("10.244.0.70"), addr("10.244.0.9")}},
			lentTo: map[netip.Addr]string{addr("10.244.0.5"): "n2", addr("10.244.0.70"): "n3", addr("10.244.0.9"): "gone"},
			want: routes.State{
				Blocks: []routes.OwnBlock{
					{Prefix: pfx("10.244.0.0/26"), Lent: map[netip.Addr]netip.Addr{addr("10.244.0.5"): addr("10.0.1.11")}},
					{Prefix: pfx("10.244.0.64/26"), Lent: map[netip.Addr]netip.Addr{addr("10.244.0.70"): addr("10.0.2.10")}},
				},
				VTEPs: []routes.VTEP{
					{NodeIP: addr("10.0.1.11"), MAC: mac("02:00:00:00:00:02"), Address: addr("10.244.1.0")},
					{NodeIP: addr("10.0.2.10"), MAC: mac("02:00:00:00:00:03"), Address: addr("10.244.2.0")},
				},
				VXLANAddress: addr("10.244.0.0"),
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for range 2 { // pure: the same answer twice
				got := routeState(c.snap, c.lentTo, others, addr("10.244.0.0"), netip.Addr{})
				if d := cmp.Diff(c.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); d != "" {
					t.Fatalf("routeState (-want +got):\n%s", d)
				}
			}
		})
	}
}

func TestPeerNodeFrom(t *testing.T) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: "::ffff:192.0.2.1"}, // IPv4-mapped: the node's IPv4
	}}}
	rzn := &v1alpha1.RhizomeNode{Spec: v1alpha1.RhizomeNodeSpec{IPv4Address: "10.0.1.12/24", VXLANTunnelMACAddr: "02:aa:bb:cc:dd:ee", VXLANTunnelAddress: "10.244.3.0"}}
	p := peerNodeFrom(n, rzn)
	if p.Name != "n" || p.IPv4 != addr("10.0.1.12") || p.VXLANMAC.String() != "02:aa:bb:cc:dd:ee" || p.VXLANAddress != addr("10.244.3.0") {
		t.Fatalf("peerNodeFrom = %+v", p)
	}
	if p := peerNodeFrom(n, nil); p.IPv4 != addr("192.0.2.1") || p.VXLANMAC != nil {
		t.Fatalf("without a RhizomeNode: %+v", p)
	}
	// A broken RhizomeNode: its garbage is ignored, field by field.
	bad := &v1alpha1.RhizomeNode{Spec: v1alpha1.RhizomeNodeSpec{IPv4Address: "fd00::1/64", VXLANTunnelMACAddr: "02:aa", VXLANTunnelAddress: "ten"}}
	if p := peerNodeFrom(n, bad); p.IPv4 != addr("192.0.2.1") || p.VXLANMAC != nil || p.VXLANAddress.IsValid() {
		t.Fatalf("with a broken RhizomeNode: %+v", p)
	}
}

func TestUsesEncap(t *testing.T) {
	p := func(vxlan, ipip v1alpha1.EncapMode) ipam.Pool { return ipam.Pool{VXLANMode: vxlan, IPIPMode: ipip} }
	cases := []struct {
		name        string
		pools       []ipam.Pool
		vxlan, ipip bool
	}{
		{"no pool", nil, false, false},
		{"modes unset (the API's default is Never)", []ipam.Pool{p("", "")}, false, false},
		{"Never", []ipam.Pool{p(v1alpha1.EncapNever, v1alpha1.EncapNever)}, false, false},
		{"VXLAN CrossSubnet", []ipam.Pool{p(v1alpha1.EncapCrossSubnet, v1alpha1.EncapNever)}, true, false},
		{"IPIP Always", []ipam.Pool{p(v1alpha1.EncapNever, v1alpha1.EncapAlways)}, false, true},
		{"one pool each", []ipam.Pool{p(v1alpha1.EncapAlways, ""), p("", v1alpha1.EncapCrossSubnet)}, true, true},
		// A mode no API server accepts never gets here: the IPAM leaves
		// such a pool out (ipam/pools.EncapModes, TestPassAPIErrors).
	}
	for _, c := range cases {
		if vx, ip := usesEncap(c.pools); vx != c.vxlan || ip != c.ipip {
			t.Errorf("%s: vxlan %v ipip %v, want %v %v", c.name, vx, ip, c.vxlan, c.ipip)
		}
	}
}

func TestDescribeRoute(t *testing.T) {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Skip("no loopback interface to name")
	}
	devs := []routes.DeviceInfo{{Name: "lo", Type: "vxlan"}} // lo stands in for the VXLAN device
	cases := []struct {
		r    routes.Route
		want string
	}{
		{routes.Route{Dst: pfx("10.244.0.0/26"), Kind: routes.Blackhole}, "10.244.0.0/26 blackhole [] "},
		{routes.Route{Dst: pfx("10.244.1.0/26"), NextHops: []routes.NextHop{{Gateway: addr("10.244.1.0"), LinkIndex: lo.Index, OnLink: true}}},
			"10.244.1.0/26 vxlan [10.244.1.0] lo"},
		{routes.Route{Dst: pfx("10.244.2.0/26"), NextHops: []routes.NextHop{{Gateway: addr("10.0.0.2"), LinkIndex: 1 << 30}, {Gateway: addr("10.0.0.3"), LinkIndex: 1 << 30}}},
			"10.244.2.0/26 none [10.0.0.2 10.0.0.3] "}, // an interface that is gone: no device
	}
	for _, c := range cases {
		d := describeRoute(c.r, devs)
		if got := fmt.Sprintf("%s %s %v %s", d.Prefix, d.Encapsulation, d.NextHops, d.Device); got != c.want {
			t.Errorf("describeRoute(%v) = %q, want %q", c.r, got, c.want)
		}
	}
}
