package agent

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// TestPassReads: updates that change nothing a pass reads (a kubelet's
// heartbeat, an agent writing its own status) do not wake the loop; those
// that do, do.
func TestPassReads(t *testing.T) {
	node := func(edit func(*corev1.Node)) *corev1.Node {
		n := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "u1", ResourceVersion: "1", Labels: map[string]string{"rack": "a"}},
			Status: corev1.NodeStatus{
				Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.1"}},
				Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
			},
		}
		if edit != nil {
			edit(n)
		}
		return n
	}
	rzn := func(edit func(*v1alpha1.RhizomeNode)) *v1alpha1.RhizomeNode {
		r := &v1alpha1.RhizomeNode{
			ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "u1", ResourceVersion: "1"},
			Spec:       v1alpha1.RhizomeNodeSpec{IPv4Address: "10.0.0.1/24"},
		}
		if edit != nil {
			edit(r)
		}
		return r
	}
	pool := func(edit func(*v1alpha1.IPPool)) *v1alpha1.IPPool {
		p := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "default", UID: "u1", ResourceVersion: "7"},
			Spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.0/16"}}
		if edit != nil {
			edit(p)
		}
		return p
	}
	samePool, samePeer := pool(nil), &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "p", UID: "u", ResourceVersion: "9"}}
	for _, c := range []struct {
		name     string
		old, cur any
		want     bool
	}{
		{"node heartbeat", node(nil), node(func(n *corev1.Node) {
			n.ResourceVersion = "2"
			n.Status.Conditions[0].LastHeartbeatTime = metav1.Now()
			n.Annotations = map[string]string{"x": "y"}
		}), false},
		{"node resync (same object)", node(nil), node(nil), false},
		{"node label", node(nil), node(func(n *corev1.Node) { n.Labels["rack"] = "b" }), true},
		{"node label added", node(nil), node(func(n *corev1.Node) { n.Labels["zone"] = "z" }), true},
		{"node address", node(nil), node(func(n *corev1.Node) { n.Status.Addresses[0].Address = "10.0.0.2" }), true},
		{"node recreated", node(nil), node(func(n *corev1.Node) { n.UID = "u2" }), true},
		{"rhizomenode status", rzn(nil), rzn(func(r *v1alpha1.RhizomeNode) {
			r.ResourceVersion = "2"
			r.Status.SessionsEstablished = "5/5"
		}), false},
		{"rhizomenode vtep", rzn(nil), rzn(func(r *v1alpha1.RhizomeNode) { r.Spec.VXLANTunnelAddress = "10.244.0.1" }), true},
		{"rhizomenode address", rzn(nil), rzn(func(r *v1alpha1.RhizomeNode) { r.Spec.IPv4Address = "10.0.0.9/24" }), true},
		{"pool status", &v1alpha1.IPPool{}, &v1alpha1.IPPool{Status: v1alpha1.IPPoolStatus{AddressesInUse: 3}}, true},
		// An informer's resync hands the cached object over again, the
		// same pointer as old and new: the loop's own ticker makes the
		// periodic pass.
		{"pool resync (same object)", samePool, samePool, false},
		{"bgppeer resync (same object)", samePeer, samePeer, false},
		{"pool edited", pool(nil), pool(func(p *v1alpha1.IPPool) { p.Spec.NATOutgoing = true }), true},
		{"pool updated, equal copy (a fake's update: nothing bumps the resourceVersion)", pool(nil), pool(nil), true},
		{"kind changed (hostile cache)", node(nil), rzn(nil), true},
	} {
		if got := passReads(c.old, c.cur); got != c.want {
			t.Errorf("%s: passReads = %v, want %v", c.name, got, c.want)
		}
	}
}
