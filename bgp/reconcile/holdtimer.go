package reconcile

import (
	"context"
	"net/netip"
	"strings"
	"time"

	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/bgp/rib"
)

// A session that ends because its hold timer expired is treated as a peer
// that is gone, not one that is restarting.
//
// GoBGP follows RFC 8538 and keeps a peer's routes as stale (graceful
// restart) when the hold timer expires. For a Rhizome node that is the
// wrong guess: an agent that restarts closes its TCP connections (the
// kernel does, even after kill -9), so a restart is seen at once as a
// closed connection and graceful restart covers it; a hold timer runs out
// when the node or its link is gone, and its routes then only blackhole
// traffic for the restart time. So on hold-timer expiry the session is
// re-created (delete + add): GoBGP drops the peer's paths everywhere (also
// from what a route reflector sends on), the RIB drops them from the kernel,
// and the session reconnects when the peer comes back.
type holdTimerGuard struct {
	rib *rib.RIB
	r   *Reconciler
}

var _ bgp.Handler = holdTimerGuard{}

func (g holdTimerGuard) HandleUpdate(u *bgp.Update) { g.rib.HandleUpdate(u) }

func (g holdTimerGuard) HandleEndOfRIB(peer netip.Addr, f bgp.Family) {
	g.rib.HandleEndOfRIB(peer, f)
}

func (g holdTimerGuard) HandlePeerState(e bgp.PeerEvent) {
	g.rib.HandlePeerState(e)
	g.r.sessionChanged(e)
	if e.Previous == bgp.StateEstablished && e.State != bgp.StateEstablished && holdTimerExpired(e.Reason) {
		go g.r.hardReset(e.Peer, e.Reason, "peer's hold timer expired: its routes are dropped, not kept for graceful restart")
	}
}

func holdTimerExpired(reason string) bool {
	return strings.Contains(reason, "hold timer expired")
}

// hardReset re-creates a session with the configuration last applied to it,
// dropping what the speaker kept of the peer, and has the RIB read back the
// (now empty) paths. why is logged.
func (r *Reconciler) hardReset(peer netip.Addr, reason, why string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r.mu.Lock()
	applied, ok := r.sessions[peer]
	sp := r.sp
	if ok && sp != nil {
		if err := sp.DeletePeer(ctx, peer); err != nil {
			r.log.Warn("dropping a peer's routes", "op", "hard-reset", "peer", peer, "error", err)
		} else if err := sp.AddPeer(ctx, applied); err != nil {
			// The next Reconcile adds it back.
			delete(r.sessions, peer)
			r.errs[peer] = err.Error()
			r.log.Warn("re-adding a reset peer", "op", "hard-reset", "peer", peer, "error", err)
		}
	}
	r.mu.Unlock()
	if !ok || sp == nil {
		return
	}
	r.log.Info(why, "op", "hard-reset", "peer", peer, "reason", reason)
	// A state event that changes nothing but makes the RIB re-read what the
	// speaker holds for the peer: nothing any more.
	r.rib.HandlePeerState(bgp.PeerEvent{Peer: peer, State: bgp.StateIdle, Previous: bgp.StateIdle, Reason: reason, Time: time.Now()})
}
