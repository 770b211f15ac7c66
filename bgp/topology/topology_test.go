package topology

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/bfd"
	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

func node(name, v4, v6 string, labels ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}}}
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		n.Labels[k] = v
	}
	for _, a := range []string{v4, v6} {
		if a != "" {
			n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
		}
	}
	n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: name})
	return n
}

func bgpConfig(name string, mut func(*v1alpha1.BGPConfigurationSpec)) *v1alpha1.BGPConfiguration {
	c := &v1alpha1.BGPConfiguration{ObjectMeta: metav1.ObjectMeta{Name: name}}
	mut(&c.Spec)
	return c
}

func bgpPeer(name string, mut func(*v1alpha1.BGPPeerSpec)) *v1alpha1.BGPPeer {
	p := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name}}
	p.Spec.SourceAddress = v1alpha1.SourceAddressNodeIP
	mut(&p.Spec)
	return p
}

func ptr[T any](v T) *T { return &v }

func dur(s string) *metav1.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return &metav1.Duration{Duration: d}
}

func sel(kv string) *metav1.LabelSelector {
	k, v, _ := strings.Cut(kv, "=")
	return &metav1.LabelSelector{MatchLabels: map[string]string{k: v}}
}

func secrets(m map[string]string) SecretFunc {
	return func(name, key string) (string, error) {
		v, ok := m[name+"/"+key]
		if !ok {
			return "", errors.New("not found")
		}
		return v, nil
	}
}

// render shows a session's interesting fields on one line.
func render(s Session) string {
	p := s.Peer
	f := []string{PeerKey(p), string(s.Kind), "src=" + s.Source, fmt.Sprintf("as=%d/%d", p.LocalASN, p.ASN)}
	if s.Node != "" {
		f = append(f, "node="+s.Node)
	}
	if p.LocalAddress.IsValid() {
		f = append(f, "local="+p.LocalAddress.String())
	}
	if p.Passive {
		f = append(f, "passive")
	}
	if p.RouteReflectorClient {
		f = append(f, "rr-client="+p.RouteReflectorClusterID.String())
	}
	if p.Password != "" {
		f = append(f, "md5="+p.Password)
	}
	if p.EBGPMultihop != 0 {
		f = append(f, fmt.Sprintf("multihop=%d", p.EBGPMultihop))
	}
	if p.TTLSecurityHops != 0 {
		f = append(f, fmt.Sprintf("gtsm=%d", p.TTLSecurityHops))
	}
	if p.MaxPrefixes != 0 {
		f = append(f, fmt.Sprintf("max=%d", p.MaxPrefixes))
	}
	t := p.Timers
	f = append(f, fmt.Sprintf("timers=%s/%s/%s", t.Keepalive, holdString(t.Hold), t.ConnectRetry))
	gr := p.GracefulRestart
	if !gr.Enabled {
		f = append(f, "gr=off")
	} else if gr.RestartTime != DefaultRestart || gr.LongLivedStaleTime != 0 {
		f = append(f, fmt.Sprintf("gr=%s/%s", gr.RestartTime, gr.LongLivedStaleTime))
	}
	if len(s.Import) > 0 || len(s.Export) > 0 {
		f = append(f, fmt.Sprintf("filters=%d/%d", len(s.Import), len(s.Export)))
	}
	if b := s.BFD; b != nil {
		f = append(f, fmt.Sprintf("bfd=%s/%sx%d", b.MinTx, b.MinRx, b.Multiplier))
	}
	if s.NotStarted != "" {
		f = append(f, "NOT STARTED: "+s.NotStarted)
	}
	return strings.Join(f, " ")
}

func holdString(d time.Duration) string {
	if d == bgp.HoldTimeDisabled {
		return "off"
	}
	return d.String()
}

var (
	nodeA  = node("a", "10.0.1.1", "", "rack=a")
	nodeB  = node("b", "10.0.1.2", "", "rack=a")
	nodeC  = node("c", "10.0.2.3", "", "rack=b")
	nodeR1 = node("rr1", "10.0.1.10", "", "rack=a", "rr=true")
	nodeR2 = node("rr2", "10.0.2.10", "", "rack=b", "rr=true")

	meshOff   = bgpConfig("default", func(s *v1alpha1.BGPConfigurationSpec) { s.NodeToNodeMesh = ptr(false) })
	rr1Config = bgpConfig("node.rr1", func(s *v1alpha1.BGPConfigurationSpec) { s.RouteReflectorClusterID = "224.0.0.1" })
	rr2Config = bgpConfig("node.rr2", func(s *v1alpha1.BGPConfigurationSpec) { s.RouteReflectorClusterID = "224.0.0.1" })
	toRRs     = bgpPeer("to-rrs", func(s *v1alpha1.BGPPeerSpec) { s.PeerSelector = sel("rr=true") })
	tor       = bgpPeer("tor", func(s *v1alpha1.BGPPeerSpec) {
		s.PeerIP = "10.0.1.254"
		s.ASNumber = ptr(int64(65001))
		s.NodeSelector = sel("rack=a")
		s.Password = &v1alpha1.BGPPassword{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "bgp"}, Key: "tor"}}
		s.ImportFilters = []v1alpha1.FilterRule{{CIDR: "0.0.0.0/0", MatchOperator: v1alpha1.MatchEqual, Action: v1alpha1.FilterAccept}}
	})
)

const (
	meshTimers = "timers=30s/1m30s/5s"
	extTimers  = "timers=30s/1m30s/0s"
)

func TestCompute(t *testing.T) {
	tests := []struct {
		name     string
		in       Input
		want     []string
		problems []string
		global   string
	}{
		{
			name:   "full mesh by default",
			in:     Input{NodeName: "b", Nodes: []*corev1.Node{nodeA, nodeB, nodeC}},
			global: "64512 10.0.1.2 179",
			want: []string{
				"10.0.1.1 mesh src=a as=64512/64512 node=a local=10.0.1.2 passive " + meshTimers,
				"10.0.2.3 mesh src=c as=64512/64512 node=c local=10.0.1.2 " + meshTimers,
			},
		},
		{
			name: "route reflector client with the mesh off",
			in: Input{NodeName: "a", Nodes: []*corev1.Node{nodeA, nodeB, nodeR1, nodeR2},
				Configs: []*v1alpha1.BGPConfiguration{meshOff, rr1Config, rr2Config}, Peers: []*v1alpha1.BGPPeer{toRRs}},
			want: []string{
				"10.0.1.10 rr src=to-rrs as=64512/64512 node=rr1 local=10.0.1.1 " + meshTimers,
				"10.0.2.10 rr src=to-rrs as=64512/64512 node=rr2 local=10.0.1.1 " + meshTimers,
			},
		},
		{
			name: "route reflector: clients, and its peer reflector as non-client",
			in: Input{NodeName: "rr1", Nodes: []*corev1.Node{nodeA, nodeB, nodeR1, nodeR2},
				Configs: []*v1alpha1.BGPConfiguration{meshOff, rr1Config, rr2Config}, Peers: []*v1alpha1.BGPPeer{toRRs}},
			want: []string{
				"10.0.1.1 rr src=to-rrs as=64512/64512 node=a local=10.0.1.10 passive rr-client=224.0.0.1 " + meshTimers,
				"10.0.1.2 rr src=to-rrs as=64512/64512 node=b local=10.0.1.10 passive rr-client=224.0.0.1 " + meshTimers,
				"10.0.2.10 rr src=to-rrs as=64512/64512 node=rr2 local=10.0.1.10 " + meshTimers,
			},
		},
		{
			name: "mesh and a reflector together: one session, the reflector's",
			in: Input{NodeName: "a", Nodes: []*corev1.Node{nodeA, nodeB, nodeR1},
				Configs: []*v1alpha1.BGPConfiguration{rr1Config}, Peers: []*v1alpha1.BGPPeer{toRRs}},
			want: []string{
				"10.0.1.2 mesh src=b as=64512/64512 node=b local=10.0.1.1 " + meshTimers,
				"10.0.1.10 rr src=to-rrs as=64512/64512 node=rr1 local=10.0.1.1 " + meshTimers,
			},
		},
		{
			name: "ToR with MD5 for the rack",
			in: Input{NodeName: "a", Nodes: []*corev1.Node{nodeA, nodeC}, Configs: []*v1alpha1.BGPConfiguration{meshOff},
				Peers: []*v1alpha1.BGPPeer{tor}, Secret: secrets(map[string]string{"bgp/tor": "s3cret"})},
			want: []string{"10.0.1.254 external src=tor as=64512/65001 local=10.0.1.1 md5=s3cret " + extTimers + " filters=1/0"},
		},
		{
			name: "ToR whose Secret is missing is not started",
			in: Input{NodeName: "a", Nodes: []*corev1.Node{nodeA}, Configs: []*v1alpha1.BGPConfiguration{meshOff},
				Peers: []*v1alpha1.BGPPeer{tor}, Secret: secrets(nil)},
			want: []string{"10.0.1.254 external src=tor as=64512/65001 local=10.0.1.1 " + extTimers + " filters=1/0 NOT STARTED: BGPPeer tor: password: Secret bgp key tor: not found"},
		},
		{
			name: "ToR of another rack",
			in: Input{NodeName: "c", Nodes: []*corev1.Node{nodeA, nodeC}, Configs: []*v1alpha1.BGPConfiguration{meshOff},
				Peers: []*v1alpha1.BGPPeer{tor}, Secret: secrets(map[string]string{"bgp/tor": "x"})},
		},
		{
			name: "every external option",
			in: Input{NodeName: "a", Nodes: []*corev1.Node{nodeA}, Peers: []*v1alpha1.BGPPeer{
				bgpPeer("far", func(s *v1alpha1.BGPPeerSpec) {
					s.PeerIP = "192.0.2.1:1179"
					s.ASNumber = ptr(int64(65002))
					s.Node = "a"
					s.SourceAddress = v1alpha1.SourceAddressNone
					s.EBGPMultihop = ptr(int32(4))
					s.Passive = true
					s.KeepaliveTime, s.HoldTime, s.ConnectRetryTime = dur("3s"), dur("9s"), dur("5s")
					s.MaxPrefix = ptr(int64(1000))
					s.GracefulRestart = &v1alpha1.GracefulRestart{RestartTime: dur("30s"), LongLivedStaleTime: dur("1h")}
					s.ExportFilters = []v1alpha1.FilterRule{{CIDR: "10.96.0.0/12", Action: v1alpha1.FilterReject}}
				}),
				bgpPeer("gtsm", func(s *v1alpha1.BGPPeerSpec) {
					s.PeerIP = "fd00::1"
					s.ASNumber = ptr(int64(65003))
					s.TTLSecurity = ptr(int32(1))
					s.HoldTime = dur("0s")
					s.GracefulRestart = &v1alpha1.GracefulRestart{Enabled: ptr(false)}
				}),
			}},
			want: []string{
				"192.0.2.1:1179 external src=far as=64512/65002 passive multihop=4 max=1000 timers=3s/9s/5s gr=30s/1h0m0s filters=0/1",
				"fd00::1 external src=gtsm as=64512/65003 gtsm=1 timers=30s/off/0s gr=off",
			},
		},
		{
			name: "per-node AS, port and timers",
			in: Input{NodeName: "a", Nodes: []*corev1.Node{nodeA, nodeB}, Configs: []*v1alpha1.BGPConfiguration{
				bgpConfig("default", func(s *v1alpha1.BGPConfigurationSpec) { s.KeepaliveTime, s.HoldTime = dur("10s"), dur("30s") }),
				bgpConfig("node.a", func(s *v1alpha1.BGPConfigurationSpec) { s.ASNumber = ptr(int64(65010)) }),
				bgpConfig("node.b", func(s *v1alpha1.BGPConfigurationSpec) { s.ListenPort = ptr(int32(1179)) }),
			}},
			global: "65010 10.0.1.1 179",
			want:   []string{"10.0.1.2:1179 mesh src=b as=65010/64512 node=b local=10.0.1.1 timers=10s/30s/5s"},
		},
		{
			name: "dual stack mesh, published address wins, router ID override",
			in: Input{NodeName: "a", RouterID: netip.MustParseAddr("192.0.2.99"),
				Nodes: []*corev1.Node{node("a", "10.0.1.1", "fd00::1"), node("b", "10.0.1.2", "fd00::2")},
				RhizomeNodes: []*v1alpha1.RhizomeNode{{ObjectMeta: metav1.ObjectMeta{Name: "b"},
					Spec: v1alpha1.RhizomeNodeSpec{IPv4Address: "10.0.9.2/24"}}}},
			global: "64512 192.0.2.99 179",
			want: []string{
				"10.0.9.2 mesh src=b as=64512/64512 node=b local=10.0.1.1 " + meshTimers,
				"fd00::2 mesh src=b as=64512/64512 node=b local=fd00::1 " + meshTimers,
			},
		},
		{
			name: "agent-detected address of this node",
			in:   Input{NodeName: "a", NodeIPv4: netip.MustParseAddr("10.0.7.1"), Nodes: []*corev1.Node{nodeA, nodeB}},
			want: []string{"10.0.1.2 mesh src=b as=64512/64512 node=b local=10.0.7.1 passive " + meshTimers},
		},
		{
			name: "BFD on the mesh where both ends have it on",
			in: Input{NodeName: "b", Nodes: []*corev1.Node{nodeA, nodeB, nodeC}, Configs: []*v1alpha1.BGPConfiguration{
				bgpConfig("default", func(s *v1alpha1.BGPConfigurationSpec) {
					s.NodeToNodeMeshBFD = &v1alpha1.BFD{Enabled: ptr(true), MinTxInterval: dur("100ms")}
				}),
				bgpConfig("node.c", func(s *v1alpha1.BGPConfigurationSpec) {
					s.NodeToNodeMeshBFD = &v1alpha1.BFD{Enabled: ptr(false)}
				}),
			}},
			want: []string{
				"10.0.1.1 mesh src=a as=64512/64512 node=a local=10.0.1.2 passive " + meshTimers + " bfd=100ms/300msx3",
				"10.0.2.3 mesh src=c as=64512/64512 node=c local=10.0.1.2 " + meshTimers,
			},
		},
		{
			name: "BFD on external and reflector sessions from their BGPPeer, not from the mesh",
			in: Input{NodeName: "a", Nodes: []*corev1.Node{nodeA, nodeR1},
				Configs: []*v1alpha1.BGPConfiguration{
					rr1Config,
					bgpConfig("default", func(s *v1alpha1.BGPConfigurationSpec) {
						s.NodeToNodeMesh = ptr(false)
						s.NodeToNodeMeshBFD = &v1alpha1.BFD{Enabled: ptr(true)}
					}),
				},
				Peers: []*v1alpha1.BGPPeer{
					bgpPeer("tor", func(s *v1alpha1.BGPPeerSpec) {
						s.PeerIP, s.ASNumber = "10.0.1.254", ptr(int64(65001))
						s.BFD = &v1alpha1.BFD{Enabled: ptr(true), Multiplier: ptr(int32(5)), MinRxInterval: dur("1s")}
					}),
					bgpPeer("to-rrs", func(s *v1alpha1.BGPPeerSpec) {
						s.PeerSelector = sel("rr=true")
						s.BFD = &v1alpha1.BFD{Enabled: ptr(true)}
					}),
					bgpPeer("off", func(s *v1alpha1.BGPPeerSpec) {
						s.PeerIP, s.ASNumber = "10.0.1.253", ptr(int64(65001))
						s.BFD = &v1alpha1.BFD{Enabled: ptr(false), Multiplier: ptr(int32(5))}
					}),
					bgpPeer("far", func(s *v1alpha1.BGPPeerSpec) {
						s.PeerIP, s.ASNumber = "192.0.2.1", ptr(int64(65002))
						s.EBGPMultihop = ptr(int32(3))
						s.BFD = &v1alpha1.BFD{Enabled: ptr(true)}
					}),
				}},
			want: []string{
				"10.0.1.10 rr src=to-rrs as=64512/64512 node=rr1 local=10.0.1.1 " + meshTimers + " bfd=300ms/300msx3",
				"10.0.1.253 external src=off as=64512/65001 local=10.0.1.1 " + extTimers,
				"10.0.1.254 external src=tor as=64512/65001 local=10.0.1.1 " + extTimers + " bfd=300ms/1sx5",
				"192.0.2.1 external src=far as=64512/65002 local=10.0.1.1 multihop=3 " + extTimers,
			},
			problems: []string{"BGPPeer far: BFD is single-hop only and the peer is 3 hops away (ebgpMultihop); BFD not started"},
		},
		{
			name: "BFD values that slipped past the API server: reported, defaults used",
			in: Input{NodeName: "a", Nodes: []*corev1.Node{nodeA}, Peers: []*v1alpha1.BGPPeer{
				bgpPeer("tor", func(s *v1alpha1.BGPPeerSpec) {
					s.PeerIP, s.ASNumber = "10.0.1.254", ptr(int64(65001))
					s.BFD = &v1alpha1.BFD{Enabled: ptr(true), Multiplier: ptr(int32(0)), MinTxInterval: dur("1ms"), MinRxInterval: dur("-1s")}
				}),
			}},
			want: []string{"10.0.1.254 external src=tor as=64512/65001 local=10.0.1.1 " + extTimers + " bfd=300ms/300msx3"},
			problems: []string{
				"BGPPeer tor: BFD minTxInterval 1ms is outside 10ms-1m0s; using 300ms",
				"BGPPeer tor: BFD minRxInterval -1s is outside 10ms-1m0s; using 300ms",
				"BGPPeer tor: BFD multiplier 0 is outside 1-255; using 3",
			},
		},
		{
			name: "nodeMeshTTLSecurity: the mesh and reflector sessions, not external peers",
			in: Input{NodeName: "a", Nodes: []*corev1.Node{nodeA, nodeB, nodeR1},
				Configs: []*v1alpha1.BGPConfiguration{rr1Config,
					bgpConfig("default", func(s *v1alpha1.BGPConfigurationSpec) { s.NodeMeshTTLSecurity = ptr(int32(2)) }),
				},
				Peers: []*v1alpha1.BGPPeer{toRRs,
					bgpPeer("tor", func(s *v1alpha1.BGPPeerSpec) { s.PeerIP, s.ASNumber = "10.0.1.254", ptr(int64(65001)) }),
				}},
			want: []string{
				"10.0.1.2 mesh src=b as=64512/64512 node=b local=10.0.1.1 gtsm=2 " + meshTimers,
				"10.0.1.10 rr src=to-rrs as=64512/64512 node=rr1 local=10.0.1.1 gtsm=2 " + meshTimers,
				"10.0.1.254 external src=tor as=64512/65001 local=10.0.1.1 " + extTimers,
			},
		},
		{
			name: "nodeMeshTTLSecurity: a reflector BGPPeer's own ttlSecurity wins",
			in: Input{NodeName: "a", Nodes: []*corev1.Node{nodeA, nodeR1},
				Configs: []*v1alpha1.BGPConfiguration{rr1Config,
					bgpConfig("default", func(s *v1alpha1.BGPConfigurationSpec) { s.NodeMeshTTLSecurity = ptr(int32(1)) }),
				},
				Peers: []*v1alpha1.BGPPeer{bgpPeer("to-rrs", func(s *v1alpha1.BGPPeerSpec) {
					s.PeerSelector = sel("rr=true")
					s.TTLSecurity = ptr(int32(3))
				})}},
			want: []string{"10.0.1.10 rr src=to-rrs as=64512/64512 node=rr1 local=10.0.1.1 gtsm=3 " + meshTimers},
		},
		{
			name: "nodeMeshTTLSecurity gives way to a reflector BGPPeer's ebgpMultihop; a per-node value is a problem",
			in: Input{NodeName: "a", Nodes: []*corev1.Node{nodeA, nodeR1},
				Configs: []*v1alpha1.BGPConfiguration{rr1Config,
					bgpConfig("default", func(s *v1alpha1.BGPConfigurationSpec) {
						s.NodeToNodeMesh, s.NodeMeshTTLSecurity = ptr(false), ptr(int32(1))
					}),
					bgpConfig("node.a", func(s *v1alpha1.BGPConfigurationSpec) { s.NodeMeshTTLSecurity = ptr(int32(5)) }),
				},
				Peers: []*v1alpha1.BGPPeer{bgpPeer("to-rrs", func(s *v1alpha1.BGPPeerSpec) {
					s.PeerSelector = sel("rr=true")
					s.EBGPMultihop = ptr(int32(3))
				})}},
			want:     []string{"10.0.1.10 rr src=to-rrs as=64512/64512 node=rr1 local=10.0.1.1 multihop=3 " + meshTimers},
			problems: []string{"nodeMeshTTLSecurity is cluster-wide: set it in BGPConfiguration default; the per-node value is ignored"},
		},
		{
			name: "nodeMeshTTLSecurity out of range past the API server: off, reported",
			in: Input{NodeName: "a", Nodes: []*corev1.Node{nodeA, nodeB}, Configs: []*v1alpha1.BGPConfiguration{
				bgpConfig("default", func(s *v1alpha1.BGPConfigurationSpec) { s.NodeMeshTTLSecurity = ptr(int32(300)) }),
			}},
			want:     []string{"10.0.1.2 mesh src=b as=64512/64512 node=b local=10.0.1.1 " + meshTimers},
			problems: []string{"nodeMeshTTLSecurity 300 is not a number of hops 1-254; TTL security is off on the sessions between nodes"},
		},
		{
			name: "problems: duplicate peer, bad selector, bad filter, peer naming this node",
			in: Input{NodeName: "a", Nodes: []*corev1.Node{nodeA, nodeB}, Configs: []*v1alpha1.BGPConfiguration{meshOff},
				Peers: []*v1alpha1.BGPPeer{
					bgpPeer("p1", func(s *v1alpha1.BGPPeerSpec) { s.PeerIP, s.ASNumber = "10.0.1.2", ptr(int64(64512)) }),
					bgpPeer("p2", func(s *v1alpha1.BGPPeerSpec) { s.PeerIP, s.ASNumber = "10.0.1.2", ptr(int64(64512)) }),
					bgpPeer("p3", func(s *v1alpha1.BGPPeerSpec) {
						s.PeerIP, s.ASNumber = "10.9.9.9", ptr(int64(1))
						s.NodeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "x", Operator: "Bogus"}}}
					}),
					bgpPeer("p4", func(s *v1alpha1.BGPPeerSpec) {
						s.PeerIP, s.ASNumber = "10.9.9.8", ptr(int64(1))
						s.ImportFilters = []v1alpha1.FilterRule{{CIDR: "10.0.0.1/8", Action: v1alpha1.FilterAccept}}
					}),
					bgpPeer("p5", func(s *v1alpha1.BGPPeerSpec) { s.PeerIP, s.ASNumber = "10.0.1.1", ptr(int64(1)) }),
				}},
			want: []string{
				"10.0.1.2 external src=p1 as=64512/64512 node=b local=10.0.1.1 " + extTimers,
				"10.9.9.8 external src=p4 as=64512/1 local=10.0.1.1 " + extTimers + " NOT STARTED: BGPPeer p4: importFilters: filter rule 0: cidr 10.0.0.1/8 has host bits set",
			},
			problems: []string{
				"BGPPeer p2: the session to 10.0.1.2 is already configured by BGPPeer p1; ignored",
				`BGPPeer p3: nodeSelector: "Bogus" is not a valid label selector operator; ignored`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 2 { // pure and deterministic: the same twice
				d, err := Compute(tt.in)
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, s := range d.Sessions {
					got = append(got, render(s))
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("sessions (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff(tt.problems, d.Problems); diff != "" {
					t.Errorf("problems (-want +got):\n%s", diff)
				}
				if tt.global != "" {
					if g := fmt.Sprintf("%d %s %d", d.Global.ASN, d.Global.RouterID, d.Global.ListenPort); g != tt.global {
						t.Errorf("global = %s, want %s", g, tt.global)
					}
				}
			}
		})
	}
}

func TestComputeErrors(t *testing.T) {
	if _, err := Compute(Input{NodeName: "x", Nodes: []*corev1.Node{nodeA}}); err == nil || !strings.Contains(err.Error(), "node x is not among") {
		t.Errorf("unknown node: %v", err)
	}
	v6only := node("v6", "", "fd00::9")
	if _, err := Compute(Input{NodeName: "v6", Nodes: []*corev1.Node{v6only}}); err == nil || !strings.Contains(err.Error(), "--router-id") {
		t.Errorf("no IPv4: %v", err)
	}
	if d, err := Compute(Input{NodeName: "v6", RouterID: netip.MustParseAddr("192.0.2.1"), Nodes: []*corev1.Node{v6only}}); err != nil || d.Global.RouterID.String() != "192.0.2.1" {
		t.Errorf("router ID override on an IPv6-only node: %v %v", d.Global, err)
	}
}

func TestMergeConfig(t *testing.T) {
	def := &v1alpha1.BGPConfigurationSpec{
		ASNumber:          ptr(int64(64600)),
		ServiceClusterIPs: []v1alpha1.ServiceIPBlock{{CIDR: "10.96.0.0/12"}},
		Communities:       []v1alpha1.Community{"64600:100", "64600:1:2", "70000:1"},
		GracefulRestart:   &v1alpha1.GracefulRestart{RestartTime: dur("60s")},
		NodeToNodeMeshBFD: &v1alpha1.BFD{Enabled: ptr(true), MinTxInterval: dur("100ms")},
		PrefixAdvertisements: []v1alpha1.PrefixAdvertisement{
			{CIDR: "10.244.0.0/16", Communities: []v1alpha1.Community{"65000:7"}},
		},
	}
	nodeSpec := &v1alpha1.BGPConfigurationSpec{
		ServiceLoadBalancerIPs:  []v1alpha1.ServiceIPBlock{{CIDR: "192.0.2.0/24"}, {CIDR: "bogus"}},
		GracefulRestart:         &v1alpha1.GracefulRestart{LongLivedStaleTime: dur("1h")},
		RouteReflectorClusterID: "224.0.0.9",
		RouteProtocol:           ptr(int32(200)),
		NodeToNodeMeshBFD:       &v1alpha1.BFD{Multiplier: ptr(int32(5)), MinRxInterval: dur("5ms")},
	}
	c, problems := MergeConfig(def, nodeSpec)
	want := Config{
		ASN: 64600, Mesh: true, ListenPort: 179, Keepalive: 30 * time.Second, Hold: 90 * time.Second,
		GracefulRestart:   bgp.GracefulRestart{Enabled: true, RestartTime: time.Minute, LongLivedStaleTime: time.Hour},
		MeshBFD:           BFDConfig{Enabled: true, Timers: bfd.Timers{MinTx: 100 * time.Millisecond, MinRx: 300 * time.Millisecond, Multiplier: 5}},
		ClusterID:         netip.MustParseAddr("224.0.0.9"),
		Services:          []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
		Communities:       []uint32{64600<<16 | 100},
		LargeCommunities:  []bgp.LargeCommunity{{Global: 64600, Local1: 1, Local2: 2}},
		PrefixCommunities: []PrefixCommunities{{CIDR: netip.MustParsePrefix("10.244.0.0/16"), Communities: []uint32{65000<<16 | 7}}},
		RouteProtocol:     200, RouteTable: 254,
	}
	if diff := cmp.Diff(want, c, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("merged (-want +got):\n%s", diff)
	}
	wantProblems := []string{
		`community "70000:1" is neither AS:value (each 0-65535) nor global:local1:local2; ignored`,
		`nodeToNodeMeshBFD: BFD minRxInterval 5ms is outside 10ms-1m0s; using 300ms`,
		`Service range "bogus" is not a network prefix; not advertised`,
	}
	if !slices.Equal(problems, wantProblems) {
		t.Errorf("problems = %q, want %q", problems, wantProblems)
	}
}
