package bgp_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	gobgp "github.com/osrg/gobgp/v3/pkg/packet/bgp"

	"github.com/rhizome-net/rhizome/bgp"
)

// rawPeer is a hand-driven BGP peer (a helper of graceful restart, as BIRD
// and FRR are) that shows exactly what the speaker sends and when.
type rawPeer struct {
	t    *testing.T
	ip   netip.Addr
	asn  uint32
	conn net.Conn
	// open is the OPEN the speaker sent.
	open *gobgp.BGPOpen
}

// dialRaw opens a session from ip to the speaker, sending an OPEN with
// graceful restart (helper: no Restart State bit, F bit set), and returns
// once both sides sent OPEN and KEEPALIVE.
func dialRaw(t *testing.T, ip netip.Addr, asn uint32, to netip.Addr, port uint16) *rawPeer {
	t.Helper()
	open := mustSerialize(gobgp.NewBGPOpenMessage(uint16(asn), 90, ip.String(), []gobgp.OptionParameterInterface{
		gobgp.NewOptionParameterCapability([]gobgp.ParameterCapabilityInterface{
			gobgp.NewCapMultiProtocol(gobgp.RF_IPv4_UC),
			gobgp.NewCapFourOctetASNumber(asn),
			gobgp.NewCapGracefulRestart(false, false, 120, []*gobgp.CapGracefulRestartTuple{gobgp.NewCapGracefulRestartTuple(gobgp.RF_IPv4_UC, true)}),
		}),
	}))
	p := &rawPeer{t: t, ip: ip, asn: asn}
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if err = p.handshake(open, to, port); err == nil {
			t.Cleanup(func() { p.conn.Close() })
			return p
		}
	}
	t.Fatalf("session from %s: %v", ip, err)
	return nil
}

func (p *rawPeer) handshake(open []byte, to netip.Addr, port uint16) error {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: p.ip.AsSlice()}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", netip.AddrPortFrom(to, port).String())
	if err != nil {
		return err
	}
	p.conn = conn
	if _, err := conn.Write(open); err != nil {
		conn.Close()
		return err
	}
	for got := 0; got < 2; {
		m, err := p.read(5 * time.Second)
		if err != nil {
			conn.Close()
			return err
		}
		switch b := m.Body.(type) {
		case *gobgp.BGPOpen:
			p.open = b
			got++
		case *gobgp.BGPKeepAlive:
			got++
		case *gobgp.BGPNotification:
			conn.Close()
			return fmt.Errorf("notification %d/%d", b.ErrorCode, b.ErrorSubcode)
		}
	}
	_, err = conn.Write(mustSerialize(gobgp.NewBGPKeepAliveMessage()))
	return err
}

// read returns the next message, or an error after the timeout.
func (p *rawPeer) read(timeout time.Duration) (*gobgp.BGPMessage, error) {
	p.conn.SetReadDeadline(time.Now().Add(timeout))
	var hdr [19]byte
	if _, err := io.ReadFull(p.conn, hdr[:]); err != nil {
		return nil, err
	}
	msg := make([]byte, int(binary.BigEndian.Uint16(hdr[16:18])))
	copy(msg, hdr[:])
	if _, err := io.ReadFull(p.conn, msg[19:]); err != nil {
		return nil, err
	}
	return gobgp.ParseBGPMessage(msg)
}

// grFlags returns the Restart State bit of the speaker's OPEN and the
// Forwarding State bit of its IPv4 unicast tuple.
func (p *rawPeer) grFlags() (restart, forwarding bool) {
	p.t.Helper()
	for _, o := range p.open.OptParams {
		c, ok := o.(*gobgp.OptionParameterCapability)
		if !ok {
			continue
		}
		for _, cap := range c.Capability {
			gr, ok := cap.(*gobgp.CapGracefulRestart)
			if !ok {
				continue
			}
			restart = gr.Flags&0x08 != 0
			for _, tu := range gr.Tuples {
				if tu.AFI == gobgp.AFI_IP && tu.SAFI == gobgp.SAFI_UNICAST {
					forwarding = tu.Flags&0x80 != 0
				}
			}
			return restart, forwarding
		}
	}
	p.t.Fatalf("the speaker's OPEN to %s has no graceful-restart capability", p.ip)
	return false, false
}

// sendEndOfRIB sends the peer's (empty) table.
func (p *rawPeer) sendEndOfRIB() {
	p.t.Helper()
	if _, err := p.conn.Write(mustSerialize(gobgp.NewEndOfRib(gobgp.RF_IPv4_UC))); err != nil {
		p.t.Fatal(err)
	}
}

// received reads what the speaker sends until End-of-RIB: the announced
// prefixes, in order.
func (p *rawPeer) receivedUntilEndOfRIB() []string {
	p.t.Helper()
	var got []string
	for {
		m, err := p.read(10 * time.Second)
		if err != nil {
			p.t.Fatalf("%s: reading the speaker's table: %v (got %v so far)", p.ip, err, got)
		}
		u, ok := m.Body.(*gobgp.BGPUpdate)
		if !ok {
			continue
		}
		if eor, _ := u.IsEndOfRib(); eor {
			return got
		}
		for _, n := range u.NLRI {
			got = append(got, n.String())
		}
	}
}

// expectSilence fails if the speaker sends an UPDATE within d.
func (p *rawPeer) expectSilence(d time.Duration, why string) {
	p.t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); {
		m, err := p.read(time.Until(deadline))
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return
		}
		if err != nil {
			p.t.Fatalf("%s: %v", p.ip, err)
		}
		if _, ok := m.Body.(*gobgp.BGPUpdate); ok {
			p.t.Fatalf("%s: the speaker sent an UPDATE %s", p.ip, why)
		}
	}
}

// TestGoBGPRestartingSpeaker: a speaker started as Restarting (an agent
// restart: the kernel kept its routes) tells each graceful-restart peer so
// in its OPEN — the Restart State bit and, for IPv4 unicast, the
// Forwarding State bit, without which BIRD and FRR flush our routes the
// moment the session is up — and defers its routes until the peers' End-
// of-RIB (RFC 4724 4.1), then sends them before its own End-of-RIB. A peer
// that comes up after the first ones finished syncing still gets the bits
// (upstream GoBGP cleared them on every peer at the first sync) and still
// waits for its own End-of-RIB; the peer synced before is not sent the
// table again. A session configured after the restart time gets none.
func TestGoBGPRestartingSpeaker(t *testing.T) {
	ourIP := netip.MustParseAddr("127.0.0.221")
	p1IP, p2IP, p3IP := netip.MustParseAddr("127.0.0.222"), netip.MustParseAddr("127.0.0.223"), netip.MustParseAddr("127.0.0.224")
	port := freePort(t, ourIP)
	ctx := context.Background()
	sp := bgp.NewGoBGP(bgp.GoBGPOptions{Logger: testLogger(t), GoBGPLogLevel: gobgpLevel()})
	start := time.Now()
	if err := sp.Start(ctx, bgp.Global{ASN: 64512, RouterID: ourIP, ListenPort: int32(port), ListenAddresses: []netip.Addr{ourIP}, Restarting: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Stop(context.Background()) })
	// As the agent does: routes first, then sessions.
	if err := sp.Advertise(ctx, bgp.Advertisement{Prefix: pfx("10.244.1.0/26")}); err != nil {
		t.Fatal(err)
	}
	if err := sp.SetExportPolicy(ctx, bgp.ExportPolicy{}); err != nil {
		t.Fatal(err)
	}
	gr := bgp.GracefulRestart{Enabled: true, RestartTime: 120 * time.Second}
	for _, ip := range []netip.Addr{p1IP, p2IP} {
		if err := sp.AddPeer(ctx, bgp.Peer{Address: ip, ASN: 65001, Passive: true, GracefulRestart: gr}); err != nil {
			t.Fatal(err)
		}
	}
	// A session whose restart time (1 s) is over when it is configured.
	if err := sp.AddPeer(ctx, bgp.Peer{Address: p3IP, ASN: 65001, Passive: true, GracefulRestart: bgp.GracefulRestart{Enabled: true, RestartTime: time.Second}}); err != nil {
		t.Fatal(err)
	}

	p1 := dialRaw(t, p1IP, 65001, ourIP, port)
	if r, f := p1.grFlags(); !r || !f {
		t.Errorf("OPEN to the first peer: Restart State %v, Forwarding State %v; want both set", r, f)
	}
	p1.expectSilence(500*time.Millisecond, "before the peer's End-of-RIB (deferral)")
	p1.sendEndOfRIB()
	if got := p1.receivedUntilEndOfRIB(); len(got) != 1 || got[0] != "10.244.1.0/26" {
		t.Errorf("first peer got %v before End-of-RIB, want [10.244.1.0/26]", got)
	}

	// The second peer comes up after the first one finished syncing.
	p2 := dialRaw(t, p2IP, 65001, ourIP, port)
	if r, f := p2.grFlags(); !r || !f {
		t.Errorf("OPEN to a peer that came up after the first sync: Restart State %v, Forwarding State %v; want both set", r, f)
	}
	p2.expectSilence(500*time.Millisecond, "before the late peer's End-of-RIB")
	p2.sendEndOfRIB()
	if got := p2.receivedUntilEndOfRIB(); len(got) != 1 || got[0] != "10.244.1.0/26" {
		t.Errorf("late peer got %v before End-of-RIB, want [10.244.1.0/26]", got)
	}
	p1.expectSilence(500*time.Millisecond, "again to the peer synced before")

	// After the restart: new routes go out at once.
	if err := sp.Advertise(ctx, bgp.Advertisement{Prefix: pfx("10.244.2.0/26")}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*rawPeer{p1, p2} {
		m, err := p.read(5 * time.Second)
		if err != nil {
			t.Fatalf("%s: no UPDATE for a new route after the restart: %v", p.ip, err)
		}
		if u, ok := m.Body.(*gobgp.BGPUpdate); !ok || len(u.NLRI) != 1 || u.NLRI[0].String() != "10.244.2.0/26" {
			t.Errorf("%s: got %v, want an UPDATE for 10.244.2.0/26", p.ip, m.Body)
		}
	}

	if time.Since(start) < time.Second {
		t.Fatal("the test ran faster than the third session's restart time; it cannot check it")
	}
	if err := sp.DeletePeer(ctx, p3IP); err != nil {
		t.Fatal(err)
	}
	if err := sp.AddPeer(ctx, bgp.Peer{Address: p3IP, ASN: 65001, Passive: true, GracefulRestart: bgp.GracefulRestart{Enabled: true, RestartTime: time.Second}}); err != nil {
		t.Fatal(err)
	}
	p3 := dialRaw(t, p3IP, 65001, ourIP, port)
	if r, f := p3.grFlags(); r || f {
		t.Errorf("OPEN of a session configured after its restart time: Restart State %v, Forwarding State %v; want neither", r, f)
	}
	if got := p3.receivedUntilEndOfRIB(); len(got) != 2 {
		t.Errorf("a session after the restart got %v before End-of-RIB without waiting for the peer's, want both routes", got)
	}
}

// TestGoBGPFreshSpeaker: a speaker that is not restarting claims no
// forwarding state and sends its table at once.
func TestGoBGPFreshSpeaker(t *testing.T) {
	ourIP, peerIP := netip.MustParseAddr("127.0.0.225"), netip.MustParseAddr("127.0.0.226")
	port := freePort(t, ourIP)
	ctx := context.Background()
	sp := bgp.NewGoBGP(bgp.GoBGPOptions{Logger: testLogger(t), GoBGPLogLevel: gobgpLevel()})
	if err := sp.Start(ctx, bgp.Global{ASN: 64512, RouterID: ourIP, ListenPort: int32(port), ListenAddresses: []netip.Addr{ourIP}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Stop(context.Background()) })
	if err := sp.Advertise(ctx, bgp.Advertisement{Prefix: pfx("10.244.1.0/26")}); err != nil {
		t.Fatal(err)
	}
	if err := sp.SetExportPolicy(ctx, bgp.ExportPolicy{}); err != nil {
		t.Fatal(err)
	}
	if err := sp.AddPeer(ctx, bgp.Peer{Address: peerIP, ASN: 65001, Passive: true, GracefulRestart: bgp.GracefulRestart{Enabled: true}}); err != nil {
		t.Fatal(err)
	}
	p := dialRaw(t, peerIP, 65001, ourIP, port)
	if r, f := p.grFlags(); r || f {
		t.Errorf("OPEN of a fresh speaker: Restart State %v, Forwarding State %v; want neither", r, f)
	}
	if got := p.receivedUntilEndOfRIB(); len(got) != 1 {
		t.Errorf("fresh speaker sent %v before End-of-RIB, want its route without waiting", got)
	}
}

// TestGoBGPStopGracefully: a speaker replaced by another (new router ID or
// port) closes its sessions without a NOTIFICATION, so that peers keep its
// routes for graceful restart; Stop sends the Cease.
func TestGoBGPStopGracefully(t *testing.T) {
	for _, graceful := range []bool{true, false} {
		ourIP, peerIP := netip.MustParseAddr("127.0.0.227"), netip.MustParseAddr("127.0.0.228")
		port := freePort(t, ourIP)
		ctx := context.Background()
		sp := bgp.NewGoBGP(bgp.GoBGPOptions{Logger: testLogger(t), GoBGPLogLevel: gobgpLevel()})
		if err := sp.Start(ctx, bgp.Global{ASN: 64512, RouterID: ourIP, ListenPort: int32(port), ListenAddresses: []netip.Addr{ourIP}}); err != nil {
			t.Fatal(err)
		}
		if err := sp.AddPeer(ctx, bgp.Peer{Address: peerIP, ASN: 65001, Passive: true, GracefulRestart: bgp.GracefulRestart{Enabled: true}}); err != nil {
			t.Fatal(err)
		}
		p := dialRaw(t, peerIP, 65001, ourIP, port)
		p.receivedUntilEndOfRIB()
		stop := sp.Stop
		if graceful {
			stop = sp.StopGracefully
		}
		if err := stop(ctx); err != nil {
			t.Fatal(err)
		}
		var notification *gobgp.BGPNotification
		for {
			m, err := p.read(5 * time.Second)
			if err != nil {
				break // the connection closed
			}
			if n, ok := m.Body.(*gobgp.BGPNotification); ok {
				notification = n
			}
		}
		switch {
		case graceful && notification != nil:
			t.Errorf("StopGracefully sent a NOTIFICATION %d/%d", notification.ErrorCode, notification.ErrorSubcode)
		case !graceful && notification == nil:
			t.Errorf("Stop sent no Cease")
		}
	}
}
