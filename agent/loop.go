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

	"github.com/rhizome-net/rhizome/bgp/topology"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
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
	vxlanAddr, vxlanChanged := a.tunnelAddress(ctx, tunnelVXLAN, snap.Pools)
	ipipAddr, ipipChanged := a.tunnelAddress(ctx, tunnelIPIP, snap.Pools)
	if vxlanChanged || ipipChanged {
		// The tunnel address may have claimed this node's first block:
		// route and advertise what the IPAM holds now, so that one pass
		// is complete (its tests run every pass twice to show it).
		snap = a.ipam.Snapshot()
	}
	if err := a.publish(ctx, vxlanAddr); err != nil {
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

	local := topology.Local{Borrowed: snap.Borrowed}
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

// peerNodes lists the other nodes with their published addresses.
func (a *agent) peerNodes() []peerNode {
	nodes, err := a.caches.Nodes.List(labels.Everything())
	if err != nil {
		return nil
	}
	rzl := a.caches.RhizomeNodes
	var out []peerNode
	for _, n := range nodes {
		if n.Name == a.cfg.NodeName {
			continue
		}
		rzn, err := rzl.Get(n.Name)
		if err != nil {
			rzn = nil
		}
		out = append(out, peerNodeFrom(n, rzn))
	}
	return out
}

// publish creates or updates this node's RhizomeNode spec: its addresses
// and VXLAN endpoint, which the other agents route through. The object is
// owned by the Node, so it goes away with it.
func (a *agent) publish(ctx context.Context, vxlanAddr netip.Addr) error {
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
	if reflect.DeepEqual(want, a.published) {
		return nil
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
