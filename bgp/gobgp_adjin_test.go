package bgp_test

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	gobgp "github.com/osrg/gobgp/v3/pkg/packet/bgp"

	"github.com/rhizome-net/rhizome/bgp"
)

// updateLog is a Handler that keeps every update in the order it came.
type updateLog struct {
	mu      sync.Mutex
	updates []*bgp.Update
	states  []bgp.SessionState
}

func (l *updateLog) HandleUpdate(u *bgp.Update) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.updates = append(l.updates, u)
}

func (l *updateLog) HandleEndOfRIB(netip.Addr, bgp.Family) {}

func (l *updateLog) HandlePeerState(e bgp.PeerEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.states = append(l.states, e.State)
}

// events renders the log as "+prefix" and "-prefix" in arrival order.
func (l *updateLog) events() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, u := range l.updates {
		for _, p := range u.Announced {
			out = append(out, "+"+p.Prefix.String())
		}
		for _, p := range u.Withdrawn {
			out = append(out, "-"+p.String())
		}
	}
	return out
}

func (l *updateLog) announced(p netip.Prefix) (bgp.ReceivedPath, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, u := range l.updates {
		for _, rp := range u.Announced {
			if rp.Prefix == p {
				return rp, true
			}
		}
	}
	return bgp.ReceivedPath{}, false
}

// TestGoBGPWatchKeepsGoBGPChecks feeds a real GoBGP speaker hand-made
// UPDATEs from a peer without the 4-byte AS capability and checks that what
// reaches the Handler through the packet-type watch (third_party/gobgp's
// WatchEventWithAdjIn) has been through GoBGP's own handling first: the
// AS4_PATH merged into the AS path, a path with our own AS in it left out,
// an UPDATE with a malformed ORIGIN turned into a withdrawal (RFC 7606)
// without resetting the session, and everything in the order it was sent.
func TestGoBGPWatchKeepsGoBGPChecks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := &updateLog{}
	sp, port := startWatchedSpeaker(ctx, t, log)
	if err := sp.AddPeer(ctx, bgp.Peer{Address: feederIP, ASN: feederAS, Passive: true}); err != nil {
		t.Fatal(err)
	}

	// A 2-byte-AS peer: no four-octet AS capability in its OPEN.
	feed := &table{
		open: mustSerialize(gobgp.NewBGPOpenMessage(feederAS, 90, feederIP.String(), []gobgp.OptionParameterInterface{
			gobgp.NewOptionParameterCapability([]gobgp.ParameterCapabilityInterface{
				gobgp.NewCapMultiProtocol(gobgp.RF_IPv4_UC),
				gobgp.NewCapRouteRefresh(),
			}),
		})),
		keepalive: mustSerialize(gobgp.NewBGPKeepAliveMessage()),
	}
	conn, err := dialSession(feed, port)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go io.Copy(io.Discard, conn)

	update := func(origin uint8, path []uint16, as4 []uint32, prefixes ...string) []byte {
		attrs := []gobgp.PathAttributeInterface{
			gobgp.NewPathAttributeOrigin(origin),
			gobgp.NewPathAttributeAsPath([]gobgp.AsPathParamInterface{gobgp.NewAsPathParam(gobgp.BGP_ASPATH_ATTR_TYPE_SEQ, path)}),
			gobgp.NewPathAttributeNextHop(feederIP.String()),
			gobgp.NewPathAttributeMultiExitDisc(7),
			gobgp.NewPathAttributeCommunities([]uint32{65001<<16 | 100}),
		}
		if as4 != nil {
			attrs = append(attrs, gobgp.NewPathAttributeAs4Path([]*gobgp.As4PathParam{gobgp.NewAs4PathParam(gobgp.BGP_ASPATH_ATTR_TYPE_SEQ, as4)}))
		}
		var nlri []*gobgp.IPAddrPrefix
		for _, p := range prefixes {
			pp := netip.MustParsePrefix(p)
			nlri = append(nlri, gobgp.NewIPAddrPrefix(uint8(pp.Bits()), pp.Addr().String()))
		}
		return mustSerialize(gobgp.NewBGPUpdateMessage(nil, attrs, nlri))
	}
	const asTrans = 23456
	var msgs []byte
	// 1. Through a 4-byte AS, shown to us as AS_TRANS plus AS4_PATH.
	msgs = append(msgs, update(0, []uint16{feederAS, asTrans, 64999}, []uint32{4200000000, 64999}, "10.1.0.0/24", "10.1.1.0/24")...)
	// 2. Our own AS in the path: a loop, GoBGP drops it.
	msgs = append(msgs, update(0, []uint16{feederAS, speakAS}, nil, "10.2.0.0/24")...)
	// 3. A malformed ORIGIN: treat-as-withdraw for the UPDATE's prefixes.
	msgs = append(msgs, update(5, []uint16{feederAS}, nil, "10.1.1.0/24")...)
	// 4. A plain path, last, to know everything before it was handled.
	msgs = append(msgs, update(2, []uint16{feederAS}, nil, "10.3.0.0/24")...)
	if _, err := conn.Write(msgs); err != nil {
		t.Fatal(err)
	}

	want := []string{"+10.1.0.0/24", "+10.1.1.0/24", "-10.1.1.0/24", "+10.3.0.0/24"}
	waitFor(t, fmt.Sprintf("updates %v", want), 20*time.Second, func() bool { return len(log.events()) >= len(want) })
	time.Sleep(100 * time.Millisecond) // anything wrongly delivered after 4 would show now
	if got := log.events(); !slices.Equal(got, want) {
		t.Errorf("updates = %v, want %v", got, want)
	}

	rp, ok := log.announced(netip.MustParsePrefix("10.1.0.0/24"))
	if !ok {
		t.Fatal("10.1.0.0/24 not announced")
	}
	a := rp.Attrs
	if !slices.Equal(a.ASPath, []uint32{feederAS, 4200000000, 64999}) || a.ASPathLen != 3 {
		t.Errorf("AS path = %v (length %d), want AS4_PATH merged: [65001 4200000000 64999]", a.ASPath, a.ASPathLen)
	}
	if rp.NextHop != feederIP || !a.HasMED || a.MED != 7 || !a.HasCommunity(65001<<16|100) || a.Origin != 0 {
		t.Errorf("path = %+v, attrs %+v", rp, a)
	}
	if rp2, _ := log.announced(netip.MustParsePrefix("10.1.1.0/24")); rp2.Attrs != a {
		t.Error("two prefixes of one UPDATE did not share their decoded attributes")
	}
	if rp3, _ := log.announced(netip.MustParsePrefix("10.3.0.0/24")); rp3.Attrs == nil || rp3.Attrs.Origin != 2 {
		t.Errorf("10.3.0.0/24 = %+v", rp3)
	}
	log.mu.Lock()
	states := slices.Clone(log.states)
	log.mu.Unlock()
	if len(states) == 0 || states[len(states)-1] != bgp.StateEstablished {
		t.Errorf("session states %v: the malformed UPDATE must not reset the session", states)
	}
}

// startWatchedSpeaker starts our GoBGP speaker on speakerIP, listening on
// a free port, with h watching it; it stops when the test ends.
func startWatchedSpeaker(ctx context.Context, t *testing.T, h bgp.Handler) (*bgp.GoBGP, uint16) {
	t.Helper()
	port := freePort(t, speakerIP)
	sp := bgp.NewGoBGP(bgp.GoBGPOptions{Logger: quietLog()})
	if err := sp.Start(ctx, bgp.Global{ASN: speakAS, RouterID: speakerIP, ListenPort: int32(port), ListenAddresses: []netip.Addr{speakerIP}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Stop(context.Background()) })
	if err := sp.Watch(ctx, h); err != nil {
		t.Fatal(err)
	}
	return sp, port
}
