package bgp

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// nopHandler takes the watch's events and does nothing with them.
type nopHandler struct{}

func (nopHandler) HandleUpdate(*Update)              {}
func (nopHandler) HandleEndOfRIB(netip.Addr, Family) {}
func (nopHandler) HandlePeerState(PeerEvent)         {}

// TestPeersSnapshot: with many sessions, Peers lists them from GoBGP once
// and hands the listing out again while nothing changed; a change through
// the Speaker (here a session deleted), an event from the watch, or a
// different choice of sessions to count makes it list again, and the
// answer shows the change. With few sessions it always lists.
func TestPeersSnapshot(t *testing.T) {
	ctx := context.Background()
	s := NewGoBGP(GoBGPOptions{})
	self := netip.MustParseAddr("127.0.0.61")
	if err := s.Start(ctx, Global{ASN: 64512, RouterID: self, ListenPort: -1}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(context.Background()) })
	wctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	if err := s.Watch(wctx, nopHandler{}); err != nil {
		t.Fatal(err)
	}
	peer := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{127, 1, byte(i / 250), byte(1 + i%250)}) }
	add := func(from, to int) {
		for i := from; i < to; i++ {
			if err := s.AddPeer(ctx, Peer{Address: peer(i), ASN: 64512, Passive: true}); err != nil {
				t.Fatal(err)
			}
		}
	}
	listed := func() bool {
		before := s.snap.at
		if _, err := s.Peers(ctx, nil); err != nil {
			t.Fatal(err)
		}
		return s.snap.at != before
	}

	// settle waits until the sessions' first state events (passive
	// sessions going to Active) are in and a listing is handed out again.
	settle := func() {
		t.Helper()
		for range 100 {
			if !listed() {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatal("nothing changed: listed again and again")
	}

	add(0, peersSnapshotMin-1)
	for range 2 {
		if !listed() {
			t.Fatalf("%d sessions: a listing was handed out again", peersSnapshotMin-1)
		}
	}
	add(peersSnapshotMin-1, peersSnapshotMin+1)
	if !listed() {
		t.Fatal("after AddPeer: not listed again")
	}
	settle()
	if err := s.DeletePeer(ctx, peer(0)); err != nil {
		t.Fatal(err)
	}
	if !listed() {
		t.Fatal("after DeletePeer: not listed again")
	}
	l, err := s.Peers(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != peersSnapshotMin {
		t.Fatalf("listing holds %d sessions, want %d", len(l), peersSnapshotMin)
	}
	s.changed() // as the watch does on any event
	if !listed() {
		t.Fatal("after a watch event: not listed again")
	}
	// None is established, so none is counted whatever the choice: the
	// same listing answers.
	settle()
	before := s.snap.at
	if _, err := s.Peers(ctx, func(netip.Addr) bool { return true }); err != nil {
		t.Fatal(err)
	}
	if s.snap.at != before {
		t.Fatal("nothing changed: listed again")
	}
}
