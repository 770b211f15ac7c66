package bfd

import (
	"net/netip"
	"testing"
	"time"
)

func TestManagerComesUp(t *testing.T) {
	p := newPair(t)
	p.up(t, fast)
	for _, c := range []struct {
		m    *Manager
		peer netip.Addr
	}{{p.a, addrB}, {p.b, addrA}} {
		st := p.state(t, c.m, c.peer)
		if st.TxInterval != 300*time.Millisecond || st.DetectionTime != 900*time.Millisecond {
			t.Fatalf("%s: tx %s detection %s, want 300ms and 900ms", c.peer, st.TxInterval, st.DetectionTime)
		}
		if st.RemoteDiscr == 0 || st.LocalDiscr == 0 || st.RemoteState != Up {
			t.Fatalf("%s: %+v", c.peer, st)
		}
	}
	last := func(e []Event) Event { return e[len(e)-1] }
	if e := last(p.ea.waitFor(t, 1)); e.To != Up || e.Peer != addrB {
		t.Fatalf("A's last event %+v", e)
	}
	if e := last(p.eb.waitFor(t, 1)); e.To != Up || e.Peer != addrA {
		t.Fatalf("B's last event %+v", e)
	}
}

// TestManagerDetectsLinkCut: with the link cut, both ends go Down within
// the detection time of the last packet (900 ms), not before the detection
// time less one interval; restored, both come back Up.
func TestManagerDetectsLinkCut(t *testing.T) {
	p := newPair(t)
	p.up(t, fast)
	na, nb := len(p.ea.waitFor(t, 1)), len(p.eb.waitFor(t, 2))

	p.net.setCut(true)
	p.clock.Advance(600 * time.Millisecond) // 900 ms less a jittered interval (262.5 ms), and some
	if p.state(t, p.a, addrB).State != Up || p.state(t, p.b, addrA).State != Up {
		t.Fatal("down before the detection time could have run out")
	}
	p.clock.Advance(300 * time.Millisecond)
	for _, c := range []struct {
		m    *Manager
		peer netip.Addr
		ev   *events
		n    int
	}{{p.a, addrB, p.ea, na}, {p.b, addrA, p.eb, nb}} {
		st := p.state(t, c.m, c.peer)
		if st.State != Down || st.Diag != DiagTimeExpired || st.Downs != 1 {
			t.Fatalf("%s 900 ms after the cut: %+v", c.peer, st)
		}
		e := c.ev.waitFor(t, c.n+1)[c.n]
		if e.From != Up || e.To != Down || e.Diag != DiagTimeExpired || !e.Failed() {
			t.Fatalf("event %+v, want a failure Up → Down (detection time expired)", e)
		}
	}

	p.net.setCut(false)
	for range 50 {
		p.clock.Advance(100 * time.Millisecond)
	}
	if p.state(t, p.a, addrB).State != Up || p.state(t, p.b, addrA).State != Up {
		t.Fatal("not Up again 5 s after the link came back")
	}
}

// TestManagerTimerChange: new timers are negotiated with a Poll Sequence
// while both ends stay Up, and both ends end up with the slower rate.
func TestManagerTimerChange(t *testing.T) {
	p := newPair(t)
	p.up(t, fast)
	slow := Timers{MinTx: time.Second, MinRx: 300 * time.Millisecond, Multiplier: 3}
	if err := p.a.Set(Peer{Remote: addrB, Local: addrA, Timers: slow}); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		p.clock.Advance(100 * time.Millisecond)
		if a, b := p.state(t, p.a, addrB), p.state(t, p.b, addrA); a.State != Up || b.State != Up {
			t.Fatalf("a timer change took the session down: A %s, B %s", a.State, b.State)
		}
	}
	a, b := p.state(t, p.a, addrB), p.state(t, p.b, addrA)
	if a.TxInterval != time.Second || b.DetectionTime != 3*time.Second {
		t.Fatalf("A tx %s (want 1s), B detection %s (want 3s)", a.TxInterval, b.DetectionTime)
	}
	if a.Downs+b.Downs != 0 {
		t.Fatal("downs counted")
	}
	if err := p.a.Set(Peer{Remote: addrB, Local: addrA, Timers: slow}); err != nil {
		t.Fatal("setting the same peer again:", err)
	}
}

// TestManagerRequiresTTL255: packets that arrive with another TTL (they
// crossed a router) are dropped and counted, and no session comes up.
func TestManagerRequiresTTL255(t *testing.T) {
	p := newPair(t)
	p.net.ttl = 254
	for _, c := range []struct {
		m     *Manager
		local netip.Addr
		peer  netip.Addr
	}{{p.a, addrA, addrB}, {p.b, addrB, addrA}} {
		if err := c.m.Set(Peer{Remote: c.peer, Local: c.local, Timers: fast}); err != nil {
			t.Fatal(err)
		}
	}
	p.clock.Advance(5 * time.Second)
	if st := p.state(t, p.a, addrB); st.State != Down || st.Received != 0 {
		t.Fatalf("a session took packets with TTL 254: %+v", st)
	}
	if d := p.a.Stats().Dropped[DropTTL]; d == 0 {
		t.Fatal("TTL drops not counted")
	}
}

// TestManagerRejectsForeignPackets: a packet that names a session's
// discriminator but comes from another address, one that names no
// session, and one from a stranger without a discriminator are dropped and
// change nothing.
func TestManagerRejectsForeignPackets(t *testing.T) {
	p := newPair(t)
	p.up(t, fast)
	st := p.state(t, p.a, addrB)
	forged := Packet{State: AdminDown, DetectMult: 3, MyDiscriminator: st.RemoteDiscr, YourDiscriminator: st.LocalDiscr,
		DesiredMinTx: 300_000, RequiredMinRx: 300_000}
	stranger := netip.MustParseAddr("10.0.0.66")
	cases := []struct {
		name     string
		pkt      Packet
		src, dst netip.Addr
		reason   string
	}{
		{"right discriminator, other source", forged, stranger, addrA, DropWrongAddress},
		{"right discriminator, other destination", forged, addrB, netip.MustParseAddr("10.0.9.1"), DropWrongAddress},
		{"unknown discriminator", func() Packet { f := forged; f.YourDiscriminator = 77; return f }(), addrB, addrA, DropUnknownDiscr},
		{"no discriminator, unknown source", func() Packet { f := forged; f.YourDiscriminator = 0; return f }(), stranger, addrA, DropUnknownPeer},
		{"garbage", Packet{}, addrB, addrA, DropMalformed},
	}
	for _, c := range cases {
		before := p.a.Stats().Dropped[c.reason]
		p.ta.h(c.pkt.Append(nil), c.src, c.dst, TTL)
		if got := p.a.Stats().Dropped[c.reason]; got != before+1 {
			t.Fatalf("%s: drops of %s %d → %d", c.name, c.reason, before, got)
		}
		if s := p.state(t, p.a, addrB); s.State != Up {
			t.Fatalf("%s: session now %s", c.name, s.State)
		}
	}
}

// TestManagerRemoveSaysAdminDown: a removed session tells its peer
// AdminDown (which is no failure there, RFC 5882 4.2) for one detection
// time, then stops sending.
func TestManagerRemoveSaysAdminDown(t *testing.T) {
	p := newPair(t)
	p.up(t, fast)
	nb := len(p.eb.waitFor(t, 2))
	if err := p.a.Remove(addrB); err != nil {
		t.Fatal(err)
	}
	if len(p.a.Sessions()) != 0 {
		t.Fatal("removed session still listed")
	}
	p.clock.Advance(400 * time.Millisecond)
	st := p.state(t, p.b, addrA)
	if st.State != Down || st.RemoteState != AdminDown || st.Diag != DiagNeighborDown || st.Downs != 1 {
		t.Fatalf("B after A's removal: %+v", st)
	}
	e := p.eb.waitFor(t, nb+1)[nb]
	if e.To != Down || !e.RemoteAdminDown || e.Failed() {
		t.Fatalf("event %+v: want Down by the peer's AdminDown, not a failure", e)
	}
	p.clock.Advance(3 * time.Second) // the AdminDown linger: 3 × 1 s
	recv := p.state(t, p.b, addrA).Received
	p.net.mu.Lock()
	n := p.net.count
	p.net.mu.Unlock()
	p.clock.Advance(5 * time.Second)
	p.net.mu.Lock()
	after := p.net.count
	p.net.mu.Unlock()
	// B still sends (slowly) to A's address; A no longer sends anything.
	if got := p.state(t, p.b, addrA).Received; got != recv || after-n > 6 {
		t.Fatalf("A still sends after the linger: B received %d more, %d packets in 5 s", got-recv, after-n)
	}
	if st := p.state(t, p.b, addrA); st.Downs != 1 {
		t.Fatalf("B counted another failure: %+v", st)
	}
}

// TestManagerCloseIsSilent: Close (an agent restarting) sends nothing; the
// peer's session times out.
func TestManagerCloseIsSilent(t *testing.T) {
	p := newPair(t)
	p.up(t, fast)
	nb := len(p.eb.waitFor(t, 2))
	if err := p.a.Close(); err != nil {
		t.Fatal(err)
	}
	p.clock.Advance(time.Second)
	e := p.eb.waitFor(t, nb+1)[nb]
	if e.Diag != DiagTimeExpired || !e.Failed() || e.RemoteControlPlaneIndependent {
		t.Fatalf("event %+v: want a timeout, C bit clear", e)
	}
	if err := p.a.Set(Peer{Remote: addrB, Timers: fast}); err != ErrClosed {
		t.Fatalf("Set after Close: %v", err)
	}
}

// TestManagerLocalAddressChange: a new local address is a new session (new
// socket, new discriminator, Down).
func TestManagerLocalAddressChange(t *testing.T) {
	p := newPair(t)
	p.up(t, fast)
	old := p.state(t, p.a, addrB)
	if err := p.a.Set(Peer{Remote: addrB, Timers: fast}); err != nil {
		t.Fatal(err)
	}
	st := p.state(t, p.a, addrB)
	if st.State != Down || st.LocalDiscr == old.LocalDiscr || p.ta.opened != 2 {
		t.Fatalf("after the local address changed: %+v (opened %d sockets)", st, p.ta.opened)
	}
}

func TestManagerRefusesInvalidPeers(t *testing.T) {
	p := newPair(t)
	for _, peer := range []Peer{
		{Timers: fast},
		{Remote: netip.MustParseAddr("0.0.0.0"), Timers: fast},
		{Remote: netip.MustParseAddr("224.0.0.5"), Timers: fast},
		{Remote: addrB, Local: netip.MustParseAddr("fd00::1"), Timers: fast},
		{Remote: addrB, Timers: Timers{MinTx: time.Second, MinRx: time.Second}},
	} {
		if err := p.a.Set(peer); err == nil {
			t.Errorf("Set(%+v) accepted", peer)
		}
	}
	if len(p.a.Sessions()) != 0 {
		t.Fatal("an invalid peer got a session")
	}
}
