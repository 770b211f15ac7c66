package reconcile

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/rhizome-net/rhizome/bgp"
)

// TestHoldTimerExpiryDropsRoutes: a session lost to a closed connection
// keeps its routes (graceful restart: the agent restarts); a session lost
// to an expired hold timer is re-created and its routes are dropped (the
// node or its link is gone).
func TestHoldTimerExpiryDropsRoutes(t *testing.T) {
	cases := []struct {
		reason    string
		wantKept  bool
		wantReset bool
	}{
		{"session down: the connection was closed or lost (read-failed)", true, false},
		{"hold timer expired: no message from the peer within the hold time", false, true},
	}
	for _, c := range cases {
		t.Run(c.reason, func(t *testing.T) {
			f := newFixture(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go f.r.Run(ctx)
			f.reconcile(baseState())
			sp := f.sp()
			b := netip.MustParseAddr("10.0.1.2")
			block := netip.MustParsePrefix("10.244.5.0/26")
			sp.SetState(b, bgp.StateEstablished, false, "")
			sp.Receive(bgp.Update{Peer: b, Announced: []bgp.ReceivedPath{{Prefix: block, NextHop: b, Attrs: &bgp.Attrs{}}}})
			waitFor(t, "the block is learned", func() bool { return f.sink.has(block) })
			sp.Ops()

			sp.SetState(b, bgp.StateActive, true, c.reason) // GoBGP keeps the paths stale either way
			if c.wantReset {
				waitFor(t, "the session is re-created", func() bool {
					ops := sp.Ops()
					return slices.Contains(ops, "delete-peer 10.0.1.2") && slices.Contains(ops, "add-peer 10.0.1.2")
				})
				waitFor(t, "the block is withdrawn", func() bool { return !f.sink.has(block) })
				return
			}
			time.Sleep(200 * time.Millisecond)
			if !f.sink.has(block) {
				t.Fatal("graceful restart after a closed connection dropped the route")
			}
			if ops := sp.Ops(); len(ops) != 0 {
				t.Fatalf("speaker calls %v after a closed connection; want none", ops)
			}
		})
	}
}

func (s *sink) has(p netip.Prefix) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.routes[p]
	return ok
}
