package topology

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/bgp/policy"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

func pool(name, cidr string, mut func(*v1alpha1.IPPoolSpec)) *v1alpha1.IPPool {
	p := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.IPPoolSpec{CIDR: cidr, IPIPMode: v1alpha1.EncapNever, VXLANMode: v1alpha1.EncapNever}}
	if mut != nil {
		mut(&p.Spec)
	}
	return p
}

func renderAd(a bgp.Advertisement) string {
	s := a.Prefix.String()
	for _, c := range a.Communities {
		s += fmt.Sprintf(" %d:%d", c>>16, c&0xffff)
	}
	for _, c := range a.LargeCommunities {
		s += " " + c.String()
	}
	return s
}

func TestAdvertisementsAndPolicies(t *testing.T) {
	pools, problems := Pools([]*v1alpha1.IPPool{
		pool("default", "10.244.0.0/16", nil),
		pool("private", "10.250.0.0/16", func(s *v1alpha1.IPPoolSpec) { s.DisableBGPExport = true }),
		pool("broken", "10.1.2.3/16", nil),
	})
	if want := []string{`IPPool broken: cidr "10.1.2.3/16" is not a network prefix; ignored`}; !slices.Equal(problems, want) {
		t.Errorf("problems = %q", problems)
	}
	d, err := Compute(Input{
		NodeName: "rr1",
		Nodes:    []*corev1.Node{nodeA, nodeR1},
		Configs: []*v1alpha1.BGPConfiguration{rr1Config, bgpConfig("default", func(s *v1alpha1.BGPConfigurationSpec) {
			s.ServiceClusterIPs = []v1alpha1.ServiceIPBlock{{CIDR: "10.96.0.0/12"}}
			s.Communities = []v1alpha1.Community{"64512:100", "64512:1:1"}
			s.PrefixAdvertisements = []v1alpha1.PrefixAdvertisement{{CIDR: "10.244.0.0/16", Communities: []v1alpha1.Community{"64512:200", "64512:100"}}}
		})},
		Peers: []*v1alpha1.BGPPeer{toRRs, bgpPeer("tor", func(s *v1alpha1.BGPPeerSpec) {
			s.PeerIP, s.ASNumber = "10.0.1.254", ptr(int64(65001))
			s.ExportFilters = []v1alpha1.FilterRule{
				{CIDR: "10.244.1.5/32", MatchOperator: v1alpha1.MatchEqual, Action: v1alpha1.FilterAccept},
				{CIDR: "10.244.0.0/16", PrefixLength: &v1alpha1.PrefixLengthRange{Min: ptr(int32(32))}, Action: v1alpha1.FilterReject},
			}
		})},
	})
	if err != nil {
		t.Fatal(err)
	}
	local := Local{
		Blocks:   []netip.Prefix{netip.MustParsePrefix("10.244.1.0/26"), netip.MustParsePrefix("10.250.0.0/26")},
		Borrowed: []netip.Addr{netip.MustParseAddr("10.244.9.7"), netip.MustParseAddr("10.244.1.5"), netip.MustParseAddr("10.250.3.3")},
	}
	ads := Advertisements(&d, pools, local)
	var got []string
	for _, a := range ads {
		got = append(got, renderAd(a))
	}
	want := []string{
		"10.96.0.0/12 64512:100 64512:1:1",
		"10.244.1.0/26 64512:100 64512:200 64512:1:1",
		"10.244.1.5/32 64512:100 64512:200 64512:1:1",
		"10.244.9.7/32 64512:100 64512:200 64512:1:1",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("advertisements (-want +got):\n%s", diff)
	}

	// What the nodes may originate: a, this reflector's client, has
	// 10.244.2.0/26; the block beside it is nobody's yet.
	local.Owners = policy.NewOwners([]policy.OwnedBlock{
		{CIDR: netip.MustParsePrefix("10.244.1.0/26"), Node: "rr1"},
		{CIDR: netip.MustParsePrefix("10.244.2.0/26"), Node: "a"},
		{CIDR: netip.MustParsePrefix("10.244.4.0/26"), Node: "rr1"},
	}, map[netip.Addr]string{netip.MustParseAddr("10.244.1.5"): "a"})
	im := ImportPolicy(&d, pools, local)
	for _, c := range []struct {
		peer, prefix, nh string
		want             policy.Reason
	}{
		{"10.0.1.1", "10.244.2.0/26", "10.0.1.1", policy.Accepted},
		{"10.0.1.1", "10.244.2.0/26", "10.0.1.2", policy.RejectedNextHop},
		{"10.0.1.1", "10.244.1.5/32", "10.0.1.1", policy.Accepted},
		{"10.0.1.1", "10.244.3.0/26", "10.0.1.1", policy.RejectedHeld},
		{"10.0.1.1", "10.244.4.0/26", "10.0.1.1", policy.RejectedNotOwner}, // rr1's, not in local.Blocks
		{"10.0.1.1", "10.244.1.0/26", "10.0.1.1", policy.RejectedOwnBlock},
		{"10.0.1.1", "10.250.0.0/26", "10.0.1.1", policy.RejectedOwnBlock},
		{"10.0.1.1", "10.0.1.10/32", "10.0.1.1", policy.RejectedOwnAddress},
		{"10.0.1.254", "10.244.2.0/26", "10.0.1.254", policy.RejectedNoFilterMatch},
		{"10.9.9.9", "10.244.2.0/26", "10.9.9.9", policy.RejectedUnknownPeer},
	} {
		if v := im.Evaluate(netip.MustParseAddr(c.peer), netip.MustParsePrefix(c.prefix), netip.MustParseAddr(c.nh), netip.Addr{}); v.Reason != c.want {
			t.Errorf("import %s via %s from %s: %s, want %s", c.prefix, c.nh, c.peer, v.Reason, c.want)
		}
	}
	if p := im.Input().Pools; len(p) != 2 || p[0].BlockBits != 26 {
		t.Errorf("policy pools %+v, want two with /26 blocks", p)
	}

	ex := ExportPolicy(&d, pools, ads)
	wantEx := bgp.ExportPolicy{
		Deny:      map[netip.Addr][]netip.Prefix{netip.MustParseAddr("10.0.1.254"): {netip.MustParsePrefix("10.244.9.7/32")}},
		Reflect:   []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.250.0.0/16"), netip.MustParsePrefix("10.96.0.0/12")},
		NoReflect: []netip.Addr{netip.MustParseAddr("10.0.1.254")},
	}
	if diff := cmp.Diff(wantEx, ex, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("export policy (-want +got):\n%s", diff)
	}

	// Not a reflector: nothing reflected.
	d2, _ := Compute(Input{NodeName: "a", Nodes: []*corev1.Node{nodeA, nodeB}})
	if ex := ExportPolicy(&d2, pools, nil); ex.Reflect != nil || ex.NoReflect != nil || ex.Deny != nil {
		t.Errorf("export policy of a plain node = %+v", ex)
	}
	if s := strings.Join(d2.Problems, ";"); s != "" {
		t.Errorf("problems: %s", s)
	}
}
