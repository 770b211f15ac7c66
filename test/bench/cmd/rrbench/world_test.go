package main

import (
	"net/netip"
	"testing"

	"github.com/rhizome-net/rhizome/test/bench/bgpwire"
)

// update is an UPDATE body announcing and withdrawing prefixes.
func update(announce, withdraw []netip.Prefix) []byte {
	var wd []byte
	for _, p := range withdraw {
		wd = bgpwire.AppendPrefix(wd, p)
	}
	body := []byte{byte(len(wd) >> 8), byte(len(wd))}
	body = append(body, wd...)
	if len(announce) == 0 {
		return append(body, 0, 0)
	}
	m := bgpwire.IBGPUpdate(netip.MustParseAddr("172.20.0.1"), announce)
	// Replace the empty withdrawn field of the announcement with ours.
	return append(body, m[bgpwire.HeaderLen+2:]...)
}

func TestPlanBorrowsFromTheNextBlock(t *testing.T) {
	if got := block(3); got != netip.MustParsePrefix("10.0.0.192/26") {
		t.Fatalf("block(3) = %s", got)
	}
	if got := clientAddr(255); got != netip.MustParseAddr("172.20.1.0") {
		t.Fatalf("clientAddr(255) = %s", got)
	}
	a, ok := borrowed(20, 25)
	if !ok || a != netip.MustParseAddr("10.0.5.127") || !block(21).Contains(a) {
		t.Fatalf("borrowed(20) = %s %v", a, ok)
	}
	if a, ok := borrowed(20, 21); !ok || !block(0).Contains(a) {
		t.Fatalf("the last client borrows from block 0: %s %v", a, ok)
	}
	if _, ok := borrowed(3, 25); ok {
		t.Fatal("client 3 borrows")
	}
	if got := len(newWorld(100).prefixes); got != 105 {
		t.Fatalf("100 clients announce %d prefixes, want 105", got)
	}
}

// TestWorldGoal plays a reflector's messages to three clients: the goal
// holds only when every up client holds exactly the others' live prefixes.
func TestWorldGoal(t *testing.T) {
	w := newWorld(3)
	p := func(i int) []netip.Prefix { return announced(i, 3) }
	for c := range 3 {
		w.setUp(c, true)
	}
	if !w.done() {
		t.Fatal("nothing announced: every client holds what is due (nothing)")
	}
	w.announce([]int{0, 1, 2})
	if w.done() {
		t.Fatal("done before anything was received")
	}
	must := func(c int, b []byte) {
		t.Helper()
		if err := w.receive(c, b); err != nil {
			t.Fatal(err)
		}
	}
	must(0, update(append(p(1), p(2)...), nil))
	must(1, update(p(0), nil))
	must(1, update(p(2), nil))
	if w.done() {
		t.Fatal("done while client 2 holds nothing")
	}
	must(2, update(append(p(0), p(1)...), nil))
	if !w.done() {
		t.Fatalf("not done: unsatisfied %v", w.unsatisfied(3))
	}
	// A reflector sending a client its own prefix back, twice the same
	// prefix, or a prefix outside the plan: none of them counts.
	must(2, update(p(2), nil))
	must(2, update(p(0), nil))
	if !w.done() {
		t.Fatal("a repeat or own prefix broke the goal")
	}
	must(2, update([]netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, nil))
	if w.stray.Load() != 1 {
		t.Fatalf("stray %d", w.stray.Load())
	}
	// Client 1 flaps: the goal needs its prefixes withdrawn everywhere.
	w.setUp(1, false)
	if w.done() {
		t.Fatal("done while clients 0 and 2 still hold client 1's prefix")
	}
	must(0, update(nil, p(1)))
	must(2, update(nil, p(1)))
	if !w.done() {
		t.Fatalf("not done after the withdrawals: %v", w.unsatisfied(3))
	}
	// Back up with an empty table, announcing again.
	w.setUp(1, true)
	w.announce([]int{1})
	if w.done() {
		t.Fatal("done while client 1 holds nothing")
	}
	must(1, update(append(p(0), p(2)...), nil))
	must(0, update(p(1), nil))
	must(2, update(p(1), nil))
	if !w.done() {
		t.Fatalf("not done at the end: %v", w.unsatisfied(3))
	}
	// A late withdrawal of a live prefix breaks it again.
	must(0, update(nil, p(2)))
	if w.done() {
		t.Fatal("done though client 0 lost client 2's prefix")
	}
}

func TestWorldRefusesMalformed(t *testing.T) {
	w := newWorld(2)
	w.setUp(0, true)
	if err := w.receive(0, []byte{0, 5, 1}); err == nil {
		t.Fatal("no error for a truncated UPDATE")
	}
	if err := w.receive(0, update(nil, nil)[:2]); err == nil {
		t.Fatal("no error for an UPDATE without its attribute length")
	}
}
