package reconcile

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/bgp/policy"
	"github.com/rhizome-net/rhizome/bgp/rib"
	"github.com/rhizome-net/rhizome/bgp/topology"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

func node(name, ip string, labels ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}}}
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		n.Labels[k] = v
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
	return n
}

func ptr[T any](v T) *T { return &v }

// sink counts what the RIB sends.
type sink struct {
	mu     sync.Mutex
	routes map[netip.Prefix]rib.Route
	conv   int
}

func (s *sink) ApplyRoutes(b rib.Batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.routes == nil {
		s.routes = map[netip.Prefix]rib.Route{}
	}
	for _, r := range b.Set {
		s.routes[r.Prefix] = r
	}
	for _, p := range b.Withdraw {
		delete(s.routes, p)
	}
}

func (s *sink) Converged() { s.mu.Lock(); s.conv++; s.mu.Unlock() }

type fixture struct {
	t        *testing.T
	r        *Reconciler
	speakers []*bgp.Fake
	sink     *sink
	reg      *prometheus.Registry
	md5      MD5Stats
}

func newFixture(t *testing.T) *fixture { return newFixtureWith(t, nil) }

// newFixtureWith lets a test adjust the Config.
func newFixtureWith(t *testing.T, adjust func(*Config)) *fixture {
	f := &fixture{t: t, sink: &sink{}, reg: prometheus.NewRegistry()}
	cfg := Config{
		NewSpeaker: func() bgp.Speaker {
			sp := bgp.NewFake(t)
			f.speakers = append(f.speakers, sp)
			return sp
		},
		Sink:       f.sink,
		Registerer: f.reg,
		TCPStats:   func() (MD5Stats, error) { return f.md5, nil },
	}
	if adjust != nil {
		adjust(&cfg)
	}
	f.r = New(cfg)
	return f
}

// TestReconcileRestarting: an agent that found its routes of a previous run
// starts its speaker as restarting; one that did not, not.
func TestReconcileRestarting(t *testing.T) {
	for _, restarting := range []bool{false, true} {
		f := newFixtureWith(t, func(c *Config) { c.Restarting = restarting })
		f.reconcile(baseState())
		if got := f.sp().Global().Restarting; got != restarting {
			t.Errorf("Config.Restarting %v: speaker started with Restarting %v", restarting, got)
		}
	}
}

func (f *fixture) sp() *bgp.Fake { return f.speakers[len(f.speakers)-1] }

func (f *fixture) reconcile(st State) {
	f.t.Helper()
	if err := f.r.Reconcile(context.Background(), st); err != nil {
		f.t.Fatalf("reconcile: %v", err)
	}
}

func (f *fixture) wantOps(step string, want ...string) {
	f.t.Helper()
	got := f.sp().Ops()
	if diff := cmp.Diff(want, got); diff != "" {
		f.t.Errorf("%s: speaker calls (-want +got):\n%s", step, diff)
	}
}

func baseState() State {
	return State{
		Input: topology.Input{
			NodeName: "a",
			Nodes:    []*corev1.Node{node("a", "10.0.1.1", "rack=a"), node("b", "10.0.1.2"), node("c", "10.0.1.3")},
			Configs: []*v1alpha1.BGPConfiguration{{ObjectMeta: metav1.ObjectMeta{Name: "default"},
				Spec: v1alpha1.BGPConfigurationSpec{ServiceClusterIPs: []v1alpha1.ServiceIPBlock{{CIDR: "10.96.0.0/12"}}}}},
			Secret: func(name, key string) (string, error) { return "", errors.New("secret not found") },
		},
		Pools: []*v1alpha1.IPPool{{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.0/16"}}},
		Local: topology.Local{Blocks: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/26")}, Owners: baseOwners()},
	}
}

// baseOwners is the IPAM view of baseState: a block for each node.
func baseOwners(more ...policy.OwnedBlock) *policy.Owners {
	return policy.NewOwners(append([]policy.OwnedBlock{
		{CIDR: netip.MustParsePrefix("10.244.1.0/26"), Node: "a"},
		{CIDR: netip.MustParsePrefix("10.244.5.0/26"), Node: "b"},
		{CIDR: netip.MustParsePrefix("10.244.3.0/26"), Node: "c"},
	}, more...), nil)
}

func torPeer() *v1alpha1.BGPPeer {
	return &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "tor"}, Spec: v1alpha1.BGPPeerSpec{
		PeerIP: "10.0.1.254", ASNumber: ptr(int64(65001)), NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"rack": "a"}},
		Password: &v1alpha1.BGPPassword{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "bgp"}, Key: "tor"}},
	}}
}

func TestReconcileDiffs(t *testing.T) {
	f := newFixture(t)
	st := baseState()
	f.reconcile(st)
	f.wantOps("first pass",
		"start", "watch", "set-import-check all", "set-export-policy",
		"advertise 10.96.0.0/12", "advertise 10.244.1.0/26",
		"add-peer 10.0.1.2", "add-peer 10.0.1.3")
	if g := f.sp().Global(); g.ASN != 64512 || g.RouterID != netip.MustParseAddr("10.0.1.1") || g.ListenPort != 179 {
		t.Errorf("global = %+v", g)
	}

	f.reconcile(st)
	f.wantOps("same state again") // idempotent: nothing to do

	// A block claimed and another released, a borrowed address: this
	// node's own blocks are part of the import policy, so every received
	// path is judged again.
	st.Local = topology.Local{Blocks: []netip.Prefix{netip.MustParsePrefix("10.244.2.0/26")}, Borrowed: []netip.Addr{netip.MustParseAddr("10.244.7.7")},
		Owners: policy.NewOwners([]policy.OwnedBlock{
			{CIDR: netip.MustParsePrefix("10.244.2.0/26"), Node: "a"},
			{CIDR: netip.MustParsePrefix("10.244.5.0/26"), Node: "b"},
			{CIDR: netip.MustParsePrefix("10.244.3.0/26"), Node: "c"},
		}, map[netip.Addr]string{netip.MustParseAddr("10.244.7.7"): "a"})}
	f.reconcile(st)
	f.wantOps("blocks changed", "set-import-check all", "advertise 10.244.2.0/26", "advertise 10.244.7.7/32", "withdraw 10.244.1.0/26")

	// Another node claims a block, and a pod of c borrows an address:
	// only those prefixes are judged again.
	st.Local.Owners = policy.NewOwners([]policy.OwnedBlock{
		{CIDR: netip.MustParsePrefix("10.244.2.0/26"), Node: "a"},
		{CIDR: netip.MustParsePrefix("10.244.5.0/26"), Node: "b"},
		{CIDR: netip.MustParsePrefix("10.244.6.0/26"), Node: "b"},
		{CIDR: netip.MustParsePrefix("10.244.3.0/26"), Node: "c"},
	}, map[netip.Addr]string{netip.MustParseAddr("10.244.7.7"): "a", netip.MustParseAddr("10.244.5.9"): "c"})
	f.reconcile(st)
	f.wantOps("owners changed", "set-import-check [10.244.5.9/32 10.244.6.0/26]")

	// The ToR's Secret is missing: no session, status says why.
	st.Peers = []*v1alpha1.BGPPeer{torPeer()}
	f.reconcile(st)
	f.wantOps("tor without secret")
	s := f.status()
	tor := findSession(t, s, "10.0.1.254")
	if tor.State != StateNotStarted || !strings.Contains(tor.LastError, "Secret bgp key tor: secret not found") {
		t.Errorf("tor session status = %+v", tor)
	}
	// The Secret appears.
	st.Secret = func(name, key string) (string, error) { return "pw", nil }
	f.reconcile(st)
	f.wantOps("tor with secret", "set-import-check all", "add-peer 10.0.1.254")
	if p := f.sp().PeerConfigs()[netip.MustParseAddr("10.0.1.254")]; p.Password != "pw" || p.ASN != 65001 {
		t.Errorf("tor peer = %+v", p)
	}

	// One BGPPeer's timers change: only its session is touched.
	st.Peers = []*v1alpha1.BGPPeer{torPeer()}
	st.Peers[0].Spec.HoldTime = &metav1.Duration{Duration: 9e9}
	st.Peers[0].Spec.KeepaliveTime = &metav1.Duration{Duration: 3e9}
	f.reconcile(st)
	f.wantOps("tor timers", "update-peer 10.0.1.254")

	// A node leaves, another joins.
	st.Nodes = []*corev1.Node{node("a", "10.0.1.1", "rack=a"), node("b", "10.0.1.2"), node("d", "10.0.1.4")}
	f.reconcile(st)
	f.wantOps("node c left, d joined", "set-import-check all", "delete-peer 10.0.1.3", "add-peer 10.0.1.4")

	// The AS changes: every session is updated, the speaker stays.
	st.Configs = append(st.Configs, &v1alpha1.BGPConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "node.a"}, Spec: v1alpha1.BGPConfigurationSpec{ASNumber: ptr(int64(64999))}})
	f.reconcile(st)
	f.wantOps("AS changed", "update-peer 10.0.1.2", "update-peer 10.0.1.4", "update-peer 10.0.1.254")
	if len(f.speakers) != 1 {
		t.Errorf("%d speakers started, want 1", len(f.speakers))
	}

	// The router ID changes: a new speaker gets everything.
	st.RouterID = netip.MustParseAddr("192.0.2.1")
	f.reconcile(st)
	if len(f.speakers) != 2 || f.speakers[0].Running() {
		t.Fatalf("after a router ID change: %d speakers, first running %v", len(f.speakers), f.speakers[0].Running())
	}
	if got := len(f.sp().PeerConfigs()); got != 3 {
		t.Errorf("new speaker has %d peers, want 3", got)
	}
	if got := len(f.sp().Advertised()); got != 3 {
		t.Errorf("new speaker advertises %d routes, want 3", got)
	}
}

func (f *fixture) status() Status {
	f.t.Helper()
	s, err := f.r.Status(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

func findSession(t *testing.T, s Status, peer string) v1alpha1.BGPSessionStatus {
	t.Helper()
	for _, ss := range s.Sessions {
		if ss.Peer == peer {
			return ss
		}
	}
	t.Fatalf("no session %s in %+v", peer, s.Sessions)
	return v1alpha1.BGPSessionStatus{}
}

func TestReconcileErrorsAreRetried(t *testing.T) {
	f := newFixture(t)
	st := baseState()
	f.reconcile(st) // starts the speaker
	f.sp().Ops()
	st.Nodes = append(st.Nodes, node("d", "10.0.1.4"))
	f.sp().FailNext("add-peer", bgp.ErrInjected)
	err := f.r.Reconcile(context.Background(), st)
	if !errors.Is(err, bgp.ErrInjected) {
		t.Fatalf("reconcile error = %v, want the injected one", err)
	}
	if d := findSession(t, f.status(), "10.0.1.4"); d.State != StateNotStarted || !strings.Contains(d.LastError, "configuring the session failed: injected failure") {
		t.Errorf("failed session status = %+v", d)
	}
	f.reconcile(st)
	f.wantOps("retry", "set-import-check all", "add-peer 10.0.1.4", "add-peer 10.0.1.4")
	if d := findSession(t, f.status(), "10.0.1.4"); d.State == StateNotStarted {
		t.Errorf("session still failed after the retry: %+v", d)
	}

	// A node that cannot be computed changes nothing.
	bad := st
	bad.NodeName = "nope"
	if err := f.r.Reconcile(context.Background(), bad); err == nil {
		t.Fatal("reconcile of an unknown node succeeded")
	}
	f.wantOps("unknown node")
	if s := f.status(); len(s.Problems) != 1 || !strings.Contains(s.Problems[0], "node nope is not among") {
		t.Errorf("problems = %q", s.Problems)
	}
}

func TestStopLeavesSessionsShutdownCloses(t *testing.T) {
	f := newFixture(t)
	f.reconcile(baseState())
	f.sp().Ops()
	// Stop: nothing is said to the peers; the process exit closes the
	// connections (graceful restart at the peers).
	if err := f.r.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.wantOps("stop")
	if !f.sp().Running() {
		t.Error("Stop stopped the speaker")
	}
	if err := f.r.Reconcile(context.Background(), baseState()); err == nil {
		t.Error("Reconcile after Stop succeeded")
	}
	// Shutdown: Cease to every peer.
	if err := f.r.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.wantOps("shutdown", "stop")
	if f.sp().Running() {
		t.Error("Shutdown left the speaker running")
	}
}

// TestReconcileRouterIDChangeKeepsRoutes (issue 16): a new router ID (or
// listen port) needs a new speaker. The old one closes its sessions
// without a NOTIFICATION, the new one opens them as a restarting speaker,
// and the routes learned over the old sessions stay (in the sink: the
// kernel) until the new sessions have sent their tables; then what a peer
// did not send again goes.
func TestReconcileRouterIDChangeKeepsRoutes(t *testing.T) {
	f := newFixture(t)
	st := baseState()
	st.Local.Owners = baseOwners(policy.OwnedBlock{CIDR: netip.MustParsePrefix("10.244.2.0/26"), Node: "b"},
		policy.OwnedBlock{CIDR: netip.MustParsePrefix("10.244.4.0/26"), Node: "b"})
	f.reconcile(st)
	b, c := netip.MustParseAddr("10.0.1.2"), netip.MustParseAddr("10.0.1.3")
	path := func(p string, nh netip.Addr) bgp.ReceivedPath {
		return bgp.ReceivedPath{Prefix: netip.MustParsePrefix(p), NextHop: nh, Attrs: &bgp.Attrs{LocalPref: 100, HasLocalPref: true}}
	}
	old := f.sp()
	for _, pr := range []struct {
		peer netip.Addr
		p    string
	}{{b, "10.244.2.0/26"}, {b, "10.244.4.0/26"}, {c, "10.244.3.0/26"}} {
		old.SetState(pr.peer, bgp.StateEstablished, false, "")
		old.Receive(bgp.Update{Peer: pr.peer, Announced: []bgp.ReceivedPath{path(pr.p, pr.peer)}})
	}
	old.EndOfRIB(b, bgp.IPv4)
	old.EndOfRIB(c, bgp.IPv4)
	routes := func() []string {
		f.sink.mu.Lock()
		defer f.sink.mu.Unlock()
		var out []string
		for p := range f.sink.routes {
			out = append(out, p.String())
		}
		slices.Sort(out)
		return out
	}
	all := []string{"10.244.2.0/26", "10.244.3.0/26", "10.244.4.0/26"}
	if got := routes(); !slices.Equal(got, all) {
		t.Fatalf("learned %v, want %v", got, all)
	}

	st.RouterID = netip.MustParseAddr("192.0.2.1")
	f.reconcile(st)
	if ops := old.Ops(); len(ops) == 0 || ops[len(ops)-1] != "stop-gracefully" {
		t.Errorf("old speaker's last call %v, want stop-gracefully (no Cease)", ops)
	}
	nsp := f.sp()
	if nsp == old || !nsp.Global().Restarting {
		t.Errorf("the new speaker is not started as restarting: %+v", nsp.Global())
	}
	if got := routes(); !slices.Equal(got, all) {
		t.Errorf("routes right after the new speaker started: %v, want all kept", got)
	}
	// The new sessions come up; a session going through states before it
	// is established does not drop what is held.
	nsp.SetState(b, bgp.StateActive, false, "")
	nsp.SetState(b, bgp.StateEstablished, false, "")
	nsp.SetState(c, bgp.StateEstablished, false, "")
	if got := routes(); !slices.Equal(got, all) {
		t.Errorf("routes while the new sessions come up: %v, want all kept", got)
	}
	// b sends one of its two routes again; c sends its own.
	nsp.Receive(bgp.Update{Peer: b, Announced: []bgp.ReceivedPath{path("10.244.2.0/26", b)}})
	nsp.EndOfRIB(b, bgp.IPv4)
	if got, want := routes(), []string{"10.244.2.0/26", "10.244.3.0/26"}; !slices.Equal(got, want) {
		t.Errorf("after b's End-of-RIB: %v, want %v (b's route it did not send again gone, c's held)", got, want)
	}
	nsp.Receive(bgp.Update{Peer: c, Announced: []bgp.ReceivedPath{path("10.244.3.0/26", c)}})
	nsp.EndOfRIB(c, bgp.IPv4)
	if got, want := routes(), []string{"10.244.2.0/26", "10.244.3.0/26"}; !slices.Equal(got, want) {
		t.Errorf("after c's End-of-RIB: %v, want %v", got, want)
	}
	if s := f.r.RIB().Counters()[c]; s.Stale != 0 {
		t.Errorf("c's paths still stale after its End-of-RIB: %+v", s)
	}
}
