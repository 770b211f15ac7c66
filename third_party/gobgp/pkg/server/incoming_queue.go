// rhizome: one queue carries every peer's FSM messages to the server loop.
//
// Upstream gives each peer's FSM an InfiniteChannel of its own (a
// goroutine per peer) and the loop reflect.Selects over all of them: for
// every message it receives, selectgo locks every peer's channel and the
// case list is copied, O(peers) work and garbage per message (47 % of
// what a 1,000-client route reflector allocated over a run,
// docs/design/0018-reflectors-at-scale.md). Here every FSM pushes to one
// FIFO and the loop selects over a fixed handful of channels. One FIFO
// keeps each FSM's messages in the order it sent them, as its own channel
// did.
//
// Upstream dropped the messages of a peer that went away by closing and
// draining its channel and taking it out of the select
// (cleanInfiniteChannel, delIncoming). Such messages now wait in the
// shared queue among everybody else's, so the loop drops them when it
// pops them: an FSM it has detached (fsm.attached false: deleted, its
// handler cancelled and freed, or a dynamic neighbor gone) is no longer
// heard, and a message whose FSM is not the one the neighbor table holds
// for its address (an old FSM of a re-added or re-accepted neighbor) is
// not applied to the new one (Serve, handlefsmMsg).

package server

import "sync"

// fsmIncoming is the queue. Any goroutine may push; only the server loop
// pops, after taking the token from ready.
type fsmIncoming struct {
	mu   sync.Mutex
	buf  []*fsmMsg
	head int // buf[head:] is what waits
	// ready holds a token while messages wait: the loop selects on it
	// next to its other channels, so a select with a default case still
	// means "no input of any kind is ready" (outgoing_batch.go).
	ready chan struct{}
}

func newFSMIncoming() *fsmIncoming {
	return &fsmIncoming{ready: make(chan struct{}, 1)}
}

// fsmIncomingKeep is the capacity an emptied queue keeps for reuse;
// above it the array goes with the burst that grew it.
const fsmIncomingKeep = 4096

// push queues m. It never blocks on the loop (the loop may be waiting for
// the pushing FSM's handler to finish: handlefsmMsg's cleanup).
func (q *fsmIncoming) push(m *fsmMsg) {
	q.mu.Lock()
	q.buf = append(q.buf, m)
	if len(q.buf)-q.head == 1 {
		q.signal()
	}
	q.mu.Unlock()
}

// pop takes the oldest message, or nil if none waits; the loop calls it
// once per token it took from ready, and pop hands the token on while
// more messages wait.
func (q *fsmIncoming) pop() *fsmMsg {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.buf) {
		return nil
	}
	m := q.buf[q.head]
	q.buf[q.head] = nil
	q.head++
	switch {
	case q.head == len(q.buf):
		q.head = 0
		if cap(q.buf) > fsmIncomingKeep {
			q.buf = nil
		} else {
			q.buf = q.buf[:0]
		}
	default:
		// Move what waits to the front once the taken part is most
		// of the array: amortised O(1) per message, and the array
		// never grows past twice what waits.
		if q.head >= 1024 && 2*q.head >= len(q.buf) {
			n := copy(q.buf, q.buf[q.head:])
			clear(q.buf[n:])
			q.buf, q.head = q.buf[:n], 0
		}
		q.signal()
	}
	return m
}

func (q *fsmIncoming) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}
