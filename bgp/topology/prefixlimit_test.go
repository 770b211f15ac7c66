package topology

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/rhizome-net/rhizome/bgp/policy"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

func TestNodePrefixLimits(t *testing.T) {
	pool := func(cidr string, blockBits int) policy.Pool {
		return policy.Pool{Name: cidr, CIDR: netip.MustParsePrefix(cidr), BlockBits: blockBits}
	}
	prefixes := func(l ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range l {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	leftovers := policy.NewOwners([]policy.OwnedBlock{
		{CIDR: netip.MustParsePrefix("10.244.1.0/26"), Node: "a"}, // inside the pool: counted with it
		{CIDR: netip.MustParsePrefix("10.9.0.0/26"), Node: "a"},   // a deleted pool's: itself and 64 addresses
		{CIDR: netip.MustParsePrefix("fd00:9::/122"), Node: "b"},
	}, nil)
	tests := []struct {
		name     string
		pools    []policy.Pool
		owners   *policy.Owners
		services []netip.Prefix
		v4, v6   uint32
	}{
		{name: "nothing: the floor", v4: NodeMaxPrefixFloor, v6: NodeMaxPrefixFloor},
		{name: "IPv4 /16 of /26 blocks and a Service range", pools: []policy.Pool{pool("10.244.0.0/16", 26)},
			services: prefixes("10.96.0.0/12"), v4: 65536 + 1024 + 1, v6: NodeMaxPrefixFloor},
		{name: "IPv6 /64 pool: capped, no overflow", pools: []policy.Pool{pool("fd00:10:244::/64", 122)},
			v4: NodeMaxPrefixFloor, v6: NodeMaxPrefixCap},
		{name: "dual stack", pools: []policy.Pool{pool("10.244.1.0/24", 26), pool("fd00:10:244::/112", 122)},
			services: prefixes("10.96.0.0/12", "fd00:96::/108", "192.0.2.0/24"),
			v4:       256 + 4 + 2, v6: 65536 + 1024 + 1},
		{name: "tiny pool: the floor", pools: []policy.Pool{pool("10.244.0.0/30", 30)}, v4: NodeMaxPrefixFloor, v6: NodeMaxPrefixFloor},
		{name: "IPv4 /8: capped", pools: []policy.Pool{pool("10.0.0.0/8", 26)}, v4: NodeMaxPrefixCap, v6: NodeMaxPrefixFloor},
		{name: "the whole address space of both families: capped", pools: []policy.Pool{pool("0.0.0.0/0", 26), pool("::/0", 122)},
			v4: NodeMaxPrefixCap, v6: NodeMaxPrefixCap},
		{name: "many pools adding up past the cap", pools: []policy.Pool{pool("10.0.0.0/14", 26), pool("10.4.0.0/14", 26), pool("10.8.0.0/14", 26), pool("10.12.0.0/14", 26)},
			v4: NodeMaxPrefixCap, v6: NodeMaxPrefixFloor},
		{name: "a block size the pool cannot have counts the pool once", pools: []policy.Pool{pool("10.244.0.0/23", 20)},
			v4: 512 + 1, v6: NodeMaxPrefixFloor},
		{name: "leftover blocks outside every pool", pools: []policy.Pool{pool("10.244.1.0/24", 26), pool("fd00:10:244::/112", 122)}, owners: leftovers,
			v4: 256 + 4 + 1 + 64, v6: 65536 + 1024 + 1 + 64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := NodePrefixLimits(tt.pools, tt.owners, tt.services)
			if got != [2]uint32{tt.v4, tt.v6} {
				t.Errorf("limits = %v, want [%d %d]", got, tt.v4, tt.v6)
			}
		})
	}
}

func TestApplyNodePrefixLimits(t *testing.T) {
	d, err := Compute(Input{NodeName: "a",
		Nodes:   []*corev1.Node{node("a", "10.0.1.1", "fd00::1"), node("b", "10.0.1.2", "fd00::2"), nodeR1},
		Configs: []*v1alpha1.BGPConfiguration{rr1Config},
		Peers: []*v1alpha1.BGPPeer{
			bgpPeer("to-rrs", func(s *v1alpha1.BGPPeerSpec) { s.PeerSelector = sel("rr=true"); s.MaxPrefix = ptr(int64(0)) }),
			bgpPeer("tor", func(s *v1alpha1.BGPPeerSpec) { s.PeerIP, s.ASNumber = "10.0.1.254", ptr(int64(65001)) }),
		}})
	if err != nil {
		t.Fatal(err)
	}
	ApplyNodePrefixLimits(&d, [2]uint32{1000, 2000})
	var got []string
	for _, s := range d.Sessions {
		got = append(got, render(s)+" retry="+s.Peer.MaxPrefixRestart.String())
	}
	want := []string{
		"10.0.1.2 mesh src=b as=64512/64512 node=b local=10.0.1.1 max=1000 " + meshTimers + " retry=1m0s",
		"10.0.1.10 rr src=to-rrs as=64512/64512 node=rr1 local=10.0.1.1 " + meshTimers + " retry=1m0s", // maxPrefix 0: no limit, as the BGPPeer says
		"10.0.1.254 external src=tor as=64512/65001 local=10.0.1.1 " + extTimers + " retry=0s",
		"fd00::2 mesh src=b as=64512/64512 node=b local=fd00::1 max=2000 " + meshTimers + " retry=1m0s",
	}
	if len(got) != len(want) {
		t.Fatalf("sessions = %q", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("session %d = %q\n want %q", i, got[i], want[i])
		}
	}
}

func TestServiceRanges(t *testing.T) {
	got := ServiceRanges([]*v1alpha1.BGPConfiguration{
		bgpConfig("default", func(s *v1alpha1.BGPConfigurationSpec) {
			s.ServiceClusterIPs = []v1alpha1.ServiceIPBlock{{CIDR: "10.96.0.0/12"}, {CIDR: "bogus"}, {CIDR: "10.96.0.1/12"}}
		}),
		bgpConfig("node.a", func(s *v1alpha1.BGPConfigurationSpec) {
			s.ServiceClusterIPs = []v1alpha1.ServiceIPBlock{{CIDR: "10.96.0.0/12"}}
			s.ServiceLoadBalancerIPs = []v1alpha1.ServiceIPBlock{{CIDR: "fd00:96::/108"}}
		}),
	})
	if len(got) != 2 || got[0].String() != "10.96.0.0/12" || got[1].String() != "fd00:96::/108" {
		t.Errorf("ServiceRanges = %v", got)
	}
}
