package reconcile

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/bgp/policy"
	"github.com/rhizome-net/rhizome/bgp/topology"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// These tests run whole BGP stacks — topology, reconciler, embedded GoBGP,
// RIB — for several "nodes" in this process. Each node is a loopback
// address (127.0.0.x) with its own listen port, so no namespace or root is
// needed; the netns tests with real agents, BIRD and FRR live elsewhere.

type meshNode struct {
	name  string
	ip    netip.Addr
	port  int32
	block netip.Prefix
	r     *Reconciler
	sink  *sink
	stop  context.CancelFunc
}

func freePort(t *testing.T, a netip.Addr) int32 {
	t.Helper()
	l, err := net.Listen("tcp", netip.AddrPortFrom(a, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

func quietLogger() *slog.Logger {
	if os.Getenv("RHIZOME_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// cluster holds the shared cluster state that every node reconciles.
type cluster struct {
	t       *testing.T
	nodes   []*meshNode
	configs []*v1alpha1.BGPConfiguration
	peers   []*v1alpha1.BGPPeer
	labels  map[string]map[string]string
	// secrets are the Secret values each node's agent can read
	// ("name/key" -> value).
	secrets map[string]map[string]string
	// claimed are blocks in the IPAM view beside each node's own block
	// (prefix -> node).
	claimed map[netip.Prefix]string
}

func newCluster(t *testing.T, base int, names ...string) *cluster {
	c := &cluster{t: t, labels: map[string]map[string]string{}}
	c.configs = []*v1alpha1.BGPConfiguration{{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1alpha1.BGPConfigurationSpec{
		KeepaliveTime: &metav1.Duration{Duration: 3 * time.Second}, HoldTime: &metav1.Duration{Duration: 9 * time.Second},
	}}}
	for i, name := range names {
		n := &meshNode{name: name, ip: netip.AddrFrom4([4]byte{127, 0, 0, byte(base + i)}), sink: &sink{}}
		n.port = freePort(t, n.ip)
		n.block = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i + 1), 0}), 26)
		c.configs = append(c.configs, &v1alpha1.BGPConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "node." + name},
			Spec: v1alpha1.BGPConfigurationSpec{ListenPort: ptr(n.port)}})
		c.nodes = append(c.nodes, n)
	}
	return c
}

func (c *cluster) start(n *meshNode) {
	n.r = New(Config{
		NewSpeaker:      func() bgp.Speaker { return bgp.NewGoBGP(bgp.GoBGPOptions{Logger: quietLogger().With("node", n.name)}) },
		Sink:            n.sink,
		Logger:          quietLogger().With("node", n.name),
		ConvergeTimeout: time.Minute,
	})
	ctx, cancel := context.WithCancel(context.Background())
	n.stop = cancel
	go n.r.Run(ctx)
	c.t.Cleanup(func() {
		cancel()
		n.r.Shutdown(context.Background())
	})
}

func (c *cluster) state(n *meshNode) State {
	st := State{Input: topology.Input{NodeName: n.name, Configs: c.configs, Peers: c.peers,
		Secret: func(name, key string) (string, error) {
			if v, ok := c.secrets[n.name][name+"/"+key]; ok {
				return v, nil
			}
			return "", fmt.Errorf("secret %s not found", name)
		}}}
	for _, m := range c.nodes {
		k := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: m.name, Labels: c.labels[m.name]}}
		k.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: m.ip.String()}}
		st.Nodes = append(st.Nodes, k)
	}
	st.Pools = []*v1alpha1.IPPool{{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.0/16", VXLANMode: v1alpha1.EncapCrossSubnet}}}
	if n.block.IsValid() {
		st.Local.Blocks = []netip.Prefix{n.block}
	}
	st.Local.Owners = c.owners()
	return st
}

// owners is the IPAM view every node shares: each node's block and the
// blocks claimed besides.
func (c *cluster) owners() *policy.Owners {
	var blocks []policy.OwnedBlock
	for _, m := range c.nodes {
		if m.block.IsValid() {
			blocks = append(blocks, policy.OwnedBlock{CIDR: m.block, Node: m.name})
		}
	}
	for p, n := range c.claimed {
		blocks = append(blocks, policy.OwnedBlock{CIDR: p, Node: n})
	}
	return policy.NewOwners(blocks, nil)
}

// reconcileAll runs one pass on every running node, as each agent would
// after an informer event.
func (c *cluster) reconcileAll() {
	c.t.Helper()
	for _, n := range c.nodes {
		if n.r == nil {
			continue
		}
		if err := n.r.Reconcile(context.Background(), c.state(n)); err != nil {
			c.t.Fatalf("%s: %v", n.name, err)
		}
	}
}

func (s *sink) table() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, r := range s.routes {
		var nhs []string
		for _, nh := range r.NextHops {
			nhs = append(nhs, nh.String())
		}
		out = append(out, fmt.Sprintf("%s via %s", r.Prefix, strings.Join(nhs, ",")))
	}
	slices.Sort(out)
	return out
}

func (s *sink) converged() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conv > 0
}

// expected is what a node's sink should hold: the other nodes' blocks.
func (c *cluster) expected(self *meshNode) []string {
	var out []string
	for _, m := range c.nodes {
		if m == self || m.r == nil || !m.block.IsValid() {
			continue
		}
		out = append(out, fmt.Sprintf("%s via %s", m.block, m.ip))
	}
	slices.Sort(out)
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (c *cluster) waitConverged(step string) {
	c.t.Helper()
	for _, n := range c.nodes {
		if n.r == nil {
			continue
		}
		want := c.expected(n)
		waitFor(c.t, fmt.Sprintf("%s: %s to hold %v", step, n.name, want), func() bool {
			got := n.sink.table()
			if !slices.Equal(got, want) {
				return false
			}
			st, err := n.r.Status(context.Background())
			return err == nil && st.Established == st.Total
		})
	}
}

func TestMeshInProcess(t *testing.T) {
	c := newCluster(t, 81, "a", "b", "c")
	for _, n := range c.nodes {
		c.start(n)
	}
	c.reconcileAll()
	c.waitConverged("mesh up")
	for _, n := range c.nodes {
		waitFor(t, n.name+" converged", n.sink.converged)
		st, _ := n.r.Status(context.Background())
		if st.SessionsEstablished() != "2/2" || !st.Converged {
			t.Errorf("%s status = %+v", n.name, st)
		}
		for _, s := range st.Sessions {
			if s.Kind != v1alpha1.SessionMesh || s.PrefixesReceived != 1 || s.PrefixesAccepted != 1 || s.PrefixesAdvertised != 1 || s.Since == nil {
				t.Errorf("%s: session %+v", n.name, s)
			}
		}
	}

	// A block released on a: withdrawn everywhere.
	a := c.nodes[0]
	a.block = netip.Prefix{}
	c.reconcileAll()
	c.waitConverged("a's block released")

	// Node c leaves: its agent stops, the others drop the session and its
	// routes.
	cn := c.nodes[2]
	cn.stop()
	cn.r.Shutdown(context.Background())
	c.nodes = c.nodes[:2]
	c.reconcileAll()
	c.waitConverged("c left")
	for _, n := range c.nodes {
		if st, _ := n.r.Status(context.Background()); st.Total != 1 {
			t.Errorf("%s still has %d sessions", n.name, st.Total)
		}
	}

	// Node d joins.
	d := &meshNode{name: "d", ip: netip.MustParseAddr("127.0.0.84"), block: netip.MustParsePrefix("10.244.4.0/26"), sink: &sink{}}
	d.port = freePort(t, d.ip)
	c.configs = append(c.configs, &v1alpha1.BGPConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "node.d"}, Spec: v1alpha1.BGPConfigurationSpec{ListenPort: ptr(d.port)}})
	c.nodes = append(c.nodes, d)
	c.start(d)
	c.reconcileAll()
	c.waitConverged("d joined")
}

func TestRouteReflectorInProcess(t *testing.T) {
	c := newCluster(t, 91, "rr", "c1", "c2", "c3")
	c.configs[0].Spec.NodeToNodeMesh = ptr(false)
	for _, cfg := range c.configs {
		if cfg.Name == "node.rr" {
			cfg.Spec.RouteReflectorClusterID = "224.0.0.1"
		}
	}
	c.labels["rr"] = map[string]string{"rhizome.dev/route-reflector": "true"}
	c.peers = []*v1alpha1.BGPPeer{{ObjectMeta: metav1.ObjectMeta{Name: "to-rr"}, Spec: v1alpha1.BGPPeerSpec{
		PeerSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"rhizome.dev/route-reflector": "true"}},
	}}}
	for _, n := range c.nodes {
		c.start(n)
	}
	c.reconcileAll()
	// Every client has every other node's block, with the originating
	// client (not the reflector) as next hop; the reflector has them all.
	c.waitConverged("reflected")
	for _, n := range c.nodes[1:] {
		st, _ := n.r.Status(context.Background())
		if st.Total != 1 || st.Sessions[0].Kind != v1alpha1.SessionRR || st.Sessions[0].Source != "to-rr" {
			t.Errorf("%s sessions = %+v", n.name, st.Sessions)
		}
	}
	if st, _ := c.nodes[0].r.Status(context.Background()); st.SessionsEstablished() != "3/3" {
		t.Errorf("reflector sessions = %s", st.SessionsEstablished())
	}
	// A client's route that is not in a pool is not reflected.
	c1 := c.nodes[1]
	sp := c1.r.current.Load()
	if err := sp.Advertise(context.Background(), bgp.Advertisement{Prefix: netip.MustParsePrefix("192.168.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reflector to receive 192.168.0.0/24", func() bool {
		cnt := c.nodes[0].r.RIB().Counters()[c1.ip]
		return cnt.Received == 2 && cnt.Rejected[policy.RejectedNotInPool] == 1
	})
	// A barrier: a pool route sent after it, a block c1 claimed. The
	// reflector handles c1's updates in order, so once the clients have
	// this one, a wrongly reflected 192.168.0.0/24 would be there too.
	c.claimed = map[netip.Prefix]string{netip.MustParsePrefix("10.244.99.0/26"): c1.name}
	c.reconcileAll()
	if err := sp.Advertise(context.Background(), bgp.Advertisement{Prefix: netip.MustParsePrefix("10.244.99.0/26")}); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes[2:] {
		waitFor(t, n.name+" to receive the barrier route", func() bool {
			return slices.ContainsFunc(n.sink.table(), func(l string) bool { return strings.HasPrefix(l, "10.244.99.0/26 via "+c1.ip.String()) })
		})
	}
	for _, n := range c.nodes[2:] {
		// the reflector's own block, two reflected ones and the barrier
		if cnt := n.r.RIB().Counters()[c.nodes[0].ip]; cnt.Received != 4 {
			t.Errorf("%s received %d routes from the reflector, want 4 (no 192.168.0.0/24)", n.name, cnt.Received)
		}
	}

	// c1 turns rogue: it announces c2's block (a more specific of it
	// would be the same) and a block nobody has claimed yet. The
	// reflector refuses both at its import check: neither reaches c3,
	// whose route to c2's block stays through c2.
	c2, c3 := c.nodes[2], c.nodes[3]
	fresh := netip.MustParsePrefix("10.244.98.0/26")
	for _, p := range []netip.Prefix{c2.block, fresh} {
		if err := sp.Advertise(context.Background(), bgp.Advertisement{Prefix: p}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the reflector to hold c1's claims, rejected", func() bool {
		cnt := c.nodes[0].r.RIB().Counters()[c1.ip]
		return cnt.Rejected[policy.RejectedNotOwner] == 1 && cnt.Rejected[policy.RejectedHeld] == 1
	})
	// Barrier again: a route of c1's that is its own, sent after them.
	c.claimed[netip.MustParsePrefix("10.244.97.0/26")] = c1.name
	c.reconcileAll()
	if err := sp.Advertise(context.Background(), bgp.Advertisement{Prefix: netip.MustParsePrefix("10.244.97.0/26")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "c3 to receive the second barrier", func() bool {
		return slices.ContainsFunc(c3.sink.table(), func(l string) bool { return strings.HasPrefix(l, "10.244.97.0/26 via ") })
	})
	if cnt := c3.r.RIB().Counters()[c.nodes[0].ip]; cnt.Received != 5 {
		t.Errorf("c3 received %d routes from the reflector, want 5 (none of c1's claims)", cnt.Received)
	}
	if tbl := c3.sink.table(); !slices.Contains(tbl, c2.block.String()+" via "+c2.ip.String()) || slices.ContainsFunc(tbl, func(l string) bool { return strings.HasPrefix(l, fresh.String()) }) {
		t.Errorf("c3 holds %v", tbl)
	}
	// The fresh block's IPAMBlock arrives, c1's: the reflector's next
	// pass lets its held path through, without c1 sending it again.
	c.claimed[fresh] = c1.name
	c.reconcileAll()
	waitFor(t, "c3 to learn the fresh block through the reflector", func() bool {
		return slices.Contains(c3.sink.table(), fresh.String()+" via "+c1.ip.String())
	})
}

// TestMeshPasswordKeepsImpostorsOut: the mesh has a password
// (nodeMeshPassword). a and b know it; c is an impostor — registered as a
// Node, running a speaker, but without the password (its own guess). a and
// b peer and exchange their blocks; c never gets a session with either,
// so neither learns c's block nor c theirs. Without the password (before
// nodeMeshPassword) any speaker at a Node's address joined the mesh.
func TestMeshPasswordKeepsImpostorsOut(t *testing.T) {
	c := newCluster(t, 91, "a", "b", "c")
	c.configs[0].Spec.NodeMeshPassword = &v1alpha1.BGPPassword{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "mesh"}, Key: "password"}}
	c.secrets = map[string]map[string]string{
		"a": {"mesh/password": "s3cret"}, "b": {"mesh/password": "s3cret"}, "c": {"mesh/password": "guess"},
	}
	for _, n := range c.nodes {
		c.start(n)
	}
	c.reconcileAll()
	a, b, imp := c.nodes[0], c.nodes[1], c.nodes[2]
	waitFor(t, "a to learn b's block", func() bool { return slices.Contains(a.sink.table(), b.block.String()+" via "+b.ip.String()) })
	waitFor(t, "b to learn a's block", func() bool { return slices.Contains(b.sink.table(), a.block.String()+" via "+a.ip.String()) })
	for end := time.Now().Add(8 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		for _, n := range []*meshNode{a, b} {
			for _, r := range n.sink.table() {
				if strings.HasPrefix(r, imp.block.String()) {
					t.Fatalf("%s learned the impostor's block: %s", n.name, r)
				}
			}
		}
		if tbl := imp.sink.table(); len(tbl) != 0 {
			t.Fatalf("the impostor learned %v", tbl)
		}
		st, err := imp.r.Status(context.Background())
		if err == nil && st.Established != 0 {
			t.Fatalf("the impostor has %d established sessions", st.Established)
		}
	}
	// A node whose agent cannot read the Secret opens no mesh session at
	// all rather than one without the password.
	c.secrets["c"] = map[string]string{}
	c.reconcileAll()
	st, err := imp.r.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Sessions {
		if s.State == "Established" {
			t.Errorf("session %+v established without the mesh password", s)
		}
	}
}
