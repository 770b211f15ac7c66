package agent

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/rhizome-net/rhizome/bgp/policy"
	"github.com/rhizome-net/rhizome/bgp/topology"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/ipam"
)

// pass recomputes the whole desired state from the caches and the IPAM
// snapshot and hands it to the components. Each component applies only
// the difference, so a pass with nothing new writes nothing.
func (a *agent) pass(ctx context.Context) {
	snap := a.ipam.Snapshot()
	if !snap.Ready {
		// Nothing is known about our blocks yet: routing and BGP wait.
		// Advertising nothing now would make graceful-restart peers drop
		// our routes at our End-of-RIB.
		a.ready.Set("ipam", "waiting for the IPAM caches")
		return
	}
	a.ready.Set("ipam", "")
	// The IPAM's word reaches BGP's receive side first: a route held until
	// its block's IPAMBlock arrived (the claiming node announces it before
	// the block reaches our cache) is installed now, not after the rest of
	// the pass (docs/design/0014). Nothing to do when the owners did not
	// change; Reconcile below applies the same owners again and re-judges
	// nothing.
	if err := a.bgp.SetOwners(ctx, a.owners(snap)); err != nil && ctx.Err() == nil {
		a.log.Warn("applying the IPAM's owners to the import check", "op", "bgp", "error", err)
	}
	vxlanAddr, vxlanChanged := a.tunnelAddress(ctx, tunnelVXLAN, snap.Pools)
	ipipAddr, ipipChanged := a.tunnelAddress(ctx, tunnelIPIP, snap.Pools)
	if vxlanChanged || ipipChanged {
		// The tunnel address may have claimed this node's first block:
		// route and advertise what the IPAM holds now, so that one pass
		// is complete (its tests run every pass twice to show it).
		snap = a.ipam.Snapshot()
	}
	// A VXLAN tunnel that is needed but whose address is not known now
	// (allocating it failed: the API server or IPAM is away) keeps the
	// address published before: unpublishing it would take this node's
	// VTEP from every other node and with it their routes to our pods.
	keepVXLAN := !vxlanAddr.IsValid() && tunnelNeedFor(snap.Pools, tunnelVXLAN, a.podsHoldAddressesIn) != tunnelRelease
	if err := a.publish(ctx, vxlanAddr, keepVXLAN); err != nil {
		a.log.Warn("publishing this node's RhizomeNode", "op", "publish", "error", err)
	}
	others := a.peerNodes()
	if err := a.routes.SetState(routeState(snap, snap.LentTo, others, vxlanAddr, ipipAddr)); err != nil {
		a.routesRefused = err.Error()
		a.ready.Set("routes", a.routesRefused)
		a.log.Error("desired route state refused", "op", "routes", "error", err)
	} else if a.routesRefused != "" {
		a.routesRefused = ""
		a.setRoutesReadiness(a.routes.Status())
	}

	local := topology.Local{Borrowed: snap.Borrowed, Owners: a.owners(snap)}
	for _, b := range snap.Affine {
		local.Blocks = append(local.Blocks, b.CIDR)
	}
	in := topology.Input{NodeName: a.cfg.NodeName, NodeIPv4: a.local.IPv4.Addr(), RouterID: a.cfg.RouterID}
	if a.local.IPv6.IsValid() {
		in.NodeIPv6 = a.local.IPv6.Addr()
	}
	st, err := a.caches.State(in, local)
	if err != nil {
		a.log.Error("reading the BGP state from the caches", "op", "bgp", "error", err)
		return
	}
	if err := a.bgp.Reconcile(ctx, st); err != nil && ctx.Err() == nil {
		a.log.Error("applying the BGP state", "op", "bgp", "error", err)
	}
}

// owners indexes what every node may originate, from the IPAM view, for
// BGP's import policy; rebuilt only when the view changed.
func (a *agent) owners(snap ipam.Snapshot) *policy.Owners {
	if a.ownersIndex != nil && a.ownersGen == snap.Generation {
		return a.ownersIndex
	}
	blocks := make([]policy.OwnedBlock, len(snap.Blocks))
	for i, b := range snap.Blocks {
		blocks[i] = policy.OwnedBlock{CIDR: b.CIDR, Node: b.Node}
	}
	a.ownersIndex, a.ownersGen = policy.NewOwners(blocks, snap.BorrowedBy), snap.Generation
	return a.ownersIndex
}

// peerNodes lists the other nodes with their published addresses. A
// node's VTEP is the last good one it published: a RhizomeNode that lost
// its VXLAN address or MAC (its agent could not allocate it for a moment,
// the object was re-created) while the node keeps its address does not
// take the VTEP away, which would drop every route through it; a new
// VTEP replaces it, and it goes with the Node.
func (a *agent) peerNodes() []peerNode {
	nodes, err := a.caches.Nodes.List(labels.Everything())
	if err != nil {
		return nil
	}
	rzl := a.caches.RhizomeNodes
	if a.lastVTEP == nil {
		a.lastVTEP = map[string]peerNode{}
	}
	seen := make(map[string]bool, len(nodes))
	var out []peerNode
	for _, n := range nodes {
		if n.Name == a.cfg.NodeName {
			continue
		}
		seen[n.Name] = true
		rzn, err := rzl.Get(n.Name)
		if err != nil {
			rzn = nil
		}
		p := peerNodeFrom(n, rzn)
		last, known := a.lastVTEP[n.Name]
		switch {
		case p.VXLANMAC != nil && p.VXLANAddress.IsValid():
			a.lastVTEP[n.Name] = p
		case known && last.IPv4 == p.IPv4 && p.IPv4.IsValid():
			a.log.Warn("a node's published VTEP is incomplete; keeping the last good one", "op", "vtep", "node", n.Name,
				"vtepAddress", last.VXLANAddress.String(), "vtepMAC", last.VXLANMAC.String())
			p.VXLANMAC, p.VXLANAddress = last.VXLANMAC, last.VXLANAddress
		}
		out = append(out, p)
	}
	for name := range a.lastVTEP {
		if !seen[name] {
			delete(a.lastVTEP, name)
		}
	}
	return out
}

// publish creates or updates this node's RhizomeNode spec: its addresses
// and VXLAN endpoint, which the other agents route through. The object is
// owned by the Node, so it goes away with it. keepVXLAN keeps the VXLAN
// address already published instead of vxlanAddr.
func (a *agent) publish(ctx context.Context, vxlanAddr netip.Addr, keepVXLAN bool) error {
	want := v1alpha1.RhizomeNodeSpec{
		IPv4Address:        a.local.IPv4.String(),
		VXLANTunnelMACAddr: a.routes.VXLANMAC().String(),
	}
	if a.local.IPv6.IsValid() {
		want.IPv6Address = a.local.IPv6.String()
	}
	if vxlanAddr.IsValid() {
		want.VXLANTunnelAddress = vxlanAddr.String()
	}
	if keepVXLAN {
		want.VXLANTunnelAddress = a.published.VXLANTunnelAddress
	}
	if reflect.DeepEqual(want, a.published) {
		// Published already; unless the object was deleted or edited
		// since (the informer's cache says so), when it is written again:
		// the other nodes route to this one by it.
		cur, err := a.caches.RhizomeNodes.Get(a.cfg.NodeName)
		if err == nil && reflect.DeepEqual(cur.Spec, want) || err != nil && !apierrors.IsNotFound(err) {
			return nil
		}
	}
	rzn := a.rzNodes
	err := retryConflict(ctx, func() error {
		cur, err := rzn.Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			node, err := a.caches.Nodes.Get(a.cfg.NodeName)
			if err != nil {
				return fmt.Errorf("reading Node %s: %w", a.cfg.NodeName, err)
			}
			_, err = rzn.Create(ctx, newRhizomeNode(node, want), metav1.CreateOptions{})
			return err
		}
		if err != nil {
			return err
		}
		if keepVXLAN && want.VXLANTunnelAddress == "" {
			// Restarted: what this node published before is in the API.
			want.VXLANTunnelAddress = cur.Spec.VXLANTunnelAddress
		}
		if reflect.DeepEqual(cur.Spec, want) {
			return nil
		}
		upd := cur.DeepCopy()
		upd.Spec = want
		_, err = rzn.Update(ctx, upd, metav1.UpdateOptions{})
		return err
	})
	if err == nil {
		a.published = want
		a.log.Info("published this node's RhizomeNode", "ipv4", want.IPv4Address, "vtepMAC", want.VXLANTunnelMACAddr, "vtepAddress", want.VXLANTunnelAddress)
	}
	return err
}

// newRhizomeNode returns a RhizomeNode for the node, owned by it so that
// Kubernetes' garbage collector removes it with the Node.
func newRhizomeNode(node *corev1.Node, spec v1alpha1.RhizomeNodeSpec) *v1alpha1.RhizomeNode {
	return &v1alpha1.RhizomeNode{
		ObjectMeta: metav1.ObjectMeta{
			Name: node.Name,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID,
			}},
		},
		Spec: spec,
	}
}
