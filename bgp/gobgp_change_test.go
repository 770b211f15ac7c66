package bgp_test

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rhizome-net/rhizome/bgp"
)

// heldWatch polls, every 5 ms until stop, whether a node's speaker still
// holds a prefix from a peer (GoBGP keeps it as stale through a graceful
// restart), and counts the polls that found it missing.
type heldWatch struct {
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	missing int
	polls   int
}

func watchHeld(n *node, peer netip.Addr, prefix netip.Prefix) *heldWatch {
	w := &heldWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			paths, _ := n.sp.Received(context.Background(), peer)
			found := slices.ContainsFunc(paths, func(p bgp.ReceivedPath) bool { return p.Prefix == prefix })
			w.mu.Lock()
			w.polls++
			if !found {
				w.missing++
			}
			w.mu.Unlock()
			select {
			case <-w.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *heldWatch) end() (missing, polls int) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.missing, w.polls
}

func since(n *node, peer netip.Addr) time.Time {
	l, _ := n.sp.Peers(context.Background(), nil)
	for _, p := range l {
		if p.Address == peer {
			return p.Since
		}
	}
	return time.Time{}
}

func status(n *node, peer netip.Addr) bgp.PeerStatus {
	l, _ := n.sp.Peers(context.Background(), func(netip.Addr) bool { return true })
	for _, p := range l {
		if p.Address == peer {
			return p
		}
	}
	return bgp.PeerStatus{}
}

// TestGoBGPConfigChangesKeepRoutes (issue 16): with graceful restart on,
// a session's route-reflector role, cluster ID, timers and password change
// on a live session. Each takes effect (upstream GoBGP never applied the
// role to a live session and applied timers only at the next connection),
// only that session starts over, and neither end loses the other's routes
// meanwhile: the session is closed without a NOTIFICATION and opened again
// with the Restart State and Forwarding State bits. The other session's
// uptime is untouched.
func TestGoBGPConfigChangesKeepRoutes(t *testing.T) {
	a := startNode(t, "a", "127.0.0.61", 64512, "")
	b := startNode(t, "b", "127.0.0.62", 64512, "")
	c := startNode(t, "c", "127.0.0.63", 64512, "")
	ctx := context.Background()
	for n, p := range map[*node]string{a: "10.244.1.0/26", b: "10.244.2.0/26", c: "10.244.3.0/26"} {
		if err := n.sp.Advertise(ctx, bgp.Advertisement{Prefix: pfx(p)}); err != nil {
			t.Fatal(err)
		}
	}
	// a will reflect: its export policy lets iBGP-learned pool routes pass
	// to every peer (Rhizome's own rule; GoBGP's reflection rules decide).
	if err := a.sp.SetExportPolicy(ctx, bgp.ExportPolicy{Reflect: []netip.Prefix{pfx("10.244.0.0/16")}}); err != nil {
		t.Fatal(err)
	}
	gr := func(_, _ *node, p *bgp.Peer) {
		p.GracefulRestart = bgp.GracefulRestart{Enabled: true, RestartTime: 60 * time.Second}
	}
	connect(t, a, b, gr)
	connect(t, a, c, gr)
	waitPrefixes(t, b, a, "10.244.1.0/26")
	waitPrefixes(t, c, a, "10.244.1.0/26")
	// Not reflectors yet: a does not pass b's route to c.
	time.Sleep(300 * time.Millisecond)
	if got := c.rec.prefixes(a.ip); !slices.Equal(got, []string{"10.244.1.0/26"}) {
		t.Fatalf("c got %v from a before a reflects", got)
	}
	acSince := since(a, c.ip)

	// change applies p on a's session to b and checks that b kept a's
	// route and a kept b's throughout, and that a-c was not touched.
	change := func(what string, p bgp.Peer, reset bool, effect func() bool) {
		t.Helper()
		atB := watchHeld(b, a.ip, pfx("10.244.1.0/26"))
		atA := watchHeld(a, b.ip, pfx("10.244.2.0/26"))
		before := since(a, b.ip)
		if err := a.sp.UpdatePeer(ctx, p); err != nil {
			t.Fatal(err)
		}
		if reset {
			waitFor(t, what+": the session started over", 30*time.Second, func() bool {
				st := status(a, b.ip)
				return st.State == bgp.StateEstablished && st.Since.After(before)
			})
		}
		waitFor(t, what+": takes effect", 30*time.Second, effect)
		if s := since(a, b.ip); !reset && !s.Equal(before) {
			t.Errorf("%s: a-b restarted (since %v, was %v); the change needs no new session", what, s, before)
		}
		time.Sleep(200 * time.Millisecond)
		if m, n := atB.end(); m > 0 || n == 0 {
			t.Errorf("%s: b lost a's route in %d of %d polls", what, m, n)
		}
		if m, n := atA.end(); m > 0 || n == 0 {
			t.Errorf("%s: a lost b's route in %d of %d polls", what, m, n)
		}
		if s := since(a, c.ip); !s.Equal(acSince) {
			t.Errorf("%s: a-c restarted too (since %v, was %v)", what, s, acSince)
		}
	}

	pb := a.peerConfig(b)
	gr(a, b, &pb)
	pb.Passive = a.ip.Compare(b.ip) > 0
	pb.RouteReflectorClient, pb.RouteReflectorClusterID = true, addr("224.0.0.1")
	change("b becomes a's route-reflector client", pb, false, func() bool {
		return slices.Contains(c.rec.prefixes(a.ip), "10.244.2.0/26")
	})

	// c becomes a client too, then the cluster ID changes: b's and c's
	// routes reach each other with the new ID in their CLUSTER_LIST.
	pc := a.peerConfig(c)
	gr(a, c, &pc)
	pc.Passive = a.ip.Compare(c.ip) > 0
	pc.RouteReflectorClient, pc.RouteReflectorClusterID = true, addr("224.0.0.1")
	if err := a.sp.UpdatePeer(ctx, pc); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "c's route reflected to b", 30*time.Second, func() bool { return slices.Contains(b.rec.prefixes(a.ip), "10.244.3.0/26") })
	acSince = since(a, c.ip)
	if acSince.IsZero() {
		t.Fatal("a-c not established")
	}
	pb.RouteReflectorClusterID = addr("224.0.0.2")
	change("the cluster ID changes", pb, false, func() bool {
		p, ok := b.rec.path(a.ip, pfx("10.244.3.0/26"))
		return ok && p.Attrs != nil && p.Attrs.ClusterListLen == 1 && p.Attrs.OriginatorID == c.ip
	})

	pb.Timers.Hold, pb.Timers.Keepalive = 6*time.Second, 2*time.Second
	change("the hold time changes", pb, true, func() bool { return status(a, b.ip).HoldTime == 6*time.Second })

	// c and then b stop being clients: between two non-clients nothing is
	// reflected, so the routes reflected to each must go. A session that
	// loses its client role starts over (gracefully), and at a's
	// End-of-RIB the peer drops what it was not sent again; a's own route
	// stays throughout.
	pc.RouteReflectorClient, pc.RouteReflectorClusterID = false, netip.Addr{}
	cBefore := since(a, c.ip)
	if err := a.sp.UpdatePeer(ctx, pc); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a-c back after c stopped being a client", 30*time.Second, func() bool {
		st := status(a, c.ip)
		return st.State == bgp.StateEstablished && st.Since.After(cBefore)
	})
	acSince = since(a, c.ip)
	pb.RouteReflectorClient, pb.RouteReflectorClusterID = false, netip.Addr{}
	change("b stops being a client", pb, true, func() bool {
		paths, _ := b.sp.Received(ctx, a.ip)
		return len(paths) == 1 && paths[0].Prefix == pfx("10.244.1.0/26") && !paths[0].Stale
	})

	// A password on a's side only: the session cannot come back until b
	// has it too; graceful restart keeps the routes meanwhile.
	pb.Password = "s3cret"
	atB := watchHeld(b, a.ip, pfx("10.244.1.0/26"))
	before := since(a, b.ip)
	if err := a.sp.UpdatePeer(ctx, pb); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the session goes down on a's password", 30*time.Second, func() bool { return status(a, b.ip).State != bgp.StateEstablished })
	time.Sleep(time.Second)
	pa := b.peerConfig(a)
	gr(b, a, &pa)
	pa.Passive = b.ip.Compare(a.ip) > 0
	pa.Password = "s3cret"
	if err := b.sp.UpdatePeer(ctx, pa); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the session back with the password", 30*time.Second, func() bool {
		st := status(a, b.ip)
		return st.State == bgp.StateEstablished && st.Since.After(before)
	})
	if m, n := atB.end(); m > 0 || n == 0 {
		t.Errorf("password change: b lost a's route in %d of %d polls", m, n)
	}
	if s := since(a, c.ip); !s.Equal(acSince) {
		t.Errorf("password change: a-c restarted too")
	}
}

// TestGoBGPTTLSecurityWhileDown: TTL security turned on or off while the
// session is down (the peer node is away) must be taken, for the next
// connection. Upstream GoBGP tried the socket options on the last, closed
// connection and failed the whole update ("use of closed network
// connection"), so the agent reported the session as not configured and
// the next connection kept the old settings.
func TestGoBGPTTLSecurityWhileDown(t *testing.T) {
	a := startNode(t, "a", "127.0.0.93", 64512, "")
	b := startNode(t, "b", "127.0.0.94", 64512, "")
	ctx := context.Background()
	connect(t, a, b, nil)
	waitEstablished(t, a, b)
	if err := b.sp.DeletePeer(ctx, a.ip); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a's session to go down", 30*time.Second, func() bool { return a.rec.state(b.ip) != bgp.StateEstablished })
	p := a.peerConfig(b)
	for _, hops := range []uint8{1, 0, 2} {
		p.TTLSecurityHops = hops
		if err := a.sp.UpdatePeer(ctx, p); err != nil {
			t.Fatalf("TTL security %d while the session is down: %v", hops, err)
		}
	}
}
