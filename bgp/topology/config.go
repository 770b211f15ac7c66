package topology

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// Config is one node's BGP configuration: the `default` BGPConfiguration
// overlaid with the node's own `node.<name>` object, defaults filled in.
type Config struct {
	ASN        uint32
	Mesh       bool
	ListenPort int32
	// Keepalive and Hold; Hold is bgp.HoldTimeDisabled for 0s.
	Keepalive, Hold time.Duration
	GracefulRestart bgp.GracefulRestart
	// MeshBFD is BFD on the node-to-node mesh sessions.
	MeshBFD BFDConfig
	// MeshPassword is the mesh sessions' MD5 password Secret (from the
	// default configuration only), nil for none.
	MeshPassword *v1alpha1.BGPPassword
	// MeshTTLSecurity is GTSM on the sessions between nodes, in hops as
	// BGPPeer ttlSecurity (from the default configuration only); 0 for off.
	MeshTTLSecurity uint8
	// ClusterID makes the node a route reflector.
	ClusterID netip.Addr
	// Services are the Service ranges the node advertises (cluster,
	// external and load-balancer IPs together).
	Services         []netip.Prefix
	Communities      []uint32
	LargeCommunities []bgp.LargeCommunity
	// PrefixCommunities attach further communities inside a CIDR.
	PrefixCommunities []PrefixCommunities
	RouteProtocol     int
	RouteTable        int
}

// PrefixCommunities are communities for the advertised routes inside CIDR.
type PrefixCommunities struct {
	CIDR             netip.Prefix
	Communities      []uint32
	LargeCommunities []bgp.LargeCommunity
}

// Defaults that the CRD leaves to the agent.
const (
	DefaultKeepalive = 30 * time.Second
	DefaultHold      = 90 * time.Second
	DefaultRestart   = 120 * time.Second
)

// MergeConfig overlays a node's BGPConfiguration on the cluster's default.
// Either may be nil. Problems are reported per field and the field is left
// at its default, so one bad value never stops BGP as a whole.
func MergeConfig(def, node *v1alpha1.BGPConfigurationSpec) (Config, []string) {
	c := Config{
		ASN:           v1alpha1.DefaultASNumber,
		Mesh:          true,
		ListenPort:    v1alpha1.DefaultListenPort,
		Keepalive:     DefaultKeepalive,
		Hold:          DefaultHold,
		RouteProtocol: v1alpha1.DefaultRouteProtocol,
		RouteTable:    v1alpha1.DefaultRouteTable,
		GracefulRestart: bgp.GracefulRestart{
			Enabled: true, RestartTime: DefaultRestart,
		},
		MeshBFD: DefaultBFD,
	}
	var problems []string
	if def != nil {
		c.MeshPassword = def.NodeMeshPassword
	}
	if node != nil && node.NodeMeshPassword != nil {
		problems = append(problems, "nodeMeshPassword is cluster-wide: set it in BGPConfiguration default; the per-node value is ignored")
	}
	// GTSM holds only when both ends send with TTL 255, so, like the
	// password, it is the cluster's (the API server refuses it elsewhere;
	// an older CRD did not).
	if def != nil && def.NodeMeshTTLSecurity != nil {
		if n := *def.NodeMeshTTLSecurity; n >= 1 && n <= 254 {
			c.MeshTTLSecurity = uint8(n)
		} else {
			problems = append(problems, fmt.Sprintf("nodeMeshTTLSecurity %d is not a number of hops 1-254; TTL security is off on the sessions between nodes", n))
		}
	}
	if node != nil && node.NodeMeshTTLSecurity != nil {
		problems = append(problems, "nodeMeshTTLSecurity is cluster-wide: set it in BGPConfiguration default; the per-node value is ignored")
	}
	for _, s := range []*v1alpha1.BGPConfigurationSpec{def, node} {
		if s == nil {
			continue
		}
		if s.ASNumber != nil {
			c.ASN = uint32(*s.ASNumber)
		}
		if s.NodeToNodeMesh != nil {
			c.Mesh = *s.NodeToNodeMesh
		}
		if s.ListenPort != nil {
			c.ListenPort = *s.ListenPort
		}
		if s.KeepaliveTime != nil {
			c.Keepalive = s.KeepaliveTime.Duration
		}
		if s.HoldTime != nil {
			c.Hold = holdTime(s.HoldTime)
		}
		c.GracefulRestart = mergeGR(c.GracefulRestart, s.GracefulRestart)
		var probs []string
		c.MeshBFD, probs = mergeBFD(c.MeshBFD, s.NodeToNodeMeshBFD, "nodeToNodeMeshBFD")
		problems = append(problems, probs...)
		if s.ServiceClusterIPs != nil || s.ServiceExternalIPs != nil || s.ServiceLoadBalancerIPs != nil {
			c.Services = nil
			for _, l := range [][]v1alpha1.ServiceIPBlock{s.ServiceClusterIPs, s.ServiceExternalIPs, s.ServiceLoadBalancerIPs} {
				for _, b := range l {
					p, err := netip.ParsePrefix(b.CIDR)
					if err != nil || p != p.Masked() {
						problems = append(problems, fmt.Sprintf("Service range %q is not a network prefix; not advertised", b.CIDR))
						continue
					}
					c.Services = append(c.Services, p)
				}
			}
		}
		if s.Communities != nil {
			var probs []string
			c.Communities, c.LargeCommunities, probs = parseCommunities(s.Communities)
			problems = append(problems, probs...)
		}
		if s.PrefixAdvertisements != nil {
			c.PrefixCommunities = nil
			for _, pa := range s.PrefixAdvertisements {
				p, err := netip.ParsePrefix(pa.CIDR)
				if err != nil || p != p.Masked() {
					problems = append(problems, fmt.Sprintf("prefixAdvertisements cidr %q is not a network prefix; ignored", pa.CIDR))
					continue
				}
				std, large, probs := parseCommunities(pa.Communities)
				problems = append(problems, probs...)
				c.PrefixCommunities = append(c.PrefixCommunities, PrefixCommunities{CIDR: p, Communities: std, LargeCommunities: large})
			}
		}
		if s.RouteProtocol != nil {
			c.RouteProtocol = int(*s.RouteProtocol)
		}
		if s.RouteTable != nil {
			c.RouteTable = int(*s.RouteTable)
		}
	}
	// Only the node's own object may make it a route reflector (the API
	// server refuses the field in `default`).
	if node != nil && node.RouteReflectorClusterID != "" {
		id, err := netip.ParseAddr(node.RouteReflectorClusterID)
		if err != nil || !id.Is4() {
			problems = append(problems, fmt.Sprintf("routeReflectorClusterID %q is not an IPv4 address; the node is not a route reflector", node.RouteReflectorClusterID))
		} else {
			c.ClusterID = id
		}
	}
	return c, problems
}

func holdTime(d *metav1.Duration) time.Duration {
	if d.Duration == 0 {
		return bgp.HoldTimeDisabled
	}
	return d.Duration
}

func mergeGR(c bgp.GracefulRestart, g *v1alpha1.GracefulRestart) bgp.GracefulRestart {
	if g == nil {
		return c
	}
	if g.Enabled != nil {
		c.Enabled = *g.Enabled
	}
	if g.RestartTime != nil {
		c.RestartTime = g.RestartTime.Duration
	}
	if g.LongLivedStaleTime != nil {
		c.LongLivedStaleTime = g.LongLivedStaleTime.Duration
	}
	return c
}

// parseCommunities splits AS:value and global:local1:local2 communities.
func parseCommunities(in []v1alpha1.Community) (std []uint32, large []bgp.LargeCommunity, problems []string) {
	for _, c := range in {
		parts := strings.Split(string(c), ":")
		nums := make([]uint64, 0, len(parts))
		ok := len(parts) == 2 || len(parts) == 3
		for _, p := range parts {
			n, err := strconv.ParseUint(p, 10, 32)
			if err != nil {
				ok = false
				break
			}
			nums = append(nums, n)
		}
		switch {
		case ok && len(nums) == 2 && nums[0] <= 0xffff && nums[1] <= 0xffff:
			std = append(std, uint32(nums[0]<<16|nums[1]))
		case ok && len(nums) == 3:
			large = append(large, bgp.LargeCommunity{Global: uint32(nums[0]), Local1: uint32(nums[1]), Local2: uint32(nums[2])})
		default:
			problems = append(problems, fmt.Sprintf("community %q is neither AS:value (each 0-65535) nor global:local1:local2; ignored", c))
		}
	}
	return std, large, problems
}
