package rib

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/bgp/policy"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

// sink is a stateful Sink: it applies batches to a table and fails the test
// on batches that break the contract.
type sink struct {
	t         *testing.T
	mu        sync.Mutex
	routes    map[netip.Prefix]Route
	converged int
	batches   int
	// sent lists every prefix of every batch's Set, in order.
	sent []string
}

func newSink(t *testing.T) *sink { return &sink{t: t, routes: make(map[netip.Prefix]Route)} }

func (s *sink) ApplyRoutes(b Batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches++
	seen := make(map[netip.Prefix]bool)
	for _, r := range b.Set {
		if seen[r.Prefix] {
			s.t.Errorf("batch names %s twice", r.Prefix)
		}
		seen[r.Prefix] = true
		if len(r.NextHops) == 0 {
			s.t.Errorf("route %s without next hops", r.Prefix)
		}
		if !slices.IsSortedFunc(r.NextHops, netip.Addr.Compare) {
			s.t.Errorf("route %s: next hops not sorted", r.Prefix)
		}
		s.routes[r.Prefix] = r
		s.sent = append(s.sent, r.Prefix.String())
	}
	for _, p := range b.Withdraw {
		if seen[p] {
			s.t.Errorf("batch names %s twice", p)
		}
		seen[p] = true
		if _, ok := s.routes[p]; !ok {
			s.t.Errorf("withdraw of %s, which the sink does not hold", p)
		}
		delete(s.routes, p)
	}
}

func (s *sink) Converged() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.converged++
	if s.converged > 1 {
		s.t.Errorf("Converged called %d times", s.converged)
	}
}

// table renders the sink's routes as "prefix via nh1,nh2" lines.
func (s *sink) table() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, r := range s.routes {
		var nhs []string
		for _, nh := range r.NextHops {
			nhs = append(nhs, nh.String())
		}
		out = append(out, r.Prefix.String()+" via "+strings.Join(nhs, ","))
	}
	slices.Sort(out)
	return out
}

func (s *sink) convergedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.converged
}

type env struct {
	t    *testing.T
	sp   *bgp.Fake
	rib  *RIB
	sink *sink
}

var (
	nodeB = addr("10.0.0.2")
	nodeC = addr("10.0.0.3")
	tor   = addr("10.0.0.1")
	tor2  = addr("10.0.0.254")
)

// defaultOwners: node-b (10.0.0.2) and node-c (10.0.0.3) with their blocks,
// and an address of node-c's block that a pod of node-b borrowed.
func defaultOwners() *policy.Owners {
	return policy.NewOwners([]policy.OwnedBlock{
		{CIDR: pfx("10.244.1.0/26"), Node: "self"},
		{CIDR: pfx("10.244.2.0/26"), Node: "b"}, {CIDR: pfx("10.244.3.0/26"), Node: "b"},
		{CIDR: pfx("10.244.5.0/26"), Node: "b"}, {CIDR: pfx("10.250.0.0/26"), Node: "b"},
		{CIDR: pfx("10.244.4.0/26"), Node: "c"}, {CIDR: pfx("10.244.9.0/26"), Node: "c"},
	}, map[netip.Addr]string{addr("10.244.9.7"): "b"})
}

var defaultNodes = policy.NewNodes([]policy.NodeInfo{
	{Name: "self", Addresses: []netip.Addr{addr("10.0.0.10")}, RouterID: addr("10.0.0.10")},
	{Name: "b", Addresses: []netip.Addr{nodeB}, RouterID: nodeB},
	{Name: "c", Addresses: []netip.Addr{nodeC}, RouterID: nodeC},
})

func defaultPolicy(pools ...policy.Pool) *policy.Import {
	return ownersPolicy(defaultOwners(), pools...)
}

func ownersPolicy(owners *policy.Owners, pools ...policy.Pool) *policy.Import {
	if pools == nil {
		pools = []policy.Pool{{Name: "default", CIDR: pfx("10.244.0.0/16"), BlockBits: 26}}
	}
	accept, _ := policy.FromFilters([]v1alpha1.FilterRule{
		{CIDR: "0.0.0.0/0", MatchOperator: v1alpha1.MatchEqual, Action: v1alpha1.FilterAccept},
		{CIDR: "192.168.0.0/16", Action: v1alpha1.FilterAccept},
	})
	return policy.Compile(policy.Input{
		Pools:        pools,
		Services:     []netip.Prefix{pfx("10.96.0.0/12")},
		OwnBlocks:    []netip.Prefix{pfx("10.244.1.0/26")},
		OwnAddresses: []netip.Addr{addr("10.0.0.10")},
		Owners:       owners,
		Nodes:        defaultNodes,
		Peers: map[netip.Addr]policy.PeerPolicy{
			nodeB: {Internal: true, Node: "b"}, nodeC: {Internal: true, Node: "c", Reflector: true},
			tor: {Rules: accept}, tor2: {Rules: accept},
		},
	})
}

func defaultSettings() Settings {
	return Settings{
		Policy: defaultPolicy(),
		Peers:  map[netip.Addr]PeerInfo{nodeB: {}, nodeC: {}, tor: {EBGP: true}, tor2: {EBGP: true}},
	}
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	sp := bgp.NewFake(t)
	ctx := context.Background()
	if err := sp.Start(ctx, bgp.Global{ASN: 64512, RouterID: addr("10.0.0.10")}); err != nil {
		t.Fatal(err)
	}
	s := newSink(t)
	cfg.Speaker, cfg.Sink = sp, s
	r := New(cfg)
	if err := sp.Watch(ctx, r); err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Addr{nodeB, nodeC, tor, tor2} {
		asn := uint32(64512)
		if a == tor || a == tor2 {
			asn = 65001
		}
		if err := sp.AddPeer(ctx, bgp.Peer{Address: a, ASN: asn}); err != nil {
			t.Fatal(err)
		}
	}
	return &env{t: t, sp: sp, rib: r, sink: s}
}

func ibgp() *bgp.Attrs { return &bgp.Attrs{Origin: 0, LocalPref: 100, HasLocalPref: true} }

func ebgp(as ...uint32) *bgp.Attrs {
	return &bgp.Attrs{Origin: 0, ASPath: as, ASPathLen: len(as)}
}

func announce(peer netip.Addr, nh netip.Addr, a *bgp.Attrs, prefixes ...string) bgp.Update {
	u := bgp.Update{Peer: peer}
	for _, p := range prefixes {
		u.Announced = append(u.Announced, bgp.ReceivedPath{Prefix: pfx(p), NextHop: nh, Attrs: a})
	}
	return u
}

func withdraw(peer netip.Addr, prefixes ...string) bgp.Update {
	u := bgp.Update{Peer: peer}
	for _, p := range prefixes {
		u.Withdrawn = append(u.Withdrawn, pfx(p))
	}
	return u
}

func (e *env) want(step string, want ...string) {
	e.t.Helper()
	got := e.sink.table()
	if !slices.Equal(got, want) {
		e.t.Errorf("%s: sink holds\n  %s\nwant\n  %s", step, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	// The RIB's own view must agree with what it sent.
	var mine []string
	for _, r := range e.rib.Routes() {
		mine = append(mine, r.Prefix.String())
	}
	var sunk []string
	for _, l := range got {
		sunk = append(sunk, strings.SplitN(l, " ", 2)[0])
	}
	slices.Sort(mine)
	if !slices.Equal(mine, sunk) {
		e.t.Errorf("%s: RIB thinks it sent %v, sink holds %v", step, mine, sunk)
	}
}

func TestImportAndSelection(t *testing.T) {
	e := newEnv(t, Config{})
	e.rib.Set(defaultSettings())

	e.sp.Receive(announce(nodeB, nodeB, ibgp(), "10.244.2.0/26", "10.244.9.7/32", "10.96.0.0/12", "192.168.0.0/24", "10.244.1.0/26"))
	e.want("mesh routes",
		"10.244.2.0/26 via 10.0.0.2",
		"10.244.9.7/32 via 10.0.0.2",
		"10.96.0.0/12 via 10.0.0.2")
	c := e.rib.Counters()[nodeB]
	if c.Received != 5 || c.Accepted != 3 || c.Rejected[policy.RejectedNotInPool] != 1 || c.Rejected[policy.RejectedOwnBlock] != 1 {
		t.Errorf("counters of node-b = %+v", c)
	}

	// A second node announcing the Service range: ECMP.
	e.sp.Receive(announce(nodeC, nodeC, ibgp(), "10.96.0.0/12"))
	e.want("ecmp",
		"10.244.2.0/26 via 10.0.0.2",
		"10.244.9.7/32 via 10.0.0.2",
		"10.96.0.0/12 via 10.0.0.2,10.0.0.3")

	// The ToR's default route is accepted by its filter; eBGP beats iBGP
	// for a prefix both send.
	e.sp.Receive(announce(tor, tor, ebgp(65001), "0.0.0.0/0", "10.244.2.0/26", "192.168.4.0/24"))
	e.want("tor",
		"0.0.0.0/0 via 10.0.0.1",
		"10.244.2.0/26 via 10.0.0.2", // not accepted from the ToR (no filter)
		"10.244.9.7/32 via 10.0.0.2",
		"10.96.0.0/12 via 10.0.0.2,10.0.0.3",
		"192.168.4.0/24 via 10.0.0.1")

	// Two ToRs: equal paths share the default route; a shorter AS path wins.
	e.sp.Receive(announce(tor2, tor2, ebgp(65002), "0.0.0.0/0"))
	e.sp.Receive(announce(tor2, tor2, ebgp(65002, 65100), "192.168.4.0/24"))
	e.want("two tors",
		"0.0.0.0/0 via 10.0.0.1,10.0.0.254",
		"10.244.2.0/26 via 10.0.0.2",
		"10.244.9.7/32 via 10.0.0.2",
		"10.96.0.0/12 via 10.0.0.2,10.0.0.3",
		"192.168.4.0/24 via 10.0.0.1")

	// Withdrawals.
	e.sp.Receive(withdraw(tor, "0.0.0.0/0", "192.168.4.0/24"))
	e.sp.Receive(withdraw(nodeB, "10.96.0.0/12", "10.244.9.7/32"))
	e.want("withdrawn",
		"0.0.0.0/0 via 10.0.0.254",
		"10.244.2.0/26 via 10.0.0.2",
		"10.96.0.0/12 via 10.0.0.3",
		"192.168.4.0/24 via 10.0.0.254")
}

func TestSelectPaths(t *testing.T) {
	pb := &peerTable{addr: nodeB}
	pc := &peerTable{addr: nodeC}
	pt := &peerTable{addr: tor, info: PeerInfo{EBGP: true}}
	pt2 := &peerTable{addr: tor2, info: PeerInfo{EBGP: true}}
	lp := func(v uint32) *bgp.Attrs { return &bgp.Attrs{LocalPref: v, HasLocalPref: true} }
	med := func(as, m uint32) *bgp.Attrs {
		return &bgp.Attrs{ASPath: []uint32{as}, ASPathLen: 1, MED: m, HasMED: true}
	}
	stale := &bgp.Attrs{Communities: []uint32{bgp.CommunityLLGRStale}}
	c := func(p *peerTable, a *bgp.Attrs) path { return path{peer: p, nh: p.addr, attrs: a} }
	rejected := path{peer: pc, nh: nodeC, attrs: lp(500), reason: policy.RejectedByFilter}
	tests := []struct {
		name  string
		cands []path
		want  []netip.Addr
	}{
		{"single", []path{c(pb, ibgp())}, []netip.Addr{nodeB}},
		{"equal ibgp: ecmp", []path{c(pc, ibgp()), c(pb, ibgp())}, []netip.Addr{nodeB, nodeC}},
		{"higher local pref", []path{c(pb, lp(100)), c(pc, lp(200))}, []netip.Addr{nodeC}},
		{"shorter as path", []path{c(pt, ebgp(1, 2)), c(pt2, ebgp(3))}, []netip.Addr{tor2}},
		{"lower origin", []path{c(pb, &bgp.Attrs{Origin: 2}), c(pc, &bgp.Attrs{Origin: 0})}, []netip.Addr{nodeC}},
		{"ebgp over ibgp", []path{c(pb, ebgp()), c(pt, ebgp())}, []netip.Addr{tor}},
		{"llgr stale last", []path{c(pb, stale), c(pc, lp(50))}, []netip.Addr{nodeC}},
		{"only llgr stale left", []path{c(pb, stale)}, []netip.Addr{nodeB}},
		{"med within one as", []path{c(pt, med(65001, 10)), c(pt2, med(65001, 5))}, []netip.Addr{tor2}},
		{"med not across ases", []path{c(pt, med(65001, 10)), c(pt2, med(65002, 5))}, []netip.Addr{tor, tor2}},
		{"same next hop twice", []path{c(pb, ibgp()), {peer: pc, nh: nodeB, attrs: ibgp()}}, []netip.Addr{nodeB}},
		{"rejected paths do not count", []path{c(pb, lp(100)), rejected}, []netip.Addr{nodeB}},
		{"only rejected paths", []path{rejected}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := selectPaths(tt.cands, nil); !slices.Equal(got, tt.want) && !(len(got) == 0 && len(tt.want) == 0) {
				t.Errorf("selectPaths = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSessionLossAndGracefulRestart(t *testing.T) {
	e := newEnv(t, Config{StaleRecheck: time.Second})
	e.rib.Set(defaultSettings())
	e.sp.SetState(nodeB, bgp.StateEstablished, false, "")
	e.sp.SetState(nodeC, bgp.StateEstablished, false, "")
	e.sp.Receive(announce(nodeB, nodeB, ibgp(), "10.244.2.0/26", "10.244.3.0/26"))
	e.sp.Receive(announce(nodeC, nodeC, ibgp(), "10.244.4.0/26"))
	e.want("up", "10.244.2.0/26 via 10.0.0.2",
		"10.244.3.0/26 via 10.0.0.2",
		"10.244.4.0/26 via 10.0.0.3")

	// node-c drops without graceful restart: its routes go at once.
	e.sp.SetState(nodeC, bgp.StateActive, false, "hold timer expired")
	e.want("c lost", "10.244.2.0/26 via 10.0.0.2",
		"10.244.3.0/26 via 10.0.0.2")

	// node-b restarts gracefully: routes stay while it is away...
	e.sp.SetState(nodeB, bgp.StateActive, true, "")
	e.want("b restarting", "10.244.2.0/26 via 10.0.0.2",
		"10.244.3.0/26 via 10.0.0.2")
	if c := e.rib.Counters()[nodeB]; c.Stale != 2 {
		t.Errorf("stale paths of node-b = %d, want 2", c.Stale)
	}
	// ...comes back, resends one of them and a new one, then End-of-RIB:
	// the one it did not resend is withdrawn.
	e.sp.SetState(nodeB, bgp.StateEstablished, false, "")
	e.sp.Receive(announce(nodeB, nodeB, ibgp(), "10.244.2.0/26", "10.244.5.0/26"))
	e.want("b back", "10.244.2.0/26 via 10.0.0.2",
		"10.244.3.0/26 via 10.0.0.2",
		"10.244.5.0/26 via 10.0.0.2")
	e.sp.EndOfRIB(nodeB, bgp.IPv4)
	e.want("b eor", "10.244.2.0/26 via 10.0.0.2",
		"10.244.5.0/26 via 10.0.0.2")

	// Another graceful restart whose timer runs out inside the speaker
	// without an event: the periodic recheck withdraws the routes.
	e.sp.SetState(nodeB, bgp.StateActive, true, "")
	e.sp.ExpireStale(nodeB)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.rib.Run(ctx)
	waitFor(t, "stale routes withdrawn after recheck", func() bool { return len(e.sink.table()) == 0 })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSettingsChanges(t *testing.T) {
	e := newEnv(t, Config{})
	e.rib.Set(defaultSettings())
	e.sp.Receive(announce(nodeB, nodeB, ibgp(), "10.244.2.0/26", "10.250.0.0/26"))
	e.want("before", "10.244.2.0/26 via 10.0.0.2")

	// A new pool makes the held path acceptable, without the peer
	// resending; the route already sent is not sent again (how it is
	// encapsulated is the route programmer's business, not the RIB's).
	s := defaultSettings()
	s.Policy = defaultPolicy(
		policy.Pool{Name: "default", CIDR: pfx("10.244.0.0/16"), BlockBits: 26},
		policy.Pool{Name: "extra", CIDR: pfx("10.250.0.0/16"), BlockBits: 26},
	)
	e.rib.Set(s)
	e.want("new pool", "10.244.2.0/26 via 10.0.0.2",
		"10.250.0.0/26 via 10.0.0.2")
	if got := e.sink.sent; !slices.Equal(got, []string{"10.244.2.0/26", "10.250.0.0/26"}) {
		t.Errorf("prefixes sent so far: %v; want 10.244.2.0/26 once, then only the newly accepted 10.250.0.0/26", got)
	}

	// The peer is no longer configured: its routes go.
	delete(s.Peers, nodeB)
	e.rib.Set(s)
	e.want("peer removed")
	if _, ok := e.rib.Counters()[nodeB]; ok {
		t.Errorf("counters still list a removed peer")
	}
	// Setting the same settings twice changes nothing.
	before := e.sink.batches
	e.rib.Set(s)
	e.rib.Set(s)
	if e.sink.batches != before {
		t.Errorf("idempotent Set produced %d batches", e.sink.batches-before)
	}
}

func TestConvergence(t *testing.T) {
	t.Run("every peer sent end-of-rib", func(t *testing.T) {
		e := newEnv(t, Config{})
		s := defaultSettings()
		s.Peers = map[netip.Addr]PeerInfo{nodeB: {}, nodeC: {}}
		e.rib.Set(s)
		e.sp.SetState(nodeB, bgp.StateEstablished, false, "")
		e.sp.EndOfRIB(nodeB, bgp.IPv4)
		if e.sink.convergedCount() != 0 {
			t.Fatal("converged before node-c sent its table")
		}
		e.sp.SetState(nodeC, bgp.StateEstablished, false, "")
		e.sp.Receive(announce(nodeC, nodeC, ibgp(), "10.244.4.0/26"))
		e.sp.EndOfRIB(nodeC, bgp.IPv4)
		if e.sink.convergedCount() != 1 {
			t.Fatalf("converged %d times, want 1", e.sink.convergedCount())
		}
		// Later End-of-RIBs do not signal again (the sink checks).
		e.sp.SetState(nodeC, bgp.StateActive, false, "")
		e.sp.SetState(nodeC, bgp.StateEstablished, false, "")
		e.sp.EndOfRIB(nodeC, bgp.IPv4)
	})
	t.Run("no peers", func(t *testing.T) {
		e := newEnv(t, Config{})
		e.rib.Set(Settings{Policy: defaultPolicy()})
		if e.sink.convergedCount() != 1 || !e.rib.Converged() {
			t.Fatal("not converged without peers")
		}
	})
	t.Run("timeout", func(t *testing.T) {
		e := newEnv(t, Config{ConvergeTimeout: time.Second})
		e.rib.Set(defaultSettings())
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go e.rib.Run(ctx)
		waitFor(t, "convergence by timeout", func() bool { return e.sink.convergedCount() == 1 })
	})
}

func TestOriginatedAndNextHopSelf(t *testing.T) {
	e := newEnv(t, Config{})
	s := defaultSettings()
	e.rib.Set(s)
	// Every node advertises the Service range: ECMP through the others...
	e.sp.Receive(announce(nodeB, nodeB, ibgp(), "10.96.0.0/12", "10.244.2.0/26"))
	e.sp.Receive(announce(nodeC, addr("10.0.0.10"), ibgp(), "10.244.4.0/26")) // next hop: ourselves
	e.want("learned", "10.244.2.0/26 via 10.0.0.2", "10.96.0.0/12 via 10.0.0.2")
	if c := e.rib.Counters()[nodeC]; c.Rejected[policy.RejectedNextHopSelf] != 1 || c.Accepted != 0 {
		t.Errorf("node-c counters = %+v", c)
	}
	// ...until this node advertises it too: its own route wins, nothing is
	// sent to the kernel for it (nodes must not route it to each other).
	s.Originated = []netip.Prefix{pfx("10.96.0.0/12")}
	e.rib.Set(s)
	e.want("originated", "10.244.2.0/26 via 10.0.0.2")
	e.sp.Receive(announce(nodeC, nodeC, ibgp(), "10.96.0.0/12"))
	e.want("still originated", "10.244.2.0/26 via 10.0.0.2")
	s.Originated = nil
	e.rib.Set(s)
	e.want("no longer", "10.244.2.0/26 via 10.0.0.2", "10.96.0.0/12 via 10.0.0.2,10.0.0.3")
}

// TestRoutesFromNodesJudgedByIPAM plays our own nodes announcing what IPAM
// does not give them, and a route arriving before the block that justifies
// it: held, then installed once the owners say so, without the peer
// sending it again; and gone when the block moves to another node.
func TestRoutesFromNodesJudgedByIPAM(t *testing.T) {
	e := newEnv(t, Config{})
	e.rib.Set(defaultSettings())
	e.sp.Receive(announce(nodeB, nodeB, ibgp(),
		"10.244.2.0/26",  // its block
		"10.244.4.0/26",  // node-c's block
		"10.244.4.0/28",  // a more specific of it
		"10.244.4.7/32",  // a pod of node-c
		"10.244.0.0/20",  // a supernet of blocks
		"10.244.6.0/26",  // no block there yet
		"10.244.9.7/32")) // its borrowed address
	e.sp.Receive(announce(nodeB, nodeC, ibgp(), "10.244.3.0/26")) // its block, node-c's next hop
	e.want("first", "10.244.2.0/26 via 10.0.0.2", "10.244.9.7/32 via 10.0.0.2")
	c := e.rib.Counters()[nodeB]
	want := map[policy.Reason]int{policy.RejectedNotOwner: 2, policy.RejectedNotOriginated: 1, policy.RejectedOwnBlock: 1,
		policy.RejectedHeld: 1, policy.RejectedNextHop: 1}
	for r, n := range want {
		if c.Rejected[r] != n {
			t.Errorf("rejected %s = %d, want %d (%+v)", r, c.Rejected[r], n, c)
		}
	}

	// Through the reflector node-c: each path is node-b's or node-c's by
	// its ORIGINATOR_ID.
	refl := func(orig netip.Addr) *bgp.Attrs { a := ibgp(); a.OriginatorID, a.ClusterListLen = orig, 1; return a }
	e.sp.Receive(announce(nodeC, nodeB, refl(nodeB), "10.244.5.0/26"))             // node-b's, reflected
	e.sp.Receive(announce(nodeC, nodeC, refl(nodeB), "10.244.9.0/26"))             // node-c's block under node-b's ID
	e.sp.Receive(announce(nodeC, nodeB, refl(addr("192.0.2.1")), "10.244.3.0/26")) // an ID nobody has
	e.sp.Receive(announce(nodeC, nodeC, ibgp(), "10.244.4.0/26"))                  // the reflector's own
	e.want("reflected", "10.244.2.0/26 via 10.0.0.2", "10.244.4.0/26 via 10.0.0.3",
		"10.244.5.0/26 via 10.0.0.2", "10.244.9.7/32 via 10.0.0.2")
	c = e.rib.Counters()[nodeC]
	if c.Accepted != 2 || c.Rejected[policy.RejectedNotOwner] != 1 || c.Rejected[policy.RejectedUnknownOriginator] != 1 {
		t.Errorf("node-c counters = %+v", c)
	}

	// The block reaches this node's IPAM view: the held path is installed
	// without node-b sending it again.
	grown := policy.NewOwners([]policy.OwnedBlock{
		{CIDR: pfx("10.244.1.0/26"), Node: "self"}, {CIDR: pfx("10.244.2.0/26"), Node: "b"}, {CIDR: pfx("10.244.3.0/26"), Node: "b"},
		{CIDR: pfx("10.244.5.0/26"), Node: "b"}, {CIDR: pfx("10.244.6.0/26"), Node: "b"},
		{CIDR: pfx("10.244.4.0/26"), Node: "c"}, {CIDR: pfx("10.244.9.0/26"), Node: "c"},
	}, map[netip.Addr]string{addr("10.244.9.7"): "b"})
	s := defaultSettings()
	s.Policy = ownersPolicy(grown)
	e.rib.Set(s)
	e.want("block known", "10.244.2.0/26 via 10.0.0.2", "10.244.4.0/26 via 10.0.0.3",
		"10.244.5.0/26 via 10.0.0.2", "10.244.6.0/26 via 10.0.0.2", "10.244.9.7/32 via 10.0.0.2")

	// node-b's pod gives its borrowed address back and node-c's block
	// goes to node-b: what node-b announced follows.
	moved := policy.NewOwners([]policy.OwnedBlock{
		{CIDR: pfx("10.244.1.0/26"), Node: "self"}, {CIDR: pfx("10.244.2.0/26"), Node: "b"}, {CIDR: pfx("10.244.3.0/26"), Node: "b"},
		{CIDR: pfx("10.244.5.0/26"), Node: "b"}, {CIDR: pfx("10.244.6.0/26"), Node: "b"},
		{CIDR: pfx("10.244.4.0/26"), Node: "b"}, {CIDR: pfx("10.244.9.0/26"), Node: "c"},
	}, nil)
	s.Policy = ownersPolicy(moved)
	e.rib.Set(s)
	e.want("moved", "10.244.2.0/26 via 10.0.0.2", "10.244.4.0/26 via 10.0.0.2",
		"10.244.5.0/26 via 10.0.0.2", "10.244.6.0/26 via 10.0.0.2")

	// A withdrawal of what node-b does not own takes nothing away from
	// the owner's path.
	e.sp.Receive(withdraw(nodeB, "10.244.9.0/26", "10.244.4.0/26"))
	e.sp.Receive(announce(nodeC, nodeC, ibgp(), "10.244.9.0/26"))
	e.sp.Receive(withdraw(nodeB, "10.244.9.0/26"))
	e.want("withdrawals", "10.244.2.0/26 via 10.0.0.2", "10.244.5.0/26 via 10.0.0.2",
		"10.244.6.0/26 via 10.0.0.2", "10.244.9.0/26 via 10.0.0.3")
}
