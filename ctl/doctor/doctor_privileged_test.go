//go:build privileged

package doctor

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/agent/agentapi"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/test/netns"
)

// healthyNode builds a node namespace that the doctor must find nothing
// wrong with: forwarding on, loose rp_filter, a VXLAN device and a pod veth
// with the right MTU, a route to the other node's block and to the local
// pod, the masquerade rule, established sessions. It returns the input the
// doctor reads and the node's namespace, for the faults to break.
func healthyNode(t *testing.T) (*Input, *netns.NS) {
	t.Helper()
	node, peer := netns.New(t, "dr-node"), netns.New(t, "dr-peer")
	must(t, netns.Veth(node, "eth0", peer, "eth0"))
	must(t, netns.AddAddr(node, "eth0", netip.MustParsePrefix("10.0.1.10/24")))
	must(t, netns.AddAddr(peer, "eth0", netip.MustParsePrefix("10.0.1.11/24")))
	for _, cmd := range [][]string{
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"},
		{"ip", "link", "add", "vxlan.rhizome", "type", "vxlan", "id", "4096", "dstport", "4789", "dev", "eth0", "nolearning"},
		{"ip", "link", "set", "vxlan.rhizome", "mtu", "1450", "up"},
		{"ip", "link", "add", "rzpod1", "mtu", "1450", "type", "veth", "peer", "name", "podside1"},
		{"ip", "link", "set", "rzpod1", "up"},
		{"sysctl", "-qw", "net.ipv4.conf.rzpod1.proxy_arp=1"},
		{"ip", "route", "add", "10.244.0.5/32", "dev", "rzpod1", "scope", "link", "proto", "static"},
		{"ip", "route", "add", "10.244.1.0/26", "via", "10.0.1.11", "dev", "eth0", "proto", "114"},
		{"ip", "route", "add", "blackhole", "10.244.0.0/26", "proto", "114"},
		{"nft", "add table inet rhizome-nat; add chain inet rhizome-nat post { type nat hook postrouting priority srcnat; }; add rule inet rhizome-nat post ip saddr 10.244.0.0/16 masquerade"},
	} {
		if _, err := node.Exec(context.Background(), cmd[0], cmd[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	k, err := NewKernel(node.Path())
	must(t, err)
	cniDir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(cniDir, "10-rhizome.conflist"), []byte(`{"cniVersion":"1.0.0","name":"rhizome","plugins":[{"type":"rhizome"},{"type":"portmap"}]}`), 0o644))
	in := &Input{
		Node:       "node-1",
		Kernel:     k,
		CNIConfDir: cniDir,
		// Probes need a second node with a pod; the lab test sends them.
		NoProbes: true,
		Agent: &agentapi.StatusResponse{
			NodeName: "node-1", AsNumber: 64512, NodeAddress: "10.0.1.10/24", UnderlayInterface: "eth0", UnderlayMtu: 1500,
			PodMtu: 1450, RouteProtocol: 114, RouteTable: 254,
			Blocks:   []string{"10.244.0.0/26"},
			Devices:  []*agentapi.Device{{Name: "vxlan.rhizome", Type: "vxlan", Mtu: 1450}},
			Sessions: []*agentapi.Session{{Peer: "10.0.1.11", PeerAs: 64512, Kind: "mesh", State: "Established"}},
		},
		Cluster: &Cluster{
			Pools: []v1alpha1.IPPool{{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.0/16", NATOutgoing: true, VXLANMode: v1alpha1.EncapCrossSubnet}}},
			Blocks: []v1alpha1.IPAMBlock{
				{Spec: v1alpha1.IPAMBlockSpec{CIDR: "10.244.0.0/26", Affinity: "node-1", Allocations: []v1alpha1.IPAMAllocation{{Address: "10.244.0.5", Handle: "c.eth0", Namespace: "default", Pod: "web", Node: "node-1"}}}},
				{Spec: v1alpha1.IPAMBlockSpec{CIDR: "10.244.1.0/26", Affinity: "node-2"}},
			},
		},
	}
	return in, node
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestHealthyNodeHasNoFindings(t *testing.T) {
	netns.RequireRoot(t)
	in, _ := healthyNode(t)
	for range 2 {
		if f := Run(context.Background(), *in); len(f) != 0 {
			t.Fatalf("findings on a healthy node: %v", f)
		}
	}
}

// TestEachFaultIsNamed injects one fault at a time into a healthy node and
// checks that the doctor names it (and only it).
func TestEachFaultIsNamed(t *testing.T) {
	netns.RequireRoot(t)
	sh := func(node *netns.NS, args ...string) {
		if out, err := node.Exec(context.Background(), args[0], args[1:]...); err != nil {
			panic(string(out) + err.Error()) // a broken fixture, reported by the subtest
		}
	}
	session := func(in *Input, peer, state, lastErr string) {
		in.Agent.Sessions = []*agentapi.Session{{Peer: peer, PeerAs: 65001, Kind: "external", State: state, LastError: lastErr}}
	}
	cases := []struct {
		name   string
		inject func(*Input, *netns.NS)
		check  string
		want   string
	}{
		{"forwarding off", func(_ *Input, n *netns.NS) { sh(n, "sysctl", "-qw", "net.ipv4.ip_forward=0") },
			"forwarding", "IPv4 forwarding is off"},
		{"strict rp_filter", func(_ *Input, n *netns.NS) { sh(n, "sysctl", "-qw", "net.ipv4.conf.eth0.rp_filter=1") },
			"rp_filter", "strict reverse-path filtering is in effect on eth0"},
		// The kernel caps a VXLAN device at its underlay's MTU minus 50 when
		// it is created; the underlay shrinking later is what breaks it.
		{"tunnel MTU too large", func(_ *Input, n *netns.NS) {
			sh(n, "ip", "link", "set", "eth0", "mtu", "1400")
			sh(n, "ip", "link", "set", "rzpod1", "mtu", "1350")
		}, "mtu", "vxlan.rhizome has MTU 1450 but eth0 (MTU 1400) carries only 1350"},
		{"pod MTU too large", func(_ *Input, n *netns.NS) { sh(n, "ip", "link", "set", "rzpod1", "mtu", "1500") },
			"mtu", "pod interfaces have an MTU larger than the path allows (1450): rzpod1 (1500)"},
		{"wrong AS", func(in *Input, _ *netns.NS) {
			session(in, "10.0.1.11", "Active", "notification received: OPEN Message Error / Bad Peer AS (AS number mismatch: check the peer's asNumber on both sides)")
		}, "bgp", "because of a wrong AS number"},
		{"wrong password", func(in *Input, _ *netns.NS) {
			session(in, "10.0.1.11", "Active", "TCP MD5 password mismatch: this node's kernel dropped 4 segments")
		}, "bgp", "because of a TCP MD5 password problem"},
		{"hold timer expired", func(in *Input, _ *netns.NS) {
			session(in, "10.0.1.11", "Active", "hold timer expired: no message from the peer within the hold time")
		}, "bgp", "because its hold timer expired"},
		{"port 179 refused", func(in *Input, _ *netns.NS) { session(in, "10.0.1.11", "Active", "") },
			"bgp", "nothing listens on 10.0.1.11:179 (connection refused)"},
		{"peer unreachable", func(in *Input, _ *netns.NS) { session(in, "192.0.2.50", "Active", "") },
			"bgp", "192.0.2.50 is unreachable from this node"},
		{"overlapping pools", func(in *Input, _ *netns.NS) {
			in.Cluster.Pools = append(in.Cluster.Pools, v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "extra"}, Spec: v1alpha1.IPPoolSpec{CIDR: "10.244.128.0/17"}})
		}, "pools", "pools default (10.244.0.0/16) and extra (10.244.128.0/17) overlap"},
		{"masquerade missing", func(_ *Input, n *netns.NS) { sh(n, "nft", "delete", "table", "inet", "rhizome-nat") },
			"nat", "set natOutgoing but nftables table inet rhizome-nat has no masquerade rule"},
		{"peer block missing", func(_ *Input, n *netns.NS) { sh(n, "ip", "route", "del", "10.244.1.0/26") },
			"peer-routes", "no route to other nodes' blocks 10.244.1.0/26 (node node-2)"},
		{"foreign route in the way", func(in *Input, n *netns.NS) {
			sh(n, "ip", "route", "replace", "10.244.1.0/26", "via", "10.0.1.11", "dev", "eth0", "proto", "static")
			in.Agent.Conflicts = []string{"10.244.1.0/26"}
		}, "route-conflict", "a route for 10.244.1.0/26 of protocol static is in the kernel"},
		{"nftables forward policy drop", func(_ *Input, n *netns.NS) {
			sh(n, "nft", "add table inet fw; add chain inet fw fwchain { type filter hook forward priority 0; policy drop; }; add rule inet fw fwchain ct state established,related accept; add rule inet fw fwchain tcp dport 22 accept")
		}, "firewall", "the policy drop of chain inet fw fwchain"},
		{"nftables drop rule for pod traffic", func(_ *Input, n *netns.NS) {
			sh(n, "nft", "add table ip fw; add chain ip fw fwchain { type filter hook forward priority 10; }; add rule ip fw fwchain oifname \"rz*\" ip saddr 10.244.0.0/16 counter drop")
		}, "firewall", "rule handle"},
		{"iptables FORWARD drop", func(_ *Input, n *netns.NS) { sh(n, "iptables", "-A", "FORWARD", "-s", "10.244.0.0/16", "-j", "DROP") },
			"firewall", "chain ip filter FORWARD"},
		{"pod interface without proxy ARP", func(_ *Input, n *netns.NS) { sh(n, "sysctl", "-qw", "net.ipv4.conf.rzpod1.proxy_arp=0") },
			"pod-interfaces", "rzpod1 have proxy ARP off"},
		{"another CNI configuration first", func(in *Input, _ *netns.NS) {
			must(t, os.WriteFile(filepath.Join(in.CNIConfDir, "05-cilium.conflist"), []byte(`{"cniVersion":"1.0.0","name":"cilium","plugins":[{"type":"cilium-cni"}]}`), 0o644))
		}, "cni-config", "05-cilium.conflist sorts before 10-rhizome.conflist"},
		{"pool without natOutgoing, no external peer", func(in *Input, _ *netns.NS) { in.Cluster.Pools[0].Spec.NATOutgoing = false },
			"return-path", "pool default (10.244.0.0/16) has no natOutgoing"},
	}
	if _, err := os.Stat("/sys/module/ipip"); err != nil {
		// This kernel has no ipip module loaded; unless it could load one,
		// an IPIP pool is a real positive case.
		if exec.Command("modprobe", "-n", "ipip").Run() != nil {
			cases = append(cases, struct {
				name   string
				inject func(*Input, *netns.NS)
				check  string
				want   string
			}{"IPIP pool on a kernel without ipip", func(in *Input, _ *netns.NS) {
				in.Cluster.Pools = append(in.Cluster.Pools, v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "tunnelled"}, Spec: v1alpha1.IPPoolSpec{CIDR: "10.245.0.0/16", IPIPMode: v1alpha1.EncapAlways, NATOutgoing: true}})
			}, "kernel-modules", "pool(s) tunnelled use ipip encapsulation, but this kernel has no ipip module"})
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in, node := healthyNode(t)
			c.inject(in, node)
			got := Run(context.Background(), *in)
			if len(got) != 1 || got[0].Check != c.check || !strings.Contains(got[0].Message, c.want) {
				t.Fatalf("findings %v\nwant exactly one [%s] containing %q", got, c.check, c.want)
			}
		})
	}
}

// A pod whose host route is gone is named twice: as a pod without a route
// back (from the allocations) and as a veth without its route (from the
// interfaces).
func TestPodRouteMissing(t *testing.T) {
	netns.RequireRoot(t)
	in, node := healthyNode(t)
	if _, err := node.Exec(context.Background(), "ip", "route", "del", "10.244.0.5/32"); err != nil {
		t.Fatal(err)
	}
	got := Run(context.Background(), *in)
	if len(got) != 2 || got[0].Check != "pod-interfaces" || got[1].Check != "pod-routes" || !strings.Contains(got[0].Message, "rzpod1 have no host route") {
		t.Fatalf("findings %v", got)
	}
	if Worst(got) != Error {
		t.Fatalf("worst severity %q", Worst(got))
	}
}

func TestAgentAndClusterUnavailable(t *testing.T) {
	netns.RequireRoot(t)
	in, _ := healthyNode(t)
	in.Agent, in.AgentErr, in.Cluster = nil, context.DeadlineExceeded, nil
	got := Run(context.Background(), *in)
	var checks []string
	for _, f := range got {
		checks = append(checks, f.Check)
	}
	if strings.Join(checks, ",") != "agent,cluster" {
		t.Fatalf("findings %v, want one about the agent and one about the cluster", got)
	}
}
