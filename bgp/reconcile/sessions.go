package reconcile

import (
	"net/netip"
	"sync"
	"time"

	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// Session state changes, as the speaker reports them, become flap counters
// (metrics.go) and are handed to Config.OnSessionChange (the agent turns
// them into Events). The speaker's handler runs on GoBGP's watch goroutine
// while a Reconcile may hold r.mu waiting on the speaker, so nothing here
// takes r.mu: a session's kind comes from a map Reconcile publishes
// atomically.

// SessionChange is one BGP session's state change.
type SessionChange struct {
	Peer     netip.Addr
	Kind     v1alpha1.SessionKind
	From, To string
	// Reason is why the session left Established, when known.
	Reason string
	// PrefixLimit: the session was closed because the peer sent more
	// prefixes than its limit (Reason says how many and when it is tried
	// again).
	PrefixLimit bool
	Time        time.Time
}

// sessionKinds maps peers to the kind of their desired session.
type sessionKinds = map[netip.Addr]v1alpha1.SessionKind

// flapCounters count sessions leaving Established: by kind for all
// sessions, by peer for external ones (bounded by what operators
// configure). The per-peer counts of a removed peer are dropped.
type flapCounters struct {
	mu     sync.Mutex
	byKind map[v1alpha1.SessionKind]uint64
	// limits counts sessions closed for their prefix limit, by kind.
	limits map[v1alpha1.SessionKind]uint64
	byPeer map[netip.Addr]uint64
}

// publishKinds records the kinds of the sessions Reconcile wants and drops
// the flap counts of external peers that are gone.
func (r *Reconciler) publishKinds(sessions []sessionKind) {
	m := make(sessionKinds, len(sessions))
	for _, s := range sessions {
		m[s.peer] = s.kind
	}
	r.kinds.Store(&m)
	r.flaps.mu.Lock()
	for p := range r.flaps.byPeer {
		if m[p] != v1alpha1.SessionExternal {
			delete(r.flaps.byPeer, p)
		}
	}
	r.flaps.mu.Unlock()
}

type sessionKind struct {
	peer netip.Addr
	kind v1alpha1.SessionKind
}

func (r *Reconciler) kindOf(peer netip.Addr) (v1alpha1.SessionKind, bool) {
	m := r.kinds.Load()
	if m == nil {
		return "", false
	}
	k, ok := (*m)[peer]
	return k, ok
}

// sessionChanged counts a flap and tells the agent. It must not block.
func (r *Reconciler) sessionChanged(e bgp.PeerEvent) {
	if e.State == e.Previous {
		return // a read-back nudge (hardReset), not a change
	}
	kind, ok := r.kindOf(e.Peer)
	if !ok {
		return // a session being removed
	}
	if e.Previous == bgp.StateEstablished && e.State != bgp.StateEstablished {
		r.flaps.mu.Lock()
		r.flaps.byKind[kind]++
		if e.PrefixLimit {
			r.flaps.limits[kind]++
		}
		if kind == v1alpha1.SessionExternal {
			r.flaps.byPeer[e.Peer]++
		}
		r.flaps.mu.Unlock()
	}
	if f := r.cfg.OnSessionChange; f != nil {
		f(SessionChange{Peer: e.Peer, Kind: kind, From: e.Previous.String(), To: e.State.String(), Reason: e.Reason, PrefixLimit: e.PrefixLimit, Time: e.Time})
	}
}
