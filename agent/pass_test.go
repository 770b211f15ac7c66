package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// The agent's pass as a junction: each test plays a sequence of events on
// one world (world_test.go) and checks, after each, everything the pass
// decided or caused in every part; play runs every pass twice to show
// that a second pass with nothing new writes nothing.

// Lines that most steps share.
const (
	poolPlain = "pool 10.244.0.0/16 vxlan=Never ipip=Never"
	rznPlain  = "rhizomenode ipv4=10.0.0.1/24 mac"
	ownBlock  = "block 10.244.0.0/26"
	advBlock  = "advertise 10.244.0.0/26"
	blackhole = "kernel blackhole 10.244.0.0/26"
	peerN2    = "peer 10.0.0.2 as 64512"
	peerN3    = "peer 10.0.1.3 as 64512"
	vtepN2    = "vtep 10.0.0.2 02:00:00:00:00:02 10.244.1.0"
	vtepN3    = "vtep 10.0.1.3 02:00:00:00:00:03 10.244.2.0"
	learnedN2 = "learned 10.244.1.0/26 via 10.0.0.2"
	learnedN3 = "learned 10.244.2.0/26 via 10.0.1.3"
	tunVX     = "tunnel vxlan 10.244.0.1"
	ipamVX    = "ipam rhizome-tunnel.vxlan.n1 10.244.0.1"
	rznVX     = "rhizomenode ipv4=10.0.0.1/24 vtep=10.244.0.1 mac"
	tunIPIP   = "tunnel ipip 10.244.0.1"
	ipamIPIP  = "ipam rhizome-tunnel.ipip.n1 10.244.0.1"
)

func TestPassNodesJoinAndLeave(t *testing.T) {
	w := newWorld(t)
	play(t, w, []step{
		{name: "alone: nothing to route or peer with; the RhizomeNode is published",
			want: []string{poolPlain, rznPlain}},
		{name: "n2 joins: a mesh session at its InternalIP, no VTEP before its agent publishes one",
			do:   func(w *world) { w.addNode(n2) },
			want: []string{peerN2, poolPlain, rznPlain}},
		{name: "n2's agent publishes its VTEP",
			do:   func(w *world) { w.publishVTEP(n2, "02:00:00:00:00:02", "10.244.1.0") },
			want: []string{peerN2, poolPlain, rznPlain, vtepN2}},
		{name: "a pod of this node claims a block: blackholed and advertised",
			do:   func(w *world) { w.allocate("pod1.eth0") },
			want: []string{advBlock, ownBlock, blackhole, peerN2, poolPlain, rznPlain, vtepN2}},
		// n3's InternalIP is IPv4-mapped. The agent used to find no IPv4
		// address for it (and route nothing to it) while BGP peered with
		// 10.0.1.3: one function (internal/nodeaddr) now decides for both.
		{name: "n3 joins with an IPv4-mapped InternalIP and a pod borrowing from our block",
			do: func(w *world) {
				w.addNode(n3, "::ffff:"+nodeIPs[n3])
				w.ipam.Lend(netip.MustParseAddr("10.244.0.9"), n3, "pod9.eth0")
			},
			want: []string{advBlock, ownBlock, "kernel 10.244.0.9/32 via 10.0.0.254 dev#2", blackhole,
				"lent 10.244.0.9 -> 10.0.1.3", peerN2, peerN3, poolPlain, rznPlain, vtepN2}},
		{name: "n2 leaves: its session and VTEP go",
			do: func(w *world) { w.deleteNode(n2) },
			want: []string{advBlock, ownBlock, "kernel 10.244.0.9/32 via 10.0.0.254 dev#2", blackhole,
				"lent 10.244.0.9 -> 10.0.1.3", peerN3, poolPlain, rznPlain}},
		{name: "n3 leaves with its pod still holding our address: no route to a node that is gone",
			do:   func(w *world) { w.deleteNode(n3) },
			want: []string{advBlock, ownBlock, blackhole, poolPlain, rznPlain}},
	})
}

func TestPassBlocksClaimedLentAndBorrowed(t *testing.T) {
	// A pool of two blocks, so that this node borrows once its block is
	// full and n2 holds the other.
	w := newWorld(t, withPool("10.244.0.0/25"))
	pool := "pool 10.244.0.0/25 vxlan=Never ipip=Never"
	play(t, w, []step{
		{name: "no block yet", do: func(w *world) { w.addNode(n2) },
			want: []string{peerN2, pool, rznPlain}},
		{name: "another node's block is not ours to blackhole or advertise",
			do:   func(w *world) { w.ipam.AddBlock(netip.MustParsePrefix("10.244.0.64/26"), n2) },
			want: []string{peerN2, pool, rznPlain}},
		{name: "our first pod claims the other block",
			do:   func(w *world) { w.allocate("pod0.eth0") },
			want: []string{advBlock, ownBlock, blackhole, peerN2, pool, rznPlain}},
		{name: "n2's pod holds an address of our block: a host route to n2 under the blackhole",
			do: func(w *world) { w.ipam.Lend(netip.MustParseAddr("10.244.0.63"), n2, "n2pod.eth0") },
			want: []string{advBlock, ownBlock, "kernel 10.244.0.63/32 via 10.0.0.2 dev#2", blackhole,
				"lent 10.244.0.63 -> 10.0.0.2", peerN2, pool, rznPlain}},
		{name: "our block is full: the next pod borrows from n2's block, and we advertise its /32",
			do: func(w *world) {
				for i := 1; i < 63; i++ {
					w.allocate(fmt.Sprintf("pod%d.eth0", i))
				}
				if a := w.allocate("borrower.eth0"); a != netip.MustParseAddr("10.244.0.64") {
					t.Fatalf("the borrowing pod got %v", a)
				}
			},
			want: []string{advBlock, "advertise 10.244.0.64/32", ownBlock, "kernel 10.244.0.63/32 via 10.0.0.2 dev#2", blackhole,
				"lent 10.244.0.63 -> 10.0.0.2", peerN2, pool, rznPlain}},
		{name: "the borrowing pod goes: its /32 is withdrawn",
			do: func(w *world) {
				if err := w.ipam.Release(w.ctx, "borrower.eth0"); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{advBlock, ownBlock, "kernel 10.244.0.63/32 via 10.0.0.2 dev#2", blackhole,
				"lent 10.244.0.63 -> 10.0.0.2", peerN2, pool, rznPlain}},
	})
}

func TestPassPoolEncapsulationChanges(t *testing.T) {
	w := newWorld(t)
	w.addNode(n2)
	w.addNode(n3)
	w.publishVTEP(n2, "02:00:00:00:00:02", "10.244.1.0")
	w.publishVTEP(n3, "02:00:00:00:00:03", "10.244.2.0")
	w.allocate("pod0.eth0")
	w.pass()
	w.peerUp(n2, "10.244.1.0/26")
	w.peerUp(n3, "10.244.2.0/26")
	common := []string{advBlock, ownBlock, blackhole, learnedN2, learnedN3, peerN2, peerN3, vtepN2, vtepN3}
	// The learned routes reach the route programmer once: an encapsulation
	// change re-encapsulates them in the kernel without the RIB re-sending
	// anything (the "learned" lines never change below).
	play(t, w, []step{
		{name: "no encapsulation: n2 directly on our subnet, n3 through the gateway",
			want: with(common, poolPlain, rznPlain,
				"kernel 10.244.1.0/26 via 10.0.0.2 dev#2", "kernel 10.244.2.0/26 via 10.0.0.254 dev#2")},
		{name: "VXLAN CrossSubnet: a VTEP address from our block, published; n3 through VXLAN, n2 still direct",
			do: func(w *world) { w.setPool(v1alpha1.EncapCrossSubnet, v1alpha1.EncapNever, false) },
			want: with(common, "pool 10.244.0.0/16 vxlan=CrossSubnet ipip=Never", rznVX, tunVX, ipamVX,
				"kernel 10.244.1.0/26 via 10.0.0.2 dev#2", "kernel 10.244.2.0/26 via 10.244.2.0 dev#100 onlink")},
		{name: "VXLAN Always: n2 through VXLAN too; the same VTEP address",
			do: func(w *world) { w.setPool(v1alpha1.EncapAlways, v1alpha1.EncapNever, false) },
			want: with(common, "pool 10.244.0.0/16 vxlan=Always ipip=Never", rznVX, tunVX, ipamVX,
				"kernel 10.244.1.0/26 via 10.244.1.0 dev#100 onlink", "kernel 10.244.2.0/26 via 10.244.2.0 dev#100 onlink")},
		{name: "IPIP Always: the VXLAN address is released and unpublished, tunl0 gets an address, routes go through tunl0",
			do: func(w *world) { w.setPool(v1alpha1.EncapNever, v1alpha1.EncapAlways, false) },
			want: with(common, "pool 10.244.0.0/16 vxlan=Never ipip=Always", rznPlain, tunIPIP, ipamIPIP,
				"kernel 10.244.1.0/26 via 10.0.0.2 dev#101 onlink", "kernel 10.244.2.0/26 via 10.0.1.3 dev#101 onlink")},
		{name: "IPIP CrossSubnet with natOutgoing: n2 direct again",
			do: func(w *world) { w.setPool(v1alpha1.EncapNever, v1alpha1.EncapCrossSubnet, true) },
			want: with(common, "pool 10.244.0.0/16 vxlan=Never ipip=CrossSubnet nat", rznPlain, tunIPIP, ipamIPIP,
				"kernel 10.244.1.0/26 via 10.0.0.2 dev#2", "kernel 10.244.2.0/26 via 10.0.1.3 dev#101 onlink")},
		{name: "no encapsulation again: the tunnel address is released",
			do: func(w *world) { w.setPool(v1alpha1.EncapNever, v1alpha1.EncapNever, false) },
			want: with(common, poolPlain, rznPlain,
				"kernel 10.244.1.0/26 via 10.0.0.2 dev#2", "kernel 10.244.2.0/26 via 10.0.0.254 dev#2")},
	})
	if w.nat.Spec.Masquerade != nil {
		t.Errorf("natOutgoing still in force after the pool turned it off: %+v", w.nat.Spec)
	}
}

func TestPassPeerLost(t *testing.T) {
	w := newWorld(t)
	w.addNode(n2)
	w.publishVTEP(n2, "02:00:00:00:00:02", "10.244.1.0")
	w.allocate("pod0.eth0")
	base := []string{advBlock, ownBlock, blackhole, poolPlain, rznPlain, vtepN2}
	play(t, w, []step{
		{name: "n2 configured, not connected yet", want: with(base, peerN2)},
		{name: "n2 up: its block is learned and installed",
			do:   func(w *world) { w.peerUp(n2, "10.244.1.0/26") },
			want: with(base, peerN2, learnedN2, "kernel 10.244.1.0/26 via 10.0.0.2 dev#2")},
		{name: "n2's session lost without graceful restart: its routes go at once, the session stays configured",
			do:   func(w *world) { w.peerLost(n2) },
			want: with(base, peerN2)},
		{name: "n2 back with one more prefix",
			do: func(w *world) { w.peerUp(n2, "10.244.1.0/26", "10.244.1.64/26") },
			want: with(base, peerN2, learnedN2, "learned 10.244.1.64/26 via 10.0.0.2",
				"kernel 10.244.1.0/26 via 10.0.0.2 dev#2", "kernel 10.244.1.64/26 via 10.0.0.2 dev#2")},
		{name: "n2 leaves the cluster: the session is removed, its routes with it",
			do:   func(w *world) { w.deleteNode(n2) },
			want: []string{advBlock, ownBlock, blackhole, poolPlain, rznPlain}},
	})
}

func TestPassAPIErrors(t *testing.T) {
	w := newWorld(t)
	// vx0: VXLAN in force, the tunnel address the node's first address.
	vx0 := []string{advBlock, ownBlock, blackhole, "pool 10.244.0.0/16 vxlan=CrossSubnet ipip=Never",
		"rhizomenode ipv4=10.0.0.1/24 vtep=10.244.0.0 mac", "tunnel vxlan 10.244.0.0", "ipam rhizome-tunnel.vxlan.n1 10.244.0.0"}
	errConflict := apierrors.NewConflict(schema.GroupResource{Group: "rhizome.dev", Resource: "rhizomenodes"}, self, errors.New("the object has been modified"))
	play(t, w, []step{
		{name: "creating the RhizomeNode fails (API server 500): routing and BGP are applied anyway",
			do: func(w *world) {
				w.addNode(n2)
				w.failAPI("create", 2, errAPI) // this pass and the idempotency pass
			},
			want: []string{peerN2, poolPlain}},
		{name: "the API server is back: the next pass publishes",
			want: []string{peerN2, poolPlain, rznPlain}},
		{name: "the IPAM cannot reach the API server when VXLAN needs a tunnel address: no address, nothing published, BGP still reconciled",
			do: func(w *world) {
				w.ipam.FailWith(errAPI)
				w.setPool(v1alpha1.EncapCrossSubnet, v1alpha1.EncapNever, false)
				w.addNode(n3)
			},
			want: []string{peerN2, peerN3, "pool 10.244.0.0/16 vxlan=CrossSubnet ipip=Never", rznPlain}},
		// The tunnel address is the node's first: it claims a block, which
		// the same pass routes and advertises.
		{name: "the IPAM is back, and updating the RhizomeNode meets a conflict: retried within the pass",
			do: func(w *world) {
				w.ipam.FailWith(nil)
				w.failAPI("update", 1, errConflict)
			},
			want: with(vx0, peerN2, peerN3)},
		{name: "the speaker refuses a new session once: the pass reports it, the next one retries",
			do: func(w *world) {
				w.run.speaker.FailNext("add-peer", bgp.ErrInjected)
				w.addNode("n4", "10.0.0.4")
			},
			wantFirst: with(vx0, peerN2, peerN3),
			want:      with(vx0, peerN2, peerN3, "peer 10.0.0.4 as 64512")},
		// An IPPool whose mode no API server accepts, as an old CRD (without
		// the enum) lets through: the IPAM ignores the pool (pools.From), so
		// the pass neither routes through it nor keeps a VXLAN tunnel for it;
		// its block stays routed and advertised, BGP goes on (n5's session),
		// and the route programmer gets a state it accepts. (It used to
		// refuse the whole state, the node going NotReady, while the agent
		// still held a tunnel address for the pool.)
		{name: "a pool with an encapsulation mode that does not exist: skipped, everything else served",
			do: func(w *world) {
				w.setPool("Sometimes", v1alpha1.EncapNever, false)
				w.addNode("n5", "10.0.0.5")
			},
			want: []string{advBlock, ownBlock, blackhole, peerN2, peerN3, "peer 10.0.0.4 as 64512", "peer 10.0.0.5 as 64512", rznPlain}},
		{name: "the pool is fixed: routed as it says",
			do:   func(w *world) { w.setPool(v1alpha1.EncapNever, v1alpha1.EncapNever, false) },
			want: []string{advBlock, ownBlock, blackhole, peerN2, peerN3, "peer 10.0.0.4 as 64512", "peer 10.0.0.5 as 64512", poolPlain, rznPlain}},
	})
	if _, refused := w.run.routes.counts(); refused != 0 {
		t.Errorf("the route programmer refused %d states, want none", refused)
	}
}

func TestPassRestart(t *testing.T) {
	w := newWorld(t)
	w.addNode(n2)
	w.publishVTEP(n2, "02:00:00:00:00:02", "10.244.1.0")
	w.setPool(v1alpha1.EncapCrossSubnet, v1alpha1.EncapNever, false)
	w.allocate("pod0.eth0")
	w.pass()
	w.peerUp(n2, "10.244.1.0/26")
	vx := "pool 10.244.0.0/16 vxlan=CrossSubnet ipip=Never"
	kernel := []string{blackhole, "kernel 10.244.1.0/26 via 10.0.0.2 dev#2"}
	var writes map[string]int
	play(t, w, []step{
		{name: "before the restart",
			want: with(kernel, advBlock, ownBlock, learnedN2, peerN2, vx, rznVX, tunVX, ipamVX, vtepN2)},
		// A new agent process over the same cluster and kernel. Until its
		// IPAM caches have synced it knows nothing of its blocks: it hands
		// nothing to the route programmer (which keeps the routes it
		// adopted) and starts no BGP (advertising nothing would make
		// graceful-restart peers drop our routes).
		{name: "restarted, IPAM not synced: nothing handed over, the kernel keeps its routes",
			do: func(w *world) {
				writes = w.writes()
				w.restart()
				w.ipam.SetReady(false)
			},
			want: with(kernel, rznVX, ipamVX, "notready ipam: waiting for the IPAM caches")},
		// Its tunnel address is the one it had (the allocation is by
		// handle), so the RhizomeNode is not rewritten; the route learned
		// from n2 stays in the kernel until n2 has sent its table again.
		{name: "IPAM synced: the same state as before, nothing rewritten, the learned route kept while BGP relearns",
			do:   func(w *world) { w.ipam.SetReady(true) },
			want: with(kernel, advBlock, ownBlock, peerN2, vx, rznVX, tunVX, ipamVX, vtepN2),
			check: func(t *testing.T, w *world) {
				if got := w.writes(); fmt.Sprint(got) != fmt.Sprint(writes) {
					t.Errorf("API writes after the restart: %v, before %v", got, writes)
				}
			}},
		{name: "n2's session back: the route is learned again, nothing changes in the kernel",
			do:   func(w *world) { w.peerUp(n2, "10.244.1.0/26") },
			want: with(kernel, advBlock, ownBlock, learnedN2, peerN2, vx, rznVX, tunVX, ipamVX, vtepN2)},
		// The pool changed while the agent was down: the new process never
		// allocated the VXLAN address, but releases the one its
		// predecessor held.
		{name: "restarted after the pool dropped VXLAN: the old tunnel address is released and unpublished",
			do: func(w *world) {
				w.stopAgent()
				w.setPool(v1alpha1.EncapNever, v1alpha1.EncapNever, false)
				w.start()
			},
			want: with(kernel, advBlock, ownBlock, peerN2, poolPlain, rznPlain, vtepN2)},
		{name: "n2 back, its table sent: converged",
			do:   func(w *world) { w.peerUp(n2, "10.244.1.0/26") },
			want: with(kernel, advBlock, ownBlock, learnedN2, peerN2, poolPlain, rznPlain, vtepN2)},
	})
}

func TestPassHostileNeighbours(t *testing.T) {
	w := newWorld(t)
	w.allocate("pod0.eth0")
	base := []string{advBlock, ownBlock, blackhole, "pool 10.244.0.0/16 vxlan=Always ipip=Never", rznVX, tunVX, ipamVX}
	w.setPool(v1alpha1.EncapAlways, v1alpha1.EncapNever, false)
	play(t, w, []step{
		{name: "alone with VXLAN", want: base},
		{name: "n2 publishes a VTEP with a broken MAC: no VTEP for it, its session at its InternalIP",
			do: func(w *world) {
				w.addNode(n2)
				w.publishVTEP(n2, "02:00:zz", "10.244.1.0")
			},
			want: with(base, peerN2)},
		{name: "n2 claims an IPv6 address as its IPv4 one: the InternalIP is used instead",
			do: func(w *world) {
				w.publishRaw(n2, v1alpha1.RhizomeNodeSpec{IPv4Address: "fd00::2/64", VXLANTunnelMACAddr: "02:00:00:00:00:02", VXLANTunnelAddress: "10.244.1.0"})
			},
			want: with(base, peerN2, vtepN2)},
		{name: "n2 claims the unspecified address: the InternalIP again",
			do: func(w *world) {
				w.publishRaw(n2, v1alpha1.RhizomeNodeSpec{IPv4Address: "0.0.0.0/0", VXLANTunnelMACAddr: "02:00:00:00:00:02", VXLANTunnelAddress: "10.244.1.0"})
			},
			want: with(base, peerN2, vtepN2)},
		{name: "n2 announces a VTEP address that is not an address: its last good VTEP is kept",
			do: func(w *world) {
				w.publishRaw(n2, v1alpha1.RhizomeNodeSpec{IPv4Address: "10.0.0.2/24", VXLANTunnelMACAddr: "02:00:00:00:00:02", VXLANTunnelAddress: "10.244.1"})
			},
			want: with(base, peerN2, vtepN2)},
		{name: "n2 publishes a new VTEP: it replaces the old one",
			do: func(w *world) {
				w.publishRaw(n2, v1alpha1.RhizomeNodeSpec{IPv4Address: "10.0.0.2/24", VXLANTunnelMACAddr: "02:00:00:00:00:02", VXLANTunnelAddress: "10.244.1.9"})
			},
			want: with(base, peerN2, "vtep 10.0.0.2 02:00:00:00:00:02 10.244.1.9")},
		{name: "n3 never published a good VTEP: none for it",
			do: func(w *world) {
				w.addNode(n3)
				w.publishRaw(n3, v1alpha1.RhizomeNodeSpec{IPv4Address: "10.0.1.3/24", VXLANTunnelMACAddr: "02:00:00:00:00:03", VXLANTunnelAddress: "10.244.2"})
			},
			want: with(base, peerN2, peerN3, "vtep 10.0.0.2 02:00:00:00:00:02 10.244.1.9")},
	})
}

// with returns base plus more, for a step's want (compared sorted).
func with(base []string, more ...string) []string {
	return append(append([]string(nil), base...), more...)
}

// TestPassTunnelAddressReleasedBehindItsBack: an operator force-releases
// the node's VXLAN address (or a restore loses it) and a pod gets it. The
// next pass must notice that the node no longer holds it and take a new
// one, instead of keeping a VTEP address that now belongs to a pod.
func TestPassTunnelAddressReleasedBehindItsBack(t *testing.T) {
	w := newWorld(t)
	w.setPool(v1alpha1.EncapAlways, v1alpha1.EncapNever, false)
	w.pass()
	tunnel := a(w).tunnelHandle(tunnelVXLAN)
	before := w.ipam.HandleAddresses(tunnel)
	if len(before) != 1 {
		t.Fatalf("tunnel address after the first pass: %v", before)
	}
	if err := w.ipam.Release(w.ctx, tunnel); err != nil {
		t.Fatal(err)
	}
	thief := w.allocate("thief.eth0")
	if thief != before[0] {
		t.Fatalf("the pod got %v, not the released tunnel address %v (the test needs it to)", thief, before[0])
	}
	w.pass()
	after := w.ipam.HandleAddresses(tunnel)
	if len(after) != 1 || after[0] == thief {
		t.Fatalf("tunnel address after the pass: %v (the pod holds %v)", after, thief)
	}
	if got := a(w).tunnel.addrs[tunnelVXLAN]; got != after[0] {
		t.Fatalf("the agent uses %v as its VTEP address, IPAM gives it %v", got, after[0])
	}
}

// TestPassTunnelSurvivesFailures (issue 16): a transient IPAM or API
// failure never unpublishes this node's VTEP, and other nodes keep the
// last good VTEP of a node instead of deleting working routes to it.
func TestPassTunnelSurvivesFailures(t *testing.T) {
	w := newWorld(t)
	w.addNode(n2)
	w.publishVTEP(n2, "02:00:00:00:00:02", "10.244.1.0")
	w.setPool(v1alpha1.EncapAlways, v1alpha1.EncapNever, false)
	w.allocate("pod0.eth0")
	w.pass()
	w.peerUp(n2, "10.244.1.0/26")
	vx := "pool 10.244.0.0/16 vxlan=Always ipip=Never"
	kernelN2 := "kernel 10.244.1.0/26 via 10.244.1.0 dev#100 onlink"
	upNoLearned := []string{advBlock, ownBlock, blackhole, vx, rznVX, tunVX, ipamVX, peerN2, vtepN2, kernelN2}
	up := with(upNoLearned, learnedN2)
	var writes map[string]int
	play(t, w, []step{
		{name: "VXLAN up, n2's block routed through its VTEP", want: up},
		// The agent restarts while its IPAM cannot write to the API server:
		// the tunnel address its predecessor allocated is in the IPAM's
		// view, so it is taken as it is. (It used to try to allocate,
		// fail, and publish the RhizomeNode without its VTEP address,
		// which made every other node drop its routes to this one; and
		// strip the address from the device.)
		{name: "restarted with the IPAM failing: the same tunnel address, nothing unpublished or rewritten",
			do: func(w *world) {
				writes = w.writes()
				w.ipam.FailWith(errAPI)
				w.restart()
			},
			// (the kernel keeps n2's route until n2 has sent its table again)
			want: with(upNoLearned),
			check: func(t *testing.T, w *world) {
				if got := w.writes(); fmt.Sprint(got) != fmt.Sprint(writes) {
					t.Errorf("API writes after the restart: %v, before %v", got, writes)
				}
			}},
		// n2's RhizomeNode loses its VTEP (its agent failed the same way
		// before this fix, or the object was re-created): the last good
		// VTEP stays and so does the kernel route through it.
		{name: "n2's RhizomeNode loses its VTEP address: its last good VTEP and the route through it stay",
			do: func(w *world) {
				w.ipam.FailWith(nil)
				w.peerUp(n2, "10.244.1.0/26")
				w.publishRaw(n2, v1alpha1.RhizomeNodeSpec{IPv4Address: "10.0.0.2/24", VXLANTunnelMACAddr: "02:00:00:00:00:02"})
			},
			want: up},
		{name: "n2's RhizomeNode disappears from the cache: the same",
			do: func(w *world) {
				if err := w.api.RhizomeV1alpha1().RhizomeNodes().Delete(w.ctx, n2, metav1.DeleteOptions{}); err != nil {
					t.Fatal(err)
				}
				w.syncCache()
			},
			want: up},
		{name: "this node's own RhizomeNode is deleted by someone: the next pass publishes it again",
			do: func(w *world) {
				if err := w.api.RhizomeV1alpha1().RhizomeNodes().Delete(w.ctx, self, metav1.DeleteOptions{}); err != nil {
					t.Fatal(err)
				}
				w.syncCache()
			},
			want: up},
		{name: "n2 leaves: its VTEP and routes go with it",
			do:   func(w *world) { w.deleteNode(n2) },
			want: []string{advBlock, ownBlock, blackhole, vx, rznVX, tunVX, ipamVX}},
	})
}
