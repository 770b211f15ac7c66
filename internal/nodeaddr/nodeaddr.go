// Package nodeaddr decides a node's underlay addresses — the ones BGP
// peers with, and IPIP, VXLAN and lent-address routes go to — from its Node
// and RhizomeNode objects. The agent (its own address, the other nodes'
// VTEPs and borrowers) and bgp/topology (sessions) both ask this one
// function, so that they cannot disagree about which address a node has.
package nodeaddr

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// Of returns a node's IPv4 and IPv6 underlay addresses, each invalid when
// the node has none of that family. For each family the address its agent
// published in the RhizomeNode spec wins (it is what the agent found
// configured on its interfaces); else the Node's first InternalIP of that
// family. rz may be nil (not published yet, or the node's own agent asking).
//
// An address is taken as the family it means: an IPv4-mapped IPv6 address
// (::ffff:10.0.0.1) is IPv4. An address that cannot be a BGP peer or a
// next hop — unspecified, multicast, link-local, or carrying a zone — is
// skipped, as is a published address of the wrong family, so that a broken
// or hostile object falls back to the next source rather than making a
// session or a route to nowhere. Loopback addresses are kept: tests run
// several speakers on one host at 127.0.0.x.
func Of(n *corev1.Node, rz *v1alpha1.RhizomeNode) (v4, v6 netip.Addr) {
	if rz != nil {
		if a, ok := published(rz.Spec.IPv4Address); ok && a.Is4() {
			v4 = a
		}
		if a, ok := published(rz.Spec.IPv6Address); ok && a.Is6() {
			v6 = a
		}
	}
	if n == nil {
		return v4, v6
	}
	for _, na := range n.Status.Addresses {
		if na.Type != corev1.NodeInternalIP {
			continue
		}
		a, err := netip.ParseAddr(na.Address)
		if err != nil {
			continue
		}
		a, ok := usable(a)
		switch {
		case !ok:
		case a.Is4() && !v4.IsValid():
			v4 = a
		case a.Is6() && !v6.IsValid():
			v6 = a
		}
	}
	return v4, v6
}

// published reads a RhizomeNode address: the agent writes it with its
// subnet's prefix length (10.0.1.2/24); a bare address is accepted too.
func published(s string) (netip.Addr, bool) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return usable(p.Addr())
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return usable(a)
	}
	return netip.Addr{}, false
}

// usable unmaps a and reports whether it can be a node's underlay address.
func usable(a netip.Addr) (netip.Addr, bool) {
	a = a.Unmap()
	if a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() ||
		a.IsLinkLocalUnicast() || a.IsInterfaceLocalMulticast() {
		return netip.Addr{}, false
	}
	return a, true
}
