package main

import (
	"math/bits"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/rhizome-net/rhizome/test/bench/bgpwire"
)

// world tracks, for every client session, which prefixes the reflector has
// sent it, and whether that is exactly what it should hold now: every
// prefix currently announced by another client whose session is up, and
// nothing else. Each session's reader updates only its own client (under
// mu's read lock); announcing, flapping and sessions coming up or going
// down change what is due for everyone and take mu's write lock.
type world struct {
	n        int
	prefixes []netip.Prefix
	origin   []int32          // prefix index -> announcing client
	own      [][]int32        // client -> its prefix indices
	index    map[uint64]int32 // bgpwire key -> prefix index

	mu    sync.RWMutex
	live  []uint64 // bitset over prefixes: announced by a client that is up
	nLive int
	cl    []*tracked
	up    int          // clients whose session is established
	sat   atomic.Int64 // up clients holding exactly what is due

	stray   atomic.Int64 // announcements of prefixes outside the plan
	updates atomic.Int64 // UPDATE messages received
	nlri    atomic.Int64 // announced prefixes received
	wdr     atomic.Int64 // withdrawn prefixes received
}

// tracked is one client's view.
type tracked struct {
	have      []uint64 // bitset over prefixes
	haveLive  int      // held and live, not its own
	haveStale int      // held and not live (must be withdrawn)
	up        bool
	sat       bool
}

func newWorld(n int) *world {
	w := &world{n: n, own: make([][]int32, n), index: map[uint64]int32{}, cl: make([]*tracked, n)}
	for i := range n {
		for _, p := range announced(i, n) {
			idx := int32(len(w.prefixes))
			w.prefixes = append(w.prefixes, p)
			w.origin = append(w.origin, int32(i))
			w.own[i] = append(w.own[i], idx)
			w.index[bgpwire.Key(p)] = idx
		}
	}
	words := (len(w.prefixes) + 63) / 64
	w.live = make([]uint64, words)
	for i := range w.cl {
		w.cl[i] = &tracked{have: make([]uint64, words)}
	}
	return w
}

func isSet(b []uint64, i int32) bool { return b[i/64]&(1<<(i%64)) != 0 }
func set(b []uint64, i int32)        { b[i/64] |= 1 << (i % 64) }
func unset(b []uint64, i int32)      { b[i/64] &^= 1 << (i % 64) }

// due is how many live prefixes client c should hold: all but its own.
func (w *world) dueLocked(c int) int {
	d := w.nLive
	for _, p := range w.own[c] {
		if isSet(w.live, p) {
			d--
		}
	}
	return d
}

// recheck updates c's satisfied flag and the count; callers hold mu (read
// or write) and are c's only writer.
func (w *world) recheck(c int) {
	t := w.cl[c]
	ok := t.up && t.haveStale == 0 && t.haveLive == w.dueLocked(c)
	if ok != t.sat {
		t.sat = ok
		if ok {
			w.sat.Add(1)
		} else {
			w.sat.Add(-1)
		}
	}
}

// receive applies one UPDATE body sent to client c. It returns an error
// for a malformed UPDATE.
func (w *world) receive(c int, body []byte) error {
	wd, _, nlri, err := bgpwire.Update(body)
	if err != nil {
		return err
	}
	w.updates.Add(1)
	w.mu.RLock()
	defer w.mu.RUnlock()
	t := w.cl[c]
	err = bgpwire.Prefixes(wd, func(k uint64) {
		w.wdr.Add(1)
		idx, ok := w.index[k]
		if !ok || !isSet(t.have, idx) {
			return
		}
		unset(t.have, idx)
		if isSet(w.live, idx) && int(w.origin[idx]) != c {
			t.haveLive--
		} else if int(w.origin[idx]) != c {
			t.haveStale--
		}
	})
	if err != nil {
		return err
	}
	err = bgpwire.Prefixes(nlri, func(k uint64) {
		w.nlri.Add(1)
		idx, ok := w.index[k]
		if !ok {
			w.stray.Add(1)
			return
		}
		if isSet(t.have, idx) || int(w.origin[idx]) == c {
			return // a replacement, or its own prefix reflected back (ignored)
		}
		set(t.have, idx)
		if isSet(w.live, idx) {
			t.haveLive++
		} else {
			t.haveStale++
		}
	})
	w.recheck(c)
	return err
}

// recountLocked recomputes every client's counters from the bitsets after
// the live set changed. mu is held for writing.
func (w *world) recountLocked() {
	for c, t := range w.cl {
		hl, all := 0, 0
		for i, h := range t.have {
			hl += bits.OnesCount64(h & w.live[i])
			all += bits.OnesCount64(h)
		}
		t.haveLive, t.haveStale = hl, all-hl
		w.recheck(c)
	}
}

// setUp marks client c's session up (with an empty table: a new session)
// or down.
func (w *world) setUp(c int, up bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t := w.cl[c]
	if t.up == up {
		return
	}
	t.up = up
	clear(t.have)
	t.haveLive, t.haveStale = 0, 0
	if up {
		w.up++
	} else {
		w.up--
		// Its routes are gone from the reflector with the session.
		for _, p := range w.own[c] {
			if isSet(w.live, p) {
				unset(w.live, p)
				w.nLive--
			}
		}
		w.recountLocked()
	}
	w.recheck(c)
}

// announce marks the prefixes of clients cs live (they are about to send
// them).
func (w *world) announce(cs []int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range cs {
		for _, p := range w.own[c] {
			if !isSet(w.live, p) {
				set(w.live, p)
				w.nLive++
			}
		}
	}
	w.recountLocked()
}

// done reports whether every up client holds exactly what is due.
func (w *world) done() bool {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.up > 0 && int(w.sat.Load()) == w.up
}

// unsatisfied lists up to max clients that are not done (for timeouts).
func (w *world) unsatisfied(max int) []int {
	w.mu.RLock()
	defer w.mu.RUnlock()
	var out []int
	for c, t := range w.cl {
		if t.up && !t.sat && len(out) < max {
			out = append(out, c)
		}
	}
	return out
}
