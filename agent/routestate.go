package agent

import (
	"net"
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/internal/nodeaddr"
	"github.com/rhizome-net/rhizome/ipam"
	"github.com/rhizome-net/rhizome/routes"
)

// peerNode is what this node knows of another node, from its Node and
// RhizomeNode objects.
type peerNode struct {
	Name string
	// IPv4 is the node's underlay address (BGP next hop, VXLAN outer
	// destination).
	IPv4 netip.Addr
	// VXLANMAC and VXLANAddress are its VTEP, once it has published one.
	VXLANMAC     net.HardwareAddr
	VXLANAddress netip.Addr
}

// peerNodeFrom reads what this node needs of another: its underlay
// address (nodeaddr.Of, the same as its BGP sessions use) and its VTEP,
// once published. rzn may be nil.
func peerNodeFrom(n *corev1.Node, rzn *v1alpha1.RhizomeNode) peerNode {
	p := peerNode{Name: n.Name}
	p.IPv4, _ = nodeaddr.Of(n, rzn)
	if rzn == nil {
		return p
	}
	if mac, err := net.ParseMAC(rzn.Spec.VXLANTunnelMACAddr); err == nil {
		p.VXLANMAC = mac
	}
	if a, err := netip.ParseAddr(rzn.Spec.VXLANTunnelAddress); err == nil {
		p.VXLANAddress = a
	}
	return p
}

// routeState computes the node-local desired state of the route
// programmer: this node's blocks (blackholed, except the addresses lent to
// pods of other nodes, which are routed to the borrower), every pool, and
// the VTEPs of the other nodes. lentTo names the node holding each lent
// address. It is pure: the agent's loop calls it on every signal.
func routeState(snap ipam.Snapshot, lentTo map[netip.Addr]string, others []peerNode, vxlanAddr, ipipAddr netip.Addr) routes.State {
	byName := map[string]peerNode{}
	for _, o := range others {
		byName[o.Name] = o
	}
	var st routes.State
	for _, b := range snap.Affine {
		ob := routes.OwnBlock{Prefix: b.CIDR}
		for _, a := range snap.Lent {
			if !b.CIDR.Contains(a) {
				continue
			}
			borrower, ok := byName[lentTo[a]]
			if !ok || !borrower.IPv4.IsValid() {
				// Without the borrower's address the lent address is
				// still excluded from nothing: its host route comes over
				// BGP from the borrower and wins over the blackhole.
				continue
			}
			if ob.Lent == nil {
				ob.Lent = map[netip.Addr]netip.Addr{}
			}
			ob.Lent[a] = borrower.IPv4
		}
		st.Blocks = append(st.Blocks, ob)
	}
	for _, p := range snap.Pools {
		st.Pools = append(st.Pools, routes.Pool{CIDR: p.CIDR, IPIPMode: p.IPIPMode, VXLANMode: p.VXLANMode, NATOutgoing: p.NATOutgoing})
	}
	for _, o := range others {
		if o.IPv4.IsValid() && o.VXLANMAC != nil && o.VXLANAddress.IsValid() {
			st.VTEPs = append(st.VTEPs, routes.VTEP{NodeIP: o.IPv4, MAC: o.VXLANMAC, Address: o.VXLANAddress})
		}
	}
	sort.Slice(st.VTEPs, func(i, j int) bool { return st.VTEPs[i].NodeIP.Less(st.VTEPs[j].NodeIP) })
	st.VXLANAddress = vxlanAddr
	st.IPIPAddress = ipipAddr
	return st
}

// usesEncap reports whether any pool asks for VXLAN or IPIP.
func usesEncap(pools []ipam.Pool) (vxlan, ipip bool) {
	for _, p := range pools {
		if p.VXLANMode != "" && p.VXLANMode != v1alpha1.EncapNever {
			vxlan = true
		}
		if p.IPIPMode != "" && p.IPIPMode != v1alpha1.EncapNever {
			ipip = true
		}
	}
	return vxlan, ipip
}
