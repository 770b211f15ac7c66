package rib

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/bgp/policy"
)

// resyncTimeout bounds one read-back of a peer's paths from the speaker.
const resyncTimeout = 30 * time.Second

// HandleUpdate implements bgp.Handler.
func (r *RIB) HandleUpdate(u *bgp.Update) {
	r.mu.Lock()
	pt := r.peer(u.Peer)
	eval := r.evaluator(pt)
	for i := range u.Announced {
		r.announceLocked(pt, &u.Announced[i], eval)
	}
	for _, p := range u.Withdrawn {
		if d := r.dests[keyOf(p)]; d != nil {
			if i := d.find(pt); i >= 0 {
				r.removePath(d, i)
			}
		}
	}
	r.flushLocked()
}

// evaluator returns the policy judgement for one peer's paths.
func (r *RIB) evaluator(pt *peerTable) evalFunc {
	im := r.settings.Policy
	if im == nil {
		return func(netip.Prefix, netip.Addr, *bgp.Attrs) policy.Reason { return policy.RejectedUnknownPeer }
	}
	pp, known := im.Peer(pt.addr)
	return func(p netip.Prefix, nh netip.Addr, a *bgp.Attrs) policy.Reason {
		var originator netip.Addr
		if a != nil {
			originator = a.OriginatorID
		}
		return im.EvaluatePath(pp, known, p, nh, originator).Reason
	}
}

// evalFunc judges one path of a peer: import policy, next hops included
// (never through this node itself; from our nodes, only through the node
// that originated the path).
type evalFunc func(p netip.Prefix, nh netip.Addr, a *bgp.Attrs) policy.Reason

func (r *RIB) announceLocked(pt *peerTable, rp *bgp.ReceivedPath, eval evalFunc) {
	k := keyOf(rp.Prefix)
	d := r.dests[k]
	if d == nil {
		d = &dest{prefix: rp.Prefix}
		d.paths = d.inline[:0]
		r.dests[k] = d
	}
	i := d.find(pt)
	if i < 0 {
		d.paths = append(d.paths, path{peer: pt})
		i = len(d.paths) - 1
	} else {
		pt.count(&d.paths[i], -1)
		if d.paths[i].accepted() {
			r.markDirty(d)
		}
	}
	p := &d.paths[i]
	p.nh, p.attrs, p.stale, p.gen = rp.NextHop, rp.Attrs, rp.Stale, pt.gen
	p.reason = eval(rp.Prefix, rp.NextHop, rp.Attrs)
	pt.count(p, 1)
	if p.accepted() {
		r.markDirty(d)
	}
}

// forPeer calls fn for every path of a peer; fn may remove the path.
func (r *RIB) forPeer(pt *peerTable, fn func(d *dest, i int)) {
	for _, d := range r.dests {
		if i := d.find(pt); i >= 0 {
			fn(d, i)
		}
	}
}

// HandleEndOfRIB implements bgp.Handler: the peer's table is complete, so
// paths still stale from before its restart are gone.
func (r *RIB) HandleEndOfRIB(peer netip.Addr, f bgp.Family) {
	r.mu.Lock()
	pt := r.peer(peer)
	pt.eor = true
	pt.held = false
	if pt.stale > 0 {
		r.forPeer(pt, func(d *dest, i int) {
			if d.paths[i].stale && bgp.FamilyOf(d.prefix.Addr()) == f {
				r.removePath(d, i)
			}
		})
	}
	r.checkConvergedLocked()
	r.flushLocked()
}

// HandlePeerState implements bgp.Handler.
func (r *RIB) HandlePeerState(e bgp.PeerEvent) {
	r.mu.Lock()
	pt := r.peer(e.Peer)
	pt.state = e.State
	if e.State == bgp.StateEstablished {
		pt.eor = false
	}
	if (e.Previous == bgp.StateEstablished && e.State != bgp.StateEstablished) || (e.State != bgp.StateEstablished && pt.stale > 0) {
		// The speaker has dropped the peer's paths, or kept them as stale
		// for a graceful restart, or its restart timer just ran out: read
		// back what it still holds.
		pt.eor = false
		ctx, cancel := context.WithTimeout(context.Background(), resyncTimeout)
		r.resyncLocked(ctx, e.Peer)
		cancel()
	}
	r.checkConvergedLocked()
	r.flushLocked()
}

// resyncLocked replaces a peer's paths with what the speaker holds. It is
// called with r.mu held, so no update can slip in between the read and the
// replace; updates still queued behind it were produced before the read and
// replay on top, ending in the speaker's current state.
func (r *RIB) resyncLocked(ctx context.Context, peer netip.Addr) {
	pt := r.peers[peer]
	if pt == nil || pt.held {
		return // held across a speaker replacement: the new one knows nothing yet
	}
	if pt.received == 0 {
		// Nothing held: nothing to drop. Paths the speaker still has for
		// the peer would all have reached us as updates.
		return
	}
	paths, err := r.cfg.Speaker.Received(ctx, peer)
	if err != nil {
		// The peer is gone from the speaker (deleted) or the speaker is
		// stopping: either way nothing from it can be trusted any more.
		r.log.Info("dropping paths of peer", "op", "resync", "peer", peer, "error", err)
		paths = nil
	}
	pt.gen++
	eval := r.evaluator(pt)
	for i := range paths {
		r.announceLocked(pt, &paths[i], eval)
	}
	r.forPeer(pt, func(d *dest, i int) {
		if d.paths[i].gen != pt.gen {
			r.removePath(d, i)
		}
	})
}

func (r *RIB) checkConvergedLocked() {
	if r.converged || !r.haveSet {
		return
	}
	for a := range r.settings.Peers {
		if pt := r.peers[a]; pt == nil || !pt.eor {
			return
		}
	}
	r.converged, r.convergePending = true, true
	r.log.Info("bgp converged: every peer sent its table", "op", "converge", "peers", len(r.settings.Peers))
}

func (r *RIB) pendingEORLocked() []netip.Addr {
	var out []netip.Addr
	for a := range r.settings.Peers {
		if pt := r.peers[a]; pt == nil || !pt.eor {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// flushLocked turns the dirty prefixes into a batch, releases r.mu and
// hands the batch (and a due Converged) to the sink in order.
func (r *RIB) flushLocked() {
	var b Batch
	for i, d := range r.dirty {
		d.dirty = false
		r.sel = selectPaths(d.paths, r.sel)
		if r.originated[keyOf(d.prefix)] {
			r.sel = r.sel[:0] // our own route wins
		}
		if len(r.sel) == 0 {
			if d.out != nil {
				b.Withdraw = append(b.Withdraw, d.prefix)
				d.out = nil
			}
			if len(d.paths) == 0 {
				delete(r.dests, keyOf(d.prefix))
			}
			continue
		}
		if slices.Equal(r.sel, d.out) {
			continue
		}
		d.out = r.internNH(r.sel)
		if b.Set == nil {
			b.Set = make([]Route, 0, len(r.dirty)-i) // one allocation per flush
		}
		b.Set = append(b.Set, Route{Prefix: d.prefix, NextHops: d.out})
	}
	clear(r.dirty)
	r.dirty = r.dirty[:0]
	converged := r.convergePending
	r.convergePending = false
	if n := len(b.Set) + len(b.Withdraw); n > 0 {
		r.totals.Batches++
		r.totals.RoutesSet += uint64(len(b.Set))
		r.totals.RoutesWithdrawn += uint64(len(b.Withdraw))
	}
	r.sinkMu.Lock()
	r.mu.Unlock()
	defer r.sinkMu.Unlock()
	if len(b.Set)+len(b.Withdraw) > 0 {
		r.cfg.Sink.ApplyRoutes(b)
	}
	if converged {
		r.cfg.Sink.Converged()
	}
}

func (r *RIB) internNH(sel []netip.Addr) []netip.Addr {
	if len(sel) == 1 {
		if s, ok := r.oneNH[sel[0]]; ok {
			return s
		}
		s := []netip.Addr{sel[0]}
		r.oneNH[sel[0]] = s
		return s
	}
	return slices.Clone(sel)
}

// Counters returns each known peer's counters.
func (r *RIB) Counters() map[netip.Addr]PeerCounters {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[netip.Addr]PeerCounters, len(r.peers))
	for a, pt := range r.peers {
		out[a] = PeerCounters{State: pt.state, Received: pt.received, Accepted: pt.accepted, Stale: pt.stale, LongLivedStale: pt.llgrStale, Rejected: pt.rejected, EndOfRIB: pt.eor}
	}
	return out
}

// Size is how many prefixes the RIB holds (received from any peer, or
// still being withdrawn).
func (r *RIB) Size() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.dests)
}

// Totals returns the cumulative counters.
func (r *RIB) Totals() Totals {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.totals
}

// Converged reports whether Converged has been signalled.
func (r *RIB) Converged() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.converged
}

// Routes returns the routes as last sent to the sink, sorted by prefix.
func (r *RIB) Routes() []Route {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Route, 0, len(r.dests))
	for _, d := range r.dests {
		if d.out != nil {
			out = append(out, Route{Prefix: d.prefix, NextHops: d.out})
		}
	}
	slices.SortFunc(out, func(a, b Route) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return a.Prefix.Bits() - b.Prefix.Bits()
	})
	return out
}
