package bgp_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	gobgp "github.com/osrg/gobgp/v3/pkg/packet/bgp"

	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/bgp/policy"
	"github.com/rhizome-net/rhizome/bgp/rib"
)

// TestGoBGPLongLivedGracefulRestart drives the embedded speaker and the
// RIB with a raw peer that advertises graceful restart (2 s) and long-lived
// graceful restart (3 s), then vanishes without a notification: its routes
// must stay through the restart time, stay as LLGR-stale after it, and go
// when the long-lived stale time is over — although GoBGP reports that last
// step to nobody.
func TestGoBGPLongLivedGracefulRestart(t *testing.T) {
	peerIP, ourIP := netip.MustParseAddr("127.0.0.211"), netip.MustParseAddr("127.0.0.212")
	port := freePort(t, ourIP)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sp := bgp.NewGoBGP(bgp.GoBGPOptions{Logger: testLogger(t), GoBGPLogLevel: gobgpLevel()})
	if err := sp.Start(ctx, bgp.Global{ASN: 64512, RouterID: ourIP, ListenPort: int32(port), ListenAddresses: []netip.Addr{ourIP}}); err != nil {
		t.Fatal(err)
	}
	defer sp.Stop(context.Background())
	sink := newCounter(2)
	r := rib.New(rib.Config{Speaker: sp, Sink: sink, Logger: testLogger(t), StaleRecheck: time.Second})
	r.Set(rib.Settings{
		Policy: policy.Compile(policy.Input{Peers: map[netip.Addr]policy.PeerPolicy{peerIP: {Rules: []policy.Rule{
			{CIDR: netip.MustParsePrefix("0.0.0.0/0"), Op: policy.In, MinLen: -1, MaxLen: -1, Action: policy.Accept},
		}}}}),
		Peers: map[netip.Addr]rib.PeerInfo{peerIP: {EBGP: true}},
	})
	go r.Run(ctx)
	if err := sp.Watch(ctx, r); err != nil {
		t.Fatal(err)
	}
	err := sp.AddPeer(ctx, bgp.Peer{Address: peerIP, ASN: 65001, Passive: true,
		GracefulRestart: bgp.GracefulRestart{Enabled: true, RestartTime: time.Minute, LongLivedStaleTime: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}

	open := mustSerialize(gobgp.NewBGPOpenMessage(65001, 90, peerIP.String(), []gobgp.OptionParameterInterface{
		gobgp.NewOptionParameterCapability([]gobgp.ParameterCapabilityInterface{
			gobgp.NewCapMultiProtocol(gobgp.RF_IPv4_UC),
			gobgp.NewCapFourOctetASNumber(65001),
			gobgp.NewCapGracefulRestart(false, false, 2, []*gobgp.CapGracefulRestartTuple{gobgp.NewCapGracefulRestartTuple(gobgp.RF_IPv4_UC, true)}),
			gobgp.NewCapLongLivedGracefulRestart([]*gobgp.CapLongLivedGracefulRestartTuple{gobgp.NewCapLongLivedGracefulRestartTuple(gobgp.RF_IPv4_UC, true, 3)}),
		}),
	}))
	attrs := []gobgp.PathAttributeInterface{
		gobgp.NewPathAttributeOrigin(0),
		gobgp.NewPathAttributeAsPath([]gobgp.AsPathParamInterface{gobgp.NewAs4PathParam(gobgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint32{65001})}),
		gobgp.NewPathAttributeNextHop(peerIP.String()),
	}
	update := mustSerialize(gobgp.NewBGPUpdateMessage(nil, attrs, []*gobgp.IPAddrPrefix{
		gobgp.NewIPAddrPrefix(0, "0.0.0.0"), gobgp.NewIPAddrPrefix(24, "192.168.10.0"),
	}))
	eor := mustSerialize(gobgp.NewEndOfRib(gobgp.RF_IPv4_UC))
	tbl := &table{open: open, keepalive: mustSerialize(gobgp.NewBGPKeepAliveMessage())}
	conn, err := dialFrom(tbl, peerIP, ourIP, port)
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, conn)
	if _, err := conn.Write(append(update, eor...)); err != nil {
		t.Fatal(err)
	}
	held := func() []string {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		var out []string
		for p := range sink.set {
			out = append(out, p.String())
		}
		slices.Sort(out)
		return out
	}
	both := []string{"0.0.0.0/0", "192.168.10.0/24"}
	waitFor(t, "both routes", 20*time.Second, func() bool { return slices.Equal(held(), both) })
	waitFor(t, "convergence", 20*time.Second, r.Converged)

	// The peer vanishes: no notification, so graceful restart applies.
	conn.(*net.TCPConn).SetLinger(0)
	conn.Close()
	// (The test watches the RIB's counters, not the speaker's table: GoBGP
	// v3 marks paths stale in place while its ListPath reads them.)
	counters := func() rib.PeerCounters { return r.Counters()[peerIP] }
	waitFor(t, "stale paths during the restart time", 20*time.Second, func() bool { return counters().Stale == 2 })
	if got := held(); !slices.Equal(got, both) {
		t.Fatalf("routes during the restart time = %v", got)
	}
	waitFor(t, "long-lived stale paths after the restart time", 20*time.Second, func() bool { return counters().LongLivedStale == 2 })
	if got := held(); !slices.Equal(got, both) {
		t.Fatalf("routes during the long-lived stale time = %v", got)
	}
	// GoBGP drops them when the long-lived stale time (3 s) is over; the
	// RIB notices on its next recheck.
	waitFor(t, "the routes to go after the long-lived stale time", 20*time.Second, func() bool { return len(held()) == 0 })
}

// dialFrom opens a raw session from one loopback address to another.
func dialFrom(t *table, from, to netip.Addr, port uint16) (net.Conn, error) {
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var conn net.Conn
		if conn, err = handshakeFrom(t, from, to, port); err == nil {
			return conn, nil
		}
	}
	return nil, err
}
