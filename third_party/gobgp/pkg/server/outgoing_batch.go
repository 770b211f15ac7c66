// rhizome: paths for a peer are gathered while the server loop has more
// input ready, and handed to the peer's writer as one message.
//
// Upstream hands every (path, peer) pair the loop decides to advertise to
// the peer's writer goroutine at once, through the peer's infinite
// channel: a route reflector of N clients does that N^2 times in a
// convergence, each a goroutine hand-off, an UPDATE built alone and a
// write syscall of its own (docs/design/0018-reflectors-at-scale.md). Here
// propagateUpdateToNeighbors appends to the peer's pending list instead,
// and the loop flushes every pending list when its input is idle (nothing
// ready on any channel), when pending paths reach outgoingFlushPaths, or,
// for one peer, before anything else is sent to it (sendfsmOutgoingMsg),
// so a peer's messages keep their order. The writer then packs the paths
// into as few UPDATEs as their attributes allow and writes them together
// (fsm.go). What is pending for a session that goes away is dropped with
// its channel, as upstream drops what is queued there.

package server

import (
	"github.com/osrg/gobgp/v3/internal/pkg/table"
)

// outgoingFlushPaths bounds the paths pending over all peers: the loop
// flushes once that many are waiting even if more input is ready, so a
// long burst neither holds the first paths back for long nor piles up
// without bound.
const outgoingFlushPaths = 1 << 17

// outgoingBatch is the server loop's pending paths, per peer. Only the
// server loop's goroutine touches it.
type outgoingBatch struct {
	fsms  []*fsm // peers with pending paths, in the order they got their first
	paths int    // pending over all peers
	// dests are the destinations propagated since the last flush. A
	// writer packs a message's withdrawals before its announcements,
	// which upstream's messages (one state per destination) allow; a
	// batch must not hold two states of one destination either, so a
	// destination's second change in a window flushes the first.
	// Only changes that queued something are recorded (queueOutgoing):
	// a speaker that sends nothing, such as a node receiving a full table
	// from one peer, makes no key and no map entry per path.
	dests map[table.PathDestLocalKey]struct{}
	// cur is the path being propagated and curQueued whether its
	// destination is in dests already.
	cur       *table.Path
	curQueued bool
	// alone is set while the pending paths came from a change of more
	// than one destination: the next change flushes them first.
	alone bool
}

// startPropagation is called for every path the loop propagates: if its
// destination already changed since the last flush, that change goes out
// first.
func (s *BgpServer) startPropagation(newPath *table.Path, dsts int) {
	if dsts > 1 || s.outBatch.alone {
		// Not one destination (upstream gives one per path): keep
		// such a change apart from everything else.
		s.flushOutgoing()
		if dsts > 1 {
			s.outBatch.alone, s.outBatch.cur = true, nil
			return
		}
	}
	s.outBatch.cur, s.outBatch.curQueued = newPath, false
	if len(s.outBatch.dests) == 0 {
		return
	}
	if _, ok := s.outBatch.dests[newPath.GetDestLocalKey()]; ok {
		s.flushOutgoing()
	}
}

// queueOutgoing appends paths to what is pending for peer.
func (s *BgpServer) queueOutgoing(peer *peer, paths []*table.Path) {
	if b := &s.outBatch; !b.curQueued && b.cur != nil && !b.alone {
		if b.dests == nil {
			b.dests = map[table.PathDestLocalKey]struct{}{}
		}
		b.dests[b.cur.GetDestLocalKey()] = struct{}{}
		b.curQueued = true
	}
	f := peer.fsm
	if len(f.pendingOut) == 0 {
		s.outBatch.fsms = append(s.outBatch.fsms, f)
	}
	f.pendingOut = append(f.pendingOut, paths...)
	s.outBatch.paths += len(paths)
}

// flushOutgoing hands every peer's pending paths to its writer.
func (s *BgpServer) flushOutgoing() {
	for i, f := range s.outBatch.fsms {
		flushPending(f)
		s.outBatch.fsms[i] = nil
	}
	s.outBatch.fsms = s.outBatch.fsms[:0]
	s.outBatch.paths = 0
	clear(s.outBatch.dests)
	s.outBatch.curQueued = false
	s.outBatch.alone = false
}

// flushPending hands f's pending paths to its writer as one message.
func flushPending(f *fsm) {
	if len(f.pendingOut) == 0 {
		return
	}
	paths := f.pendingOut
	f.pendingOut = nil
	f.outgoingCh.In() <- &fsmOutgoingMsg{Paths: paths}
}

// dropPending forgets f's pending paths; its outgoing channel is being
// cleaned, and what was queued there is dropped with them.
func dropPending(f *fsm) {
	f.pendingOut = nil
}
