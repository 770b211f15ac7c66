package lab

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Options are the knobs of `rhizome-lab up`.
type Options struct {
	Nodes int
	Racks int
	// ToR is bird, frr or none: what routes between racks.
	ToR string
	// Mode is mesh (node-to-node full mesh) or rr (route reflectors).
	Mode string
	// Encap is none, vxlan or ipip; vxlan and ipip use CrossSubnet when
	// there is more than one rack, Always otherwise. A kubelet lab takes
	// "" (the default there) as "what the overlay's IPPool says".
	Encap string
	// Pods per node.
	Pods int
	// BlockSize of the default pool (default 26); 32 makes every address
	// its own block, which benchmarks of block propagation use.
	BlockSize int
	// Kubelet runs a real containerd and kubelet in every node namespace
	// and installs Rhizome from a deploy/ overlay (design note 0013);
	// pods are then Deployments' pods.
	Kubelet bool `json:",omitempty"`
	// Image is the Rhizome image archive (make image) a kubelet lab
	// imports into every node.
	Image string `json:",omitempty"`
	// BFD, as TXxMULT (e.g. 300x3: 300 ms intervals both ways, multiplier
	// 3), turns BFD on for every session: the node mesh, route reflectors
	// and the ToRs (BIRD's and FRR's BFD). Empty: off.
	BFD string `json:",omitempty"`
}

// ParseBFD parses a TXxMULT setting: the interval in milliseconds and the
// detection multiplier.
func ParseBFD(s string) (interval time.Duration, mult int, err error) {
	tx, m, ok := strings.Cut(s, "x")
	ms, err1 := strconv.Atoi(tx)
	mult, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || ms < 10 || ms > 60000 || mult < 1 || mult > 255 {
		return 0, 0, fmt.Errorf("--bfd %q: want TXxMULT, the interval in milliseconds (10-60000) and the multiplier (1-255), e.g. 300x3", s)
	}
	return time.Duration(ms) * time.Millisecond, mult, nil
}

// Validate checks the options a person typed.
func (o Options) Validate() error {
	switch {
	case o.Nodes < 1 || o.Nodes > 200:
		return fmt.Errorf("--nodes %d: want 1-200", o.Nodes)
	case o.Racks < 1 || o.Racks > o.Nodes || o.Racks > 50:
		return fmt.Errorf("--racks %d: want 1-50 and at most --nodes", o.Racks)
	case o.Pods < 0 || o.Pods > 200:
		return fmt.Errorf("--pods %d: want 0-200 per node", o.Pods)
	case o.BlockSize != 0 && (o.BlockSize < 20 || o.BlockSize > 32):
		return fmt.Errorf("--block-size %d: want 20-32", o.BlockSize)
	}
	switch o.ToR {
	case "bird", "frr", "none":
	default:
		return fmt.Errorf("--tor %q: want bird, frr or none", o.ToR)
	}
	switch o.Mode {
	case "mesh", "rr":
	default:
		return fmt.Errorf("--mode %q: want mesh or rr", o.Mode)
	}
	switch o.Encap {
	case "none", "vxlan", "ipip":
	case "":
		if !o.Kubelet {
			return fmt.Errorf("--encap: want none, vxlan or ipip")
		}
	default:
		return fmt.Errorf("--encap %q: want none, vxlan or ipip", o.Encap)
	}
	if o.BFD != "" {
		if _, _, err := ParseBFD(o.BFD); err != nil {
			return err
		}
		if o.Kubelet {
			return fmt.Errorf("--bfd is not supported with --kubelet (the overlays configure the sessions)")
		}
	}
	if o.Kubelet {
		switch {
		case o.Nodes > 12:
			return fmt.Errorf("--nodes %d: a kubelet lab takes about 150 MB per node; want at most 12", o.Nodes)
		case o.Image == "":
			return fmt.Errorf("--kubelet needs --image (the archive make image writes)")
		}
	}
	return nil
}

// Plan is the lab's address and name plan, computed from Options alone so
// that every command (up, down, status, exec) agrees on it.
//
//	spine bridge 10.0.0.0/24 (namespace <prefix>spine)
//	  └ ToR r: 10.0.0.r on spine0, 10.0.r.1/24 on its rack bridge br0, AS 65000+r
//	       └ node i of rack r: 10.0.r.(10+k)/24 on eth0, default via 10.0.r.1
//
// Nodes are numbered node-1..node-N and filled into racks in order. With
// --tor none the ToRs are plain routers (static routes between racks, no
// BGP).
type Plan struct {
	Opts  Options
	Nodes []NodePlan
	Racks []RackPlan
}

// NodePlan is one node.
type NodePlan struct {
	Name    string
	Rack    int // 1-based
	Addr    netip.Prefix
	Gateway netip.Addr
	// RouteReflector marks the nodes that reflect in rr mode.
	RouteReflector bool
}

// RackPlan is one rack and its ToR.
type RackPlan struct {
	Index     int
	Subnet    netip.Prefix
	ToRAddr   netip.Prefix // on the rack bridge
	SpineAddr netip.Prefix // on the spine
	ToRAS     uint32
	Nodes     []string
}

// Addresses and numbers of the plan.
// PodPool is the lab's default IPPool.
var PodPool = netip.MustParsePrefix("10.244.0.0/16")

// ClusterAS is the nodes' AS.
const ClusterAS = 64512

// NewPlan computes the plan.
func NewPlan(o Options) (*Plan, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	p := &Plan{Opts: o}
	perRack := (o.Nodes + o.Racks - 1) / o.Racks
	for r := 1; r <= o.Racks; r++ {
		p.Racks = append(p.Racks, RackPlan{
			Index:     r,
			Subnet:    netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(r), 0}), 24),
			ToRAddr:   netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(r), 1}), 24),
			SpineAddr: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(r)}), 24),
			ToRAS:     65000 + uint32(r),
		})
	}
	for i := 1; i <= o.Nodes; i++ {
		r := (i-1)/perRack + 1
		if r > o.Racks {
			r = o.Racks
		}
		k := len(p.Racks[r-1].Nodes)
		n := NodePlan{
			Name:    fmt.Sprintf("node-%d", i),
			Rack:    r,
			Addr:    netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(r), byte(10 + k)}), 24),
			Gateway: p.Racks[r-1].ToRAddr.Addr(),
		}
		p.Racks[r-1].Nodes = append(p.Racks[r-1].Nodes, n.Name)
		p.Nodes = append(p.Nodes, n)
	}
	if o.Mode == "rr" {
		// Two reflectors when there are enough nodes, so losing one keeps
		// the cluster converged.
		p.Nodes[0].RouteReflector = true
		if len(p.Nodes) >= 4 {
			p.Nodes[len(p.Nodes)-1].RouteReflector = true
		}
	}
	return p, nil
}

// Node returns the named node's plan.
func (p *Plan) Node(name string) (NodePlan, bool) {
	for _, n := range p.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return NodePlan{}, false
}

// EncapMode is the IPPool mode for the chosen encapsulation.
func (p *Plan) EncapMode() string {
	if p.Opts.Encap == "none" {
		return "Never"
	}
	if p.Opts.Racks > 1 {
		return "CrossSubnet"
	}
	return "Always"
}
