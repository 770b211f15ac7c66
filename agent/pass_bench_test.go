package agent

import (
	"fmt"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// BenchmarkPass is one reconcile pass of an agent in a cluster of n
// nodes that holds every other node's Node, RhizomeNode, block and route
// (as a route reflector, or any node of a full mesh, does), with nothing
// changed since the pass before: what a pass costs that a resync or a
// change irrelevant to this node wakes (issue 19 item 3, design 0018).
func BenchmarkPass(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			w := bigWorld(b, n)
			b.ReportAllocs()
			for b.Loop() {
				w.run.a.pass(w.ctx)
			}
		})
	}
}

// bigWorld is a world of n nodes (this one and n-1 others), each other
// node with its RhizomeNode, one block and its session up, announcing the
// block; the agent has made its first pass over it.
func bigWorld(tb testing.TB, n int) *world {
	w := newWorld(tb, withPool("10.128.0.0/12")) // 16,384 blocks of /26
	w.pass()
	var ups []bgp.Update
	for i := 1; i < n; i++ {
		name := fmt.Sprintf("big%05d", i)
		ip := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name)},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip.String()}}}}
		if err := w.nodes.Add(node); err != nil {
			tb.Fatal(err)
		}
		rzn := &v1alpha1.RhizomeNode{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("rzuid-" + name)},
			Spec: v1alpha1.RhizomeNodeSpec{IPv4Address: ip.String() + "/16"}}
		if _, err := w.api.RhizomeV1alpha1().RhizomeNodes().Create(w.ctx, rzn, metav1.CreateOptions{}); err != nil {
			tb.Fatal(err)
		}
		blk := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 128 + byte(i>>10), byte(i >> 2), byte(i&3) << 6}), 26)
		w.ipam.AddBlock(blk, name)
		ups = append(ups, bgp.Update{Peer: ip, Announced: []bgp.ReceivedPath{{Prefix: blk, NextHop: ip, Attrs: &bgp.Attrs{LocalPref: 100, HasLocalPref: true}}}})
	}
	w.run.a.pass(w.ctx) // configures every session
	for _, u := range ups {
		w.run.speaker.SetState(u.Peer, bgp.StateEstablished, false, "")
		w.run.speaker.Receive(u)
		w.run.speaker.EndOfRIB(u.Peer, bgp.IPv4)
	}
	w.pass()
	return w
}
