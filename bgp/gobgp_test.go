package bgp_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rhizome-net/rhizome/bgp"
)

// These tests run real GoBGP speakers in this process, talking over
// loopback: each speaker listens on its own 127.0.0.x address and a port
// the test picks, so they need no privileges and no namespaces.

func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }
func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// freePort returns a TCP port that was free on the address a moment ago.
func freePort(t *testing.T, a netip.Addr) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", netip.AddrPortFrom(a, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.NewTextHandler(devNull{}, nil))
}

type devNull struct{}

func (devNull) Write(p []byte) (int, error) { return len(p), nil }

// node is one in-process speaker with a recording handler.
type node struct {
	t    *testing.T
	name string
	ip   netip.Addr
	port uint16
	asn  uint32
	sp   *bgp.GoBGP
	rec  *recorder
}

func startNode(t *testing.T, name string, ip string, asn uint32, apiAddr string) *node {
	t.Helper()
	n := &node{t: t, name: name, ip: addr(ip), asn: asn, rec: newRecorder()}
	n.port = freePort(t, n.ip)
	n.sp = bgp.NewGoBGP(bgp.GoBGPOptions{Logger: testLogger(t).With("node", name), GoBGPLogLevel: gobgpLevel()})
	ctx := context.Background()
	err := n.sp.Start(ctx, bgp.Global{ASN: asn, RouterID: n.ip, ListenPort: int32(n.port), ListenAddresses: []netip.Addr{n.ip}, APIAddress: apiAddr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.sp.Stop(context.Background()) })
	wctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := n.sp.Watch(wctx, n.rec); err != nil {
		t.Fatal(err)
	}
	return n
}

// peerConfig is the session from n to other.
func (n *node) peerConfig(other *node) bgp.Peer {
	return bgp.Peer{
		Address:      other.ip,
		Port:         other.port,
		ASN:          other.asn,
		LocalAddress: n.ip,
		Timers:       bgp.Timers{ConnectRetry: time.Second, Keepalive: 3 * time.Second, Hold: 9 * time.Second},
	}
}

// connect configures sessions both ways. The side with the higher address
// waits for the other to connect, as Rhizome's own node-to-node sessions do
// (two GoBGP speakers that both connect can keep closing each other's
// connections from Idle for a long time).
func connect(t *testing.T, a, b *node, adjust func(from, to *node, p *bgp.Peer)) {
	t.Helper()
	for _, pair := range [][2]*node{{a, b}, {b, a}} {
		p := pair[0].peerConfig(pair[1])
		p.Passive = pair[0].ip.Compare(pair[1].ip) > 0
		if adjust != nil {
			adjust(pair[0], pair[1], &p)
		}
		if err := pair[0].sp.AddPeer(context.Background(), p); err != nil {
			t.Fatal(err)
		}
	}
}

// recorder is a bgp.Handler that keeps the received table per peer and the
// events, so tests can wait on conditions.
type recorder struct {
	mu     sync.Mutex
	table  map[netip.Addr]map[netip.Prefix]bgp.ReceivedPath
	states map[netip.Addr]bgp.SessionState
	events []bgp.PeerEvent
	eor    map[netip.Addr]int
}

func newRecorder() *recorder {
	return &recorder{
		table:  make(map[netip.Addr]map[netip.Prefix]bgp.ReceivedPath),
		states: make(map[netip.Addr]bgp.SessionState),
		eor:    make(map[netip.Addr]int),
	}
}

func (r *recorder) HandleUpdate(u *bgp.Update) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.table[u.Peer]
	if m == nil {
		m = make(map[netip.Prefix]bgp.ReceivedPath)
		r.table[u.Peer] = m
	}
	for _, p := range u.Announced {
		m[p.Prefix] = p
	}
	for _, p := range u.Withdrawn {
		delete(m, p)
	}
}

func (r *recorder) HandleEndOfRIB(peer netip.Addr, _ bgp.Family) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.eor[peer]++
}

func (r *recorder) HandlePeerState(e bgp.PeerEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.states[e.Peer] = e.State
	r.events = append(r.events, e)
	if e.Previous == bgp.StateEstablished && e.State != bgp.StateEstablished {
		delete(r.table, e.Peer) // as the RIB would, for a non-graceful loss
	}
}

func (r *recorder) prefixes(peer netip.Addr) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for p := range r.table[peer] {
		out = append(out, p.String())
	}
	slices.Sort(out)
	return out
}

func (r *recorder) path(peer netip.Addr, p netip.Prefix) (bgp.ReceivedPath, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rp, ok := r.table[peer][p]
	return rp, ok
}

// downs counts the session's falls from Established.
func (r *recorder) downs(peer netip.Addr) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.Peer == peer && e.Previous == bgp.StateEstablished && e.State != bgp.StateEstablished {
			n++
		}
	}
	return n
}

func (r *recorder) state(peer netip.Addr) bgp.SessionState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.states[peer]
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitPrefixes(t *testing.T, n *node, from *node, want ...string) {
	t.Helper()
	slices.Sort(want)
	waitFor(t, fmt.Sprintf("%s to hold %v from %s", n.name, want, from.name), 30*time.Second, func() bool {
		return slices.Equal(n.rec.prefixes(from.ip), want)
	})
}

func waitEstablished(t *testing.T, n *node, peer *node) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s: session to %s established", n.name, peer.name), 30*time.Second, func() bool {
		return n.rec.state(peer.ip) == bgp.StateEstablished
	})
}

func TestGoBGPAdvertiseAndReceive(t *testing.T) {
	a := startNode(t, "a", "127.0.0.11", 64512, "")
	b := startNode(t, "b", "127.0.0.12", 64512, "")
	ctx := context.Background()
	// Advertised before the session exists: sent on establishment.
	ad := bgp.Advertisement{Prefix: pfx("10.244.1.0/26"), Communities: []uint32{64512<<16 | 100}, LargeCommunities: []bgp.LargeCommunity{{Global: 64512, Local1: 1, Local2: 2}}}
	if err := a.sp.Advertise(ctx, ad); err != nil {
		t.Fatal(err)
	}
	connect(t, a, b, nil)
	waitEstablished(t, b, a)
	waitPrefixes(t, b, a, "10.244.1.0/26")

	rp, _ := b.rec.path(a.ip, pfx("10.244.1.0/26"))
	if rp.NextHop != a.ip {
		t.Errorf("next hop = %s, want a's address %s", rp.NextHop, a.ip)
	}
	if !rp.Attrs.HasCommunity(64512<<16|100) || !slices.Equal(rp.Attrs.LargeCommunities, ad.LargeCommunities) {
		t.Errorf("attributes = %+v, want the communities of %+v", rp.Attrs, ad)
	}
	if !rp.Attrs.HasLocalPref || rp.Attrs.LocalPref != 100 || rp.Attrs.ASPathLen != 0 {
		t.Errorf("iBGP attributes = %+v", rp.Attrs)
	}

	// More routes, a replaced route and a withdrawal.
	for _, p := range []string{"10.244.2.0/26", "10.244.3.7/32"} {
		if err := a.sp.Advertise(ctx, bgp.Advertisement{Prefix: pfx(p)}); err != nil {
			t.Fatal(err)
		}
	}
	waitPrefixes(t, b, a, "10.244.1.0/26", "10.244.2.0/26", "10.244.3.7/32")
	if err := a.sp.Advertise(ctx, bgp.Advertisement{Prefix: pfx("10.244.1.0/26"), Communities: []uint32{7}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "replaced communities", 30*time.Second, func() bool {
		rp, ok := b.rec.path(a.ip, pfx("10.244.1.0/26"))
		return ok && slices.Equal(rp.Attrs.Communities, []uint32{7})
	})
	if err := a.sp.Withdraw(ctx, pfx("10.244.2.0/26")); err != nil {
		t.Fatal(err)
	}
	if err := a.sp.Withdraw(ctx, pfx("10.99.0.0/16")); err != nil {
		t.Errorf("withdrawing a prefix never advertised: %v", err)
	}
	waitPrefixes(t, b, a, "10.244.1.0/26", "10.244.3.7/32")

	// What the speaker holds agrees with the stream.
	held, err := b.sp.Received(ctx, a.ip)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range held {
		got = append(got, p.Prefix.String())
	}
	slices.Sort(got)
	if want := []string{"10.244.1.0/26", "10.244.3.7/32"}; !slices.Equal(got, want) {
		t.Errorf("Received = %v, want %v", got, want)
	}

	// Status.
	peers, err := b.sp.Peers(ctx, func(netip.Addr) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 1 || peers[0].Address != a.ip || peers[0].State != bgp.StateEstablished || peers[0].Received != 2 ||
		peers[0].Since.IsZero() || peers[0].RemoteRouterID != a.ip || peers[0].PeerRestartTime != 0 {
		t.Errorf("b's peers = %+v", peers)
	}
	peers, _ = a.sp.Peers(ctx, func(netip.Addr) bool { return true })
	if len(peers) != 1 || peers[0].Advertised != 2 {
		t.Errorf("a's peers = %+v, want 2 advertised", peers)
	}
}

func TestGoBGPIPv6(t *testing.T) {
	// IPv6 sessions carry IPv6 routes; ::1 is the only IPv6 loopback, so
	// the two speakers differ by port only and each has one peer.
	a := &node{t: t, name: "a6", ip: addr("::1"), asn: 64512, rec: newRecorder()}
	b := &node{t: t, name: "b6", ip: addr("::1"), asn: 64513, rec: newRecorder()}
	for _, n := range []*node{a, b} {
		n.port = freePort(t, n.ip)
		n.sp = bgp.NewGoBGP(bgp.GoBGPOptions{Logger: testLogger(t)})
		rid := "127.0.0.21"
		if n == b {
			rid = "127.0.0.22"
		}
		if err := n.sp.Start(context.Background(), bgp.Global{ASN: n.asn, RouterID: addr(rid), ListenPort: int32(n.port), ListenAddresses: []netip.Addr{n.ip}}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.sp.Stop(context.Background()) })
		if err := n.sp.Watch(t.Context(), n.rec); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	if err := a.sp.Advertise(ctx, bgp.Advertisement{Prefix: pfx("fd00:244::40/122")}); err != nil {
		t.Fatal(err)
	}
	// Only a dials (b passive): with one address, b could not tell which
	// of two incoming connections belongs to which session.
	pa, pb := a.peerConfig(b), b.peerConfig(a)
	pb.Passive = true
	pb.Port = 0
	if err := a.sp.AddPeer(ctx, pa); err != nil {
		t.Fatal(err)
	}
	if err := b.sp.AddPeer(ctx, pb); err != nil {
		t.Fatal(err)
	}
	waitPrefixes(t, b, a, "fd00:244::40/122")
	rp, _ := b.rec.path(a.ip, pfx("fd00:244::40/122"))
	if rp.NextHop != a.ip || rp.Attrs.ASPathLen != 1 || rp.Attrs.NeighborAS() != 64512 {
		t.Errorf("eBGP IPv6 path = %+v %+v", rp, rp.Attrs)
	}
}

func TestGoBGPExportPolicy(t *testing.T) {
	// a, c and d are clients of b. Without reflection b passes on nothing
	// it learned; with reflection it passes pool routes, and nothing else,
	// to every peer not excluded.
	a := startNode(t, "a", "127.0.0.31", 64512, "")
	b := startNode(t, "b", "127.0.0.32", 64512, "")
	c := startNode(t, "c", "127.0.0.33", 64512, "")
	d := startNode(t, "d", "127.0.0.34", 64512, "")
	ctx := context.Background()
	for _, p := range []string{"10.244.1.0/26", "192.168.0.0/24"} {
		if err := a.sp.Advertise(ctx, bgp.Advertisement{Prefix: pfx(p)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.sp.Advertise(ctx, bgp.Advertisement{Prefix: pfx("10.244.2.0/26")}); err != nil {
		t.Fatal(err)
	}
	rr := func(from, to *node, p *bgp.Peer) {
		if from == b {
			p.RouteReflectorClient, p.RouteReflectorClusterID = true, addr("224.0.0.1")
		}
	}
	connect(t, a, b, rr)
	connect(t, c, b, rr)
	connect(t, d, b, rr)
	waitPrefixes(t, b, a, "10.244.1.0/26", "192.168.0.0/24")
	waitPrefixes(t, c, b, "10.244.2.0/26")

	// Reflection of pool routes, but not to c (as for an external peer):
	// a route a announces now reaches d, never c.
	if err := b.sp.SetExportPolicy(ctx, bgp.ExportPolicy{Reflect: []netip.Prefix{pfx("10.244.0.0/16")}, NoReflect: []netip.Addr{c.ip}}); err != nil {
		t.Fatal(err)
	}
	if err := a.sp.Advertise(ctx, bgp.Advertisement{Prefix: pfx("10.244.5.0/26")}); err != nil {
		t.Fatal(err)
	}
	waitPrefixes(t, d, b, "10.244.1.0/26", "10.244.2.0/26", "10.244.5.0/26")
	if got := c.rec.prefixes(b.ip); !slices.Equal(got, []string{"10.244.2.0/26"}) {
		t.Fatalf("c, excluded from reflection, holds %v from b", got)
	}
	// To every peer but one that does not exist: c gets the pool routes
	// (a soft reset out), and nothing else.
	if err := b.sp.SetExportPolicy(ctx, bgp.ExportPolicy{Reflect: []netip.Prefix{pfx("10.244.0.0/16")}, NoReflect: []netip.Addr{addr("127.0.0.39")}}); err != nil {
		t.Fatal(err)
	}
	waitPrefixes(t, c, b, "10.244.1.0/26", "10.244.2.0/26", "10.244.5.0/26")
	rp, _ := c.rec.path(b.ip, pfx("10.244.1.0/26"))
	if rp.NextHop != a.ip || rp.Attrs.OriginatorID != a.ip || rp.Attrs.ClusterListLen != 1 {
		t.Errorf("reflected path = %+v %+v, want next hop and originator %s", rp, rp.Attrs, a.ip)
	}

	// Per-peer deny of a locally originated prefix; and reflection off again.
	if err := b.sp.SetExportPolicy(ctx, bgp.ExportPolicy{Deny: map[netip.Addr][]netip.Prefix{c.ip: {pfx("10.244.2.0/26")}}}); err != nil {
		t.Fatal(err)
	}
	waitPrefixes(t, c, b)
	waitPrefixes(t, a, b, "10.244.2.0/26")
	if err := b.sp.Advertise(ctx, bgp.Advertisement{Prefix: pfx("10.244.3.0/26")}); err != nil {
		t.Fatal(err)
	}
	waitPrefixes(t, c, b, "10.244.3.0/26")
}

func TestGoBGPPeerChanges(t *testing.T) {
	a := startNode(t, "a", "127.0.0.41", 64512, "")
	b := startNode(t, "b", "127.0.0.42", 64512, "")
	c := startNode(t, "c", "127.0.0.43", 64512, "")
	ctx := context.Background()
	if err := a.sp.Advertise(ctx, bgp.Advertisement{Prefix: pfx("10.244.1.0/26")}); err != nil {
		t.Fatal(err)
	}
	connect(t, a, b, nil)
	connect(t, a, c, nil)
	waitPrefixes(t, b, a, "10.244.1.0/26")
	waitPrefixes(t, c, a, "10.244.1.0/26")
	eventsOf := func(n *node, peer netip.Addr) int {
		n.rec.mu.Lock()
		defer n.rec.mu.Unlock()
		k := 0
		for _, e := range n.rec.events {
			if e.Peer == peer {
				k++
			}
		}
		return k
	}
	cEvents := eventsOf(a, c.ip)

	// A timer change applies in place: no session resets.
	p := a.peerConfig(b)
	p.Timers.Keepalive = 2 * time.Second
	if err := a.sp.UpdatePeer(ctx, p); err != nil {
		t.Fatal(err)
	}
	// A password on a's side only resets a-b, which then cannot come up.
	p.Password = "secret"
	bEvents := eventsOf(a, b.ip)
	if err := a.sp.UpdatePeer(ctx, p); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a-b reset by the password change", 30*time.Second, func() bool { return eventsOf(a, b.ip) > bEvents })
	waitPrefixes(t, b, a)
	// ...and then agree on it: the session comes back.
	pb := b.peerConfig(a)
	pb.Password = "secret"
	if err := b.sp.UpdatePeer(ctx, pb); err != nil {
		t.Fatal(err)
	}
	waitPrefixes(t, b, a, "10.244.1.0/26")
	if n := eventsOf(a, c.ip); n != cEvents {
		t.Errorf("a-c saw %d state changes during a-b's changes", n-cEvents)
	}
	if err := a.sp.UpdatePeer(ctx, bgp.Peer{Address: addr("127.0.0.99"), ASN: 1}); !errors.Is(err, bgp.ErrPeerNotFound) {
		t.Errorf("updating an unknown peer: %v, want ErrPeerNotFound", err)
	}
	if err := a.sp.AddPeer(ctx, a.peerConfig(c)); err == nil {
		t.Errorf("adding a peer twice succeeded")
	}

	// Delete: c loses a's routes; a can no longer list them.
	if err := a.sp.DeletePeer(ctx, c.ip); err != nil {
		t.Fatal(err)
	}
	waitPrefixes(t, c, a)
	if _, err := a.sp.Received(ctx, c.ip); err == nil {
		t.Errorf("Received of a deleted peer succeeded")
	}
	if err := a.sp.DeletePeer(ctx, c.ip); !errors.Is(err, bgp.ErrPeerNotFound) {
		t.Errorf("deleting twice: %v", err)
	}
}

func TestGoBGPMaxPrefix(t *testing.T) {
	a := startNode(t, "a", "127.0.0.51", 64512, "")
	b := startNode(t, "b", "127.0.0.52", 64513, "")
	ctx := context.Background()
	connect(t, a, b, func(from, to *node, p *bgp.Peer) {
		if from == b {
			p.MaxPrefixes = 2
		}
	})
	waitEstablished(t, b, a)
	for _, p := range []string{"10.244.1.0/26", "10.244.2.0/26", "10.244.3.0/26"} {
		if err := a.sp.Advertise(ctx, bgp.Advertisement{Prefix: pfx(p)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "b to report the exceeded limit", 30*time.Second, func() bool {
		peers, err := b.sp.Peers(ctx, func(netip.Addr) bool { return true })
		return err == nil && len(peers) == 1 && peers[0].State != bgp.StateEstablished && strings.Contains(peers[0].LastError, "maximum prefix limit exceeded") && peers[0].AdminDown
	})
	peers, _ := a.sp.Peers(ctx, func(netip.Addr) bool { return true })
	if len(peers) != 1 || !strings.Contains(peers[0].LastError, "notification received") {
		t.Errorf("a's view of the teardown: %+v", peers)
	}
}

// TestGoBGPMaxPrefixRetryAndInPlace: a session closed by its prefix limit
// with MaxPrefixRestart is enabled again after that long (and closed again
// while the peer still sends too many); a new limit is applied to the live
// session in place, never resetting it, even a lower one that still holds
// what the peer sent (the sessions between nodes get a new limit whenever
// the pools change).
func TestGoBGPMaxPrefixRetryAndInPlace(t *testing.T) {
	a := startNode(t, "a", "127.0.0.53", 64512, "")
	b := startNode(t, "b", "127.0.0.54", 64512, "")
	ctx := context.Background()
	var bp bgp.Peer
	connect(t, a, b, func(from, to *node, p *bgp.Peer) {
		if from == b {
			p.MaxPrefixes, p.MaxPrefixRestart = 2, 2*time.Second
			bp = *p
		}
	})
	waitEstablished(t, b, a)
	for _, p := range []string{"10.244.1.0/26", "10.244.2.0/26", "10.244.3.0/26"} {
		if err := a.sp.Advertise(ctx, bgp.Advertisement{Prefix: pfx(p)}); err != nil {
			t.Fatal(err)
		}
	}
	// Closed, enabled again, closed again: two falls from Established.
	waitFor(t, "b to close the session twice", 30*time.Second, func() bool {
		return b.rec.downs(a.ip) >= 2
	})
	peers, err := b.sp.Peers(ctx, nil)
	if err != nil || len(peers) != 1 || !strings.Contains(peers[0].LastError, "the peer sent more than 2 prefixes; session closed, enabled again at") {
		t.Fatalf("b's view: %+v %v", peers, err)
	}
	// A limit that holds the table: the session comes back.
	bp.MaxPrefixes = 10
	if err := b.sp.UpdatePeer(ctx, bp); err != nil {
		t.Fatal(err)
	}
	waitEstablished(t, b, a)
	waitFor(t, "b to hold a's 3 prefixes", 30*time.Second, func() bool { return len(b.rec.prefixes(a.ip)) == 3 })
	downs := b.rec.downs(a.ip)
	for _, limit := range []uint32{1000, 3} {
		bp.MaxPrefixes = limit
		if err := b.sp.UpdatePeer(ctx, bp); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second)
	if d := b.rec.downs(a.ip); d != downs || b.rec.state(a.ip) != bgp.StateEstablished {
		t.Errorf("changing the limit in place reset the session: %d downs, was %d; state %v", d, downs, b.rec.state(a.ip))
	}
}

func TestGoBGPAPI(t *testing.T) {
	if _, err := exec.LookPath("gobgp"); err != nil {
		t.Skip("the gobgp CLI (Debian package gobgpd) is not installed; make deps installs it")
	}
	port := freePort(t, addr("127.0.0.1"))
	a := startNode(t, "a", "127.0.0.61", 64512, fmt.Sprintf("127.0.0.1:%d", port))
	b := startNode(t, "b", "127.0.0.62", 64512, "")
	connect(t, a, b, nil)
	waitEstablished(t, a, b)
	if err := a.sp.APIError(); err != nil {
		t.Fatal(err)
	}
	// The stock CLI inspects the embedded speaker.
	var out []byte
	waitFor(t, "gobgp neighbor to list b", 30*time.Second, func() bool {
		var err error
		out, err = exec.Command("gobgp", "-u", "127.0.0.1", "-p", fmt.Sprint(port), "neighbor").CombinedOutput()
		return err == nil && strings.Contains(string(out), b.ip.String()) && strings.Contains(string(out), "Establ")
	})

	// A second speaker asking for the same API port runs without it (GoBGP
	// alone would exit the whole process here).
	c := startNode(t, "c", "127.0.0.63", 64512, fmt.Sprintf("127.0.0.1:%d", port))
	if err := c.sp.APIError(); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("APIError = %v, want address already in use", err)
	}
	connect(t, c, b, nil)
	waitEstablished(t, c, b)
}

// gobgpLevel lets RHIZOME_GOBGP_DEBUG=1 show GoBGP's own debug messages.
func gobgpLevel() slog.Leveler {
	if os.Getenv("RHIZOME_GOBGP_DEBUG") != "" {
		return slog.LevelDebug
	}
	return nil
}
