package bgp_test

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gobgp "github.com/osrg/gobgp/v3/pkg/packet/bgp"

	"github.com/rhizome-net/rhizome/bgp"
)

// sessionLog is a Handler that keeps updates and session changes in one
// sequence: "+prefix", "-prefix", "state:S".
type sessionLog struct {
	mu     sync.Mutex
	events []string
}

func (l *sessionLog) add(e ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e...)
}

func (l *sessionLog) HandleUpdate(u *bgp.Update) {
	for _, p := range u.Announced {
		l.add("+" + p.Prefix.String())
	}
	for _, p := range u.Withdrawn {
		l.add("-" + p.String())
	}
}

func (l *sessionLog) HandleEndOfRIB(netip.Addr, bgp.Family) {}

func (l *sessionLog) HandlePeerState(e bgp.PeerEvent) { l.add("state:" + e.State.String()) }

func (l *sessionLog) seq() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

// TestGoBGPDropsQueuedMessagesOfDeletedPeer plays the hostile side of the
// queue that carries every peer's messages to GoBGP's server loop
// (third_party/gobgp, incoming_queue.go): a peer whose UPDATEs are still
// queued when it is deleted and configured again with the same address.
// The loop is held inside the import check (which runs on it) while the
// peer's UPDATEs pile up behind it and the deletion waits; once it is let
// go, whatever the loop had not taken before the deletion must be
// dropped, neither applied to the deleted session nor to the new one, and
// the new session must come up and carry its own routes alone. Upstream
// dropped such messages with the peer's own channel; with one shared
// queue the loop has to recognise them (the FSM is detached). Without
// that check the second queued message of the deleted FSM runs its
// clean-up again and GoBGP's loop panics (close of a closed channel).
func TestGoBGPDropsQueuedMessagesOfDeletedPeer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := &sessionLog{}
	sp, port := startWatchedSpeaker(ctx, t, log)

	gate := netip.MustParsePrefix("10.9.0.0/24")
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hold := func(_ netip.Addr, p netip.Prefix, _, _ netip.Addr) bool {
		if p == gate {
			once.Do(func() {
				close(held)
				<-release
			})
		}
		return true
	}
	if err := sp.SetImportCheck(ctx, hold, nil, true); err != nil {
		t.Fatal(err)
	}
	peer := bgp.Peer{Address: feederIP, ASN: feederAS, Passive: true}
	if err := sp.AddPeer(ctx, peer); err != nil {
		t.Fatal(err)
	}
	feed := encodeTable(0)

	update := func(p netip.Prefix) []byte {
		attrs := []gobgp.PathAttributeInterface{
			gobgp.NewPathAttributeOrigin(0),
			gobgp.NewPathAttributeAsPath([]gobgp.AsPathParamInterface{gobgp.NewAs4PathParam(gobgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint32{feederAS})}),
			gobgp.NewPathAttributeNextHop(feederIP.String()),
		}
		nlri := []*gobgp.IPAddrPrefix{gobgp.NewIPAddrPrefix(uint8(p.Bits()), p.Addr().String())}
		return mustSerialize(gobgp.NewBGPUpdateMessage(nil, attrs, nlri))
	}

	// The first session: the gate, then one UPDATE per stale prefix,
	// each its own message in the loop's queue.
	const stale = 200
	conn, err := dialSession(feed, port)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go io.Copy(io.Discard, conn)
	msgs := update(gate)
	stalePrefix := func(i int) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 50, byte(i >> 8), byte(i)}), 32)
	}
	for i := range stale {
		msgs = append(msgs, update(stalePrefix(i))...)
	}
	if _, err := conn.Write(msgs); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held:
	case <-ctx.Done():
		t.Fatal("the gate's UPDATE never reached the import check")
	}
	// GoBGP's reader queues the rest while the loop is held; the
	// deletion's request then waits in the loop's management channel.
	time.Sleep(300 * time.Millisecond)
	deleted := make(chan error, 1)
	go func() { deleted <- sp.DeletePeer(ctx, feederIP) }()
	time.Sleep(100 * time.Millisecond)
	close(release)
	if err := <-deleted; err != nil {
		t.Fatal(err)
	}

	// The same neighbour again, and a new session from it.
	if err := sp.AddPeer(ctx, peer); err != nil {
		t.Fatal(err)
	}
	fresh := netip.MustParsePrefix("10.60.0.0/24")
	conn2, err := dialSession(feed, port)
	if err != nil {
		t.Fatalf("new session: %v", err)
	}
	go io.Copy(io.Discard, conn2)
	defer conn2.Close()
	if _, err := conn2.Write(update(fresh)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new session's route", 20*time.Second, func() bool {
		return slices.Contains(log.seq(), "+"+fresh.String())
	})
	time.Sleep(200 * time.Millisecond) // a stale message wrongly applied late would show now

	// What the handler holds in the end: only the new session's route.
	// A session leaving Established has dropped its routes (Handler); no
	// stale prefix may arrive after the first session went down.
	holds := map[string]bool{}
	announcedStale, up, down := 0, false, false
	for _, e := range log.seq() {
		if st, ok := strings.CutPrefix(e, "state:"); ok {
			if st == bgp.StateEstablished.String() {
				up = true
			} else {
				clear(holds)
				down = down || up
			}
			continue
		}
		holds[e[1:]] = e[0] == '+'
		if e[0] == '+' && strings.HasPrefix(e, "+10.50.") {
			if down {
				t.Errorf("%s of the deleted session applied after it went down (events %v)", e, log.seq())
			}
			announcedStale++
		}
	}
	var holding []string
	for p, ok := range holds {
		if ok {
			holding = append(holding, p)
		}
	}
	slices.Sort(holding)
	if want := []string{fresh.String()}; !slices.Equal(holding, want) {
		t.Errorf("handler holds %v, want %v (events %v)", holding, want, log.seq())
	}
	rec, err := sp.Received(ctx, feederIP)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range rec {
		got = append(got, p.Prefix.String())
	}
	if want := []string{fresh.String()}; !slices.Equal(got, want) {
		t.Errorf("received from the new session: %v, want %v", got, want)
	}
	// The point of the test: some of the first session's messages were
	// still queued when it was deleted (the loop takes the deletion and
	// the queue in random order, so a few are applied before it).
	if announcedStale >= stale {
		t.Fatalf("all %d stale UPDATEs were applied before the deletion: nothing was left queued to drop", stale)
	}
	t.Logf("%d of %d queued UPDATEs applied before the deletion, the rest dropped", announcedStale, stale)
	if ps, err := sp.Peers(ctx, nil); err != nil {
		t.Fatal(err)
	} else if len(ps) != 1 || ps[0].State != bgp.StateEstablished {
		t.Errorf("peers %s", fmt.Sprint(ps))
	}
}
