package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/rhizome-net/rhizome/agent/ribsink"
	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/bgp/reconcile"
	rzfake "github.com/rhizome-net/rhizome/crds/client/clientset/versioned/fake"
	rzlisters "github.com/rhizome-net/rhizome/crds/client/listers/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/internal/kubecore/fromclientset"
	"github.com/rhizome-net/rhizome/ipam"
	"github.com/rhizome-net/rhizome/routes"
)

// This file is the world the agent's pass runs in during its tests: every
// part it reads or drives, each a stateful fake that keeps what it was
// told, so that a test plays a sequence of events and checks, after each,
// everything the pass changed (world.lines).
//
//   - the cluster's objects, as the informer caches hold them (indexers
//     behind real listers), edited by the test;
//   - the API server the agent publishes its RhizomeNode to: the generated
//     fake clientset, whose RhizomeNodes flow back into the cache as an
//     informer would bring them, with failures injected per verb;
//   - the node's IPAM: ipam.Fake;
//   - the route programmer: a real routes.Reconciler over routes' kernel
//     fakes (the kernel table survives an agent restart, as the kernel
//     does), recorded;
//   - BGP: a real bgp/reconcile.Reconciler over bgp.Fake, whose learned
//     routes reach the route programmer through agent/ribsink exactly as
//     in the agent.

// The node under test and its neighbours. n2 shares n1's subnet, n3 is in
// another one (CrossSubnet encapsulates towards it).
const (
	self      = "n1"
	namespace = "rhizome-system"
	n2, n3    = "n2", "n3"
)

var (
	selfAddr = netip.MustParsePrefix("10.0.0.1/24")
	nodeIPs  = map[string]string{self: "10.0.0.1", n2: "10.0.0.2", n3: "10.0.1.3"}
	// gateway is the router towards n3's subnet: a direct route to n3
	// resolves through it.
	gateway = netip.MustParseAddr("10.0.0.254")
)

// world holds the cluster, the API server, the IPAM and the kernel, which
// outlive an agent; run is the current agent with its own parts.
type world struct {
	t   testing.TB
	ctx context.Context
	// pool is the cluster's first IP pool (default 10.244.0.0/16), named
	// "default"; more are further pools, each named after its CIDR.
	pool netip.Prefix
	more []netip.Prefix

	nodes, rzNodes, configs, peers, pools, secrets cache.Indexer

	api *rzfake.Clientset
	// apiWrites counts RhizomeNode writes by verb; apiFail makes the next
	// apiFailN requests of a verb fail with an error.
	apiMu     sync.Mutex
	apiWrites map[string]int
	apiFail   map[string]error
	apiFailN  map[string]int
	// statusPatches are the bodies of the RhizomeNode status applies.
	statusPatches []string

	ipam *ipam.Fake

	table *routes.FakeTable
	devs  *routes.FakeDevices
	nat   *routes.FakeNAT
	sys   *routes.FakeSysctls

	run *agentRun
}

// agentRun is one agent process: its parts and their goroutines.
type agentRun struct {
	a       *agent
	routes  *recordedRoutes
	bgp     *reconcile.Reconciler
	speaker *bgp.Fake
	stop    context.CancelFunc
	done    chan struct{}
}

func newIndexer() cache.Indexer {
	return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
}

// withPool sets the cluster's IP pool.
func withPool(cidr string) func(*world) {
	return func(w *world) { w.pool = netip.MustParsePrefix(cidr) }
}

// withMorePools adds IP pools after the first, without encapsulation.
func withMorePools(cidrs ...string) func(*world) {
	return func(w *world) {
		for _, c := range cidrs {
			w.more = append(w.more, netip.MustParsePrefix(c))
		}
	}
}

// newWorld returns a cluster with node n1 (this agent's) and one IP pool
// without encapsulation, and starts the agent.
func newWorld(t testing.TB, opts ...func(*world)) *world {
	t.Helper()
	w := &world{
		t: t, ctx: context.Background(), pool: netip.MustParsePrefix("10.244.0.0/16"),
		nodes: newIndexer(), rzNodes: newIndexer(), configs: newIndexer(), peers: newIndexer(), pools: newIndexer(), secrets: newIndexer(),
		api:       rzfake.NewSimpleClientset(),
		apiWrites: map[string]int{}, apiFail: map[string]error{}, apiFailN: map[string]int{},
		table: routes.NewFakeTable(t),
		devs: &routes.FakeDevices{UnderlayIndex: 2, UnderlayMTU: 1500,
			Resolved: map[netip.Addr][]routes.NextHop{netip.MustParseAddr(nodeIPs[n3]): {{Gateway: gateway, LinkIndex: 2}}}},
		nat: &routes.FakeNAT{},
		sys: &routes.FakeSysctls{Values: map[string]string{
			"net/ipv4/ip_forward": "1", "net/ipv4/conf/all/rp_filter": "0", "net/ipv4/conf/eth0/rp_filter": "0",
			"net/ipv4/conf/vxlan.rhizome/rp_filter": "0", "net/ipv4/conf/tunl0/rp_filter": "0",
		}},
	}
	for _, o := range opts {
		o(w)
	}
	w.ipam = ipam.NewFake(t, self, append([]netip.Prefix{w.pool}, w.more...)...)
	w.api.PrependReactor("*", "rhizomenodes", w.apiReactor)
	w.addNode(self)
	w.setPool(v1alpha1.EncapNever, v1alpha1.EncapNever, false)
	for _, p := range w.more {
		w.updatePool(ipam.Pool{Name: p.String(), CIDR: p, Allocatable: true, VXLANMode: v1alpha1.EncapNever, IPIPMode: v1alpha1.EncapNever})
	}
	w.start()
	t.Cleanup(w.stopAgent)
	return w
}

// apiReactor counts RhizomeNode writes and injects failures; it handles
// nothing itself unless it fails the request.
func (w *world) apiReactor(a clienttesting.Action) (bool, runtime.Object, error) {
	w.apiMu.Lock()
	defer w.apiMu.Unlock()
	verb := a.GetVerb()
	if a.GetSubresource() != "" {
		verb += "/" + a.GetSubresource()
	}
	if err := w.apiFail[verb]; err != nil && w.apiFailN[verb] > 0 {
		w.apiFailN[verb]--
		return true, nil, err
	}
	if verb != "get" && verb != "list" && verb != "watch" {
		w.apiWrites[verb]++
	}
	if verb == "patch/status" {
		// The fake clientset's tracker cannot apply a server-side apply
		// patch: keep its body, as the API server would apply it.
		w.statusPatches = append(w.statusPatches, string(a.(clienttesting.PatchAction).GetPatch()))
		return true, &v1alpha1.RhizomeNode{}, nil
	}
	return false, nil, nil
}

// failAPI makes the next n requests of verb ("get", "create", "update",
// "patch/status") on RhizomeNodes fail with err.
func (w *world) failAPI(verb string, n int, err error) {
	w.apiMu.Lock()
	defer w.apiMu.Unlock()
	w.apiFail[verb], w.apiFailN[verb] = err, n
}

func (w *world) writes() map[string]int {
	w.apiMu.Lock()
	defer w.apiMu.Unlock()
	return maps.Clone(w.apiWrites)
}

// start starts an agent over the world: new route programmer and BGP
// parts, the same cluster, IPAM and kernel.
func (w *world) start() {
	w.t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{w.t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cfg := DefaultConfig()
	cfg.NodeName, cfg.Namespace = self, namespace
	rec, err := routes.NewWithKernel(routes.Config{Interface: "eth0", Address: selfAddr, Logger: log, Registerer: prometheus.NewRegistry(),
		ResyncInterval: time.Hour}, routes.Kernel{Table: w.table, Devices: w.devs, NAT: w.nat, Sysctls: w.sys})
	if err != nil {
		w.t.Fatal(err)
	}
	run := &agentRun{routes: &recordedRoutes{Reconciler: rec, remote: map[netip.Prefix][]netip.Addr{}}, speaker: bgp.NewFake(w.t), done: make(chan struct{})}
	run.bgp = reconcile.New(reconcile.Config{
		NewSpeaker: func() bgp.Speaker { return run.speaker },
		Sink:       ribsink.New(run.routes, nil, log),
		Logger:     log,
		TCPStats:   func() (reconcile.MD5Stats, error) { return reconcile.MD5Stats{}, nil },
	})
	run.a = newAgent(cfg, log)
	run.a.attach(parts{
		Local: &localNode{Name: self, IPv4: selfAddr, Interface: "eth0", MTU: 1500},
		Caches: reconcile.Listers{
			Nodes:        corelisters.NewNodeLister(w.nodes),
			RhizomeNodes: rzlisters.NewRhizomeNodeLister(w.rzNodes),
			Configs:      rzlisters.NewBGPConfigurationLister(w.configs),
			Peers:        rzlisters.NewBGPPeerLister(w.peers),
			Pools:        rzlisters.NewIPPoolLister(w.pools),
			Secrets:      corelisters.NewSecretLister(w.secrets).Secrets(namespace),
		},
		RhizomeNodes: fromclientset.Rhizome(w.api.RhizomeV1alpha1()).RhizomeNodes(),
		IPAM:         w.ipam,
		Routes:       run.routes,
		BGP:          run.bgp,
	})
	ctx, cancel := context.WithCancel(w.ctx)
	run.stop = cancel
	go func() {
		defer close(run.done)
		_ = rec.Run(ctx)
	}()
	w.run = run
}

// stopAgent stops the agent as a restart does: routes stay in the kernel,
// the speaker's sessions are left to the process's exit.
func (w *world) stopAgent() {
	if w.run == nil {
		return
	}
	if err := w.run.bgp.Stop(w.ctx); err != nil {
		w.t.Errorf("stopping BGP: %v", err)
	}
	w.run.stop()
	<-w.run.done
	if err := w.run.routes.Close(); err != nil {
		w.t.Errorf("closing the route programmer: %v", err)
	}
	w.run = nil
}

// restart is an agent restart: a new process over the same world.
func (w *world) restart() {
	w.stopAgent()
	w.start()
}

// pass runs one pass of the agent, lets the informer bring what it
// published back into the cache, and waits until the route programmer
// has applied what the pass gave it.
func (w *world) pass() {
	w.t.Helper()
	w.run.a.pass(w.ctx)
	w.syncCache()
	w.settle()
}

// settle waits for a full pass of the route programmer that began after
// everything so far (see routes.Reconciler.Run: a pass in flight when we
// trigger may predate it, the one after it cannot), then for its writes.
func (w *world) settle() {
	w.t.Helper()
	r := w.run.routes
	for range 2 {
		r.Trigger()
		p := r.Status().Passes
		deadline := time.Now().Add(10 * time.Second)
		for r.Status().Passes <= p {
			if time.Now().After(deadline) {
				w.t.Fatalf("the route programmer made no pass within 10s")
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	r.WaitWritten()
}

// syncCache copies the API server's RhizomeNodes into the cache, as the
// agent's informer would.
func (w *world) syncCache() {
	w.t.Helper()
	list, err := w.api.Tracker().List(schema.GroupVersionResource{Group: v1alpha1.SchemeGroupVersion.Group, Version: "v1alpha1", Resource: "rhizomenodes"},
		schema.GroupVersionKind{Group: v1alpha1.SchemeGroupVersion.Group, Version: "v1alpha1", Kind: "RhizomeNode"}, "")
	if err != nil {
		w.t.Fatal(err)
	}
	var objs []any
	for _, o := range list.(*v1alpha1.RhizomeNodeList).Items {
		objs = append(objs, o.DeepCopy())
	}
	if err := w.rzNodes.Replace(objs, ""); err != nil {
		w.t.Fatal(err)
	}
}

// addNode adds a Node with its InternalIP (a joining node).
func (w *world) addNode(name string, internalIPs ...string) {
	w.t.Helper()
	if len(internalIPs) == 0 {
		internalIPs = []string{nodeIPs[name]}
	}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name)}}
	for _, ip := range internalIPs {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip})
	}
	if err := w.nodes.Add(n); err != nil {
		w.t.Fatal(err)
	}
}

// deleteNode removes a Node, and its RhizomeNode with it (the garbage
// collector does, through the owner reference).
func (w *world) deleteNode(name string) {
	w.t.Helper()
	obj, ok, _ := w.nodes.GetByKey(name)
	if !ok {
		w.t.Fatalf("no Node %s", name)
	}
	if err := w.nodes.Delete(obj); err != nil {
		w.t.Fatal(err)
	}
	err := w.api.RhizomeV1alpha1().RhizomeNodes().Delete(w.ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		w.t.Fatal(err)
	}
	w.syncCache()
}

// publishVTEP is another node's agent publishing its RhizomeNode.
func (w *world) publishVTEP(name, mac, vtep string) {
	w.t.Helper()
	w.publishRaw(name, v1alpha1.RhizomeNodeSpec{IPv4Address: nodeIPs[name] + "/24", VXLANTunnelMACAddr: mac, VXLANTunnelAddress: vtep})
}

// publishRaw writes another node's RhizomeNode spec as it is, broken or not.
func (w *world) publishRaw(name string, spec v1alpha1.RhizomeNodeSpec) {
	w.t.Helper()
	rzn := &v1alpha1.RhizomeNode{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
	c := w.api.RhizomeV1alpha1().RhizomeNodes()
	if cur, err := c.Get(w.ctx, name, metav1.GetOptions{}); err == nil {
		cur.Spec = spec
		_, err = c.Update(w.ctx, cur, metav1.UpdateOptions{})
		if err != nil {
			w.t.Fatal(err)
		}
	} else if _, err := c.Create(w.ctx, rzn, metav1.CreateOptions{}); err != nil {
		w.t.Fatal(err)
	}
	w.apiMu.Lock()
	clear(w.apiWrites) // other agents' writes are not ours
	w.apiMu.Unlock()
	w.syncCache()
}

// setPool edits the IP pool, in the cache (BGP reads it) and in the IPAM
// (routes read it from the IPAM's view), as an IPPool edit reaches both.
func (w *world) setPool(vxlan, ipip v1alpha1.EncapMode, nat bool) {
	w.t.Helper()
	w.updatePool(ipam.Pool{Name: "default", CIDR: w.pool, Allocatable: true, VXLANMode: vxlan, IPIPMode: ipip, NATOutgoing: nat})
}

// updatePool edits one pool (named by p.CIDR) in the API and the IPAM; a
// pool that is not Allocatable is disabled.
func (w *world) updatePool(p ipam.Pool) {
	w.t.Helper()
	obj := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: p.Name},
		Spec: v1alpha1.IPPoolSpec{CIDR: p.CIDR.String(), VXLANMode: p.VXLANMode, IPIPMode: p.IPIPMode, NATOutgoing: p.NATOutgoing, Disabled: !p.Allocatable}}
	if err := w.pools.Update(obj); err != nil {
		w.t.Fatal(err)
	}
	w.ipam.SetPool(p)
}

// allocate is a pod of this node getting an address (CNI ADD).
func (w *world) allocate(handle string) netip.Addr {
	w.t.Helper()
	res, err := w.ipam.Allocate(w.ctx, ipam.Request{Handle: handle, Families: []int{4}})
	if err != nil {
		w.t.Fatal(err)
	}
	return res.Addresses[0].Addr
}

// peerUp brings n's session up and has it send its routes and its
// End-of-RIB, as the node's agent would: each route is a block the node
// claimed (recorded in the IPAM first, if it is not there yet, so that the
// import policy finds it the node's).
func (w *world) peerUp(name string, prefixes ...string) {
	w.t.Helper()
	known := map[netip.Prefix]bool{}
	for _, b := range w.ipam.Snapshot().Blocks {
		known[b.CIDR] = true
	}
	claimed := false
	for _, p := range prefixes {
		if b := netip.MustParsePrefix(p); !known[b] {
			w.ipam.AddBlock(b, name)
			claimed = true
		}
	}
	if claimed {
		w.pass() // the agent's pass on the IPAM's signal
	}
	w.announce(name, prefixes...)
}

// announce brings n's session up and has it send routes and its
// End-of-RIB, whatever the IPAM says of them.
func (w *world) announce(name string, prefixes ...string) {
	w.t.Helper()
	a := netip.MustParseAddr(nodeIPs[name])
	w.run.speaker.SetState(a, bgp.StateEstablished, false, "")
	u := bgp.Update{Peer: a}
	for _, p := range prefixes {
		u.Announced = append(u.Announced, bgp.ReceivedPath{Prefix: netip.MustParsePrefix(p), NextHop: a, Attrs: &bgp.Attrs{LocalPref: 100, HasLocalPref: true}})
	}
	w.run.speaker.Receive(u)
	w.run.speaker.EndOfRIB(a, bgp.IPv4)
	w.settle()
}

// peerLost drops n's session without graceful restart.
func (w *world) peerLost(name string) {
	w.t.Helper()
	w.run.speaker.SetState(netip.MustParseAddr(nodeIPs[name]), bgp.StateIdle, false, "hold timer expired")
	w.settle()
}

// lines renders everything the pass decides or causes, sorted:
//
//	block/lent/pool/vtep/tunnel  the route programmer's node-local state
//	learned                      the remote routes it was given (agent/ribsink)
//	kernel                       our routes in the kernel
//	peer/advertise               the BGP speaker's sessions and routes
//	rhizomenode                  this node's RhizomeNode spec in the API
//	ipam                         the agent's own (tunnel) allocations
//	notready                     readiness conditions that do not hold
func (w *world) lines() []string {
	w.t.Helper()
	var out []string
	r := w.run.routes
	if st, ok := r.last(); ok {
		for _, b := range st.Blocks {
			out = append(out, "block "+b.Prefix.String())
			for _, a := range slices.SortedFunc(maps.Keys(b.Lent), netip.Addr.Compare) {
				out = append(out, fmt.Sprintf("lent %s -> %s", a, b.Lent[a]))
			}
		}
		for _, p := range st.Pools {
			l := fmt.Sprintf("pool %s vxlan=%s ipip=%s", p.CIDR, p.VXLANMode, p.IPIPMode)
			if p.NATOutgoing {
				l += " nat"
			}
			out = append(out, l)
		}
		for _, v := range st.VTEPs {
			out = append(out, fmt.Sprintf("vtep %s %s %s", v.NodeIP, v.MAC, v.Address))
		}
		if st.VXLANAddress.IsValid() {
			out = append(out, "tunnel vxlan "+st.VXLANAddress.String())
		}
		if st.IPIPAddress.IsValid() {
			out = append(out, "tunnel ipip "+st.IPIPAddress.String())
		}
	}
	for p, nhs := range r.learned() {
		out = append(out, fmt.Sprintf("learned %s via %s", p, joinAddrs(nhs)))
	}
	for _, k := range w.table.Routes() {
		out = append(out, "kernel "+k.String())
	}
	sp := w.run.speaker
	for a, p := range sp.PeerConfigs() {
		out = append(out, fmt.Sprintf("peer %s as %d", a, p.ASN))
	}
	for p := range sp.Advertised() {
		out = append(out, "advertise "+p.String())
	}
	if rzn, err := w.api.RhizomeV1alpha1().RhizomeNodes().Get(w.ctx, self, metav1.GetOptions{}); err == nil {
		l := "rhizomenode ipv4=" + rzn.Spec.IPv4Address
		if rzn.Spec.VXLANTunnelAddress != "" {
			l += " vtep=" + rzn.Spec.VXLANTunnelAddress
		}
		if rzn.Spec.VXLANTunnelMACAddr != "" {
			l += " mac"
		}
		if len(rzn.OwnerReferences) != 1 || rzn.OwnerReferences[0].Kind != "Node" || rzn.OwnerReferences[0].Name != self {
			l += fmt.Sprintf(" owners=%v", rzn.OwnerReferences)
		}
		out = append(out, l)
	}
	for h, as := range w.ipam.Allocations() {
		if strings.HasPrefix(h, tunnelHandlePrefix) {
			out = append(out, fmt.Sprintf("ipam %s %s", h, joinAddrs(as)))
		}
	}
	for _, nr := range w.run.a.ready.NotReady() {
		if !strings.HasPrefix(nr, "caches:") && !strings.HasPrefix(nr, "node:") && !strings.HasPrefix(nr, "bgp:") && !strings.HasPrefix(nr, "routes: starting") {
			out = append(out, "notready "+nr)
		}
	}
	slices.Sort(out)
	return out
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

// testWriter sends logs to t.Log (with -v).
type testWriter struct{ t testing.TB }

func (tw testWriter) Write(p []byte) (int, error) {
	tw.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// errAPI is an API server failing (a 500 with a message).
var errAPI = apierrors.NewInternalError(errors.New("etcdserver: request timed out"))
