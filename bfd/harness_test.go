package bfd

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// fakeClock runs timers when the test advances it, in the test's
// goroutine, in deadline order.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c      *fakeClock
	at     time.Time
	f      func()
	active bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: t0} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f, active: true}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.at, t.active = t.c.now.Add(d), true
	return was
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.active = false
	return was
}

// Advance moves time forward by d, firing every timer due on the way.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		var next *fakeTimer
		for _, t := range c.timers {
			if t.active && !t.at.After(end) && (next == nil || t.at.Before(next.at)) {
				next = t
			}
		}
		if next == nil {
			c.now = end
			c.mu.Unlock()
			return
		}
		if next.at.After(c.now) {
			c.now = next.at
		}
		next.active = false
		c.mu.Unlock()
		next.f()
	}
}

// memNet is an in-memory link between transports: packets are delivered
// synchronously (the Manager sends outside its locks), TTL 255 unless the
// test says otherwise, and nothing gets through while the link is cut.
type memNet struct {
	mu    sync.Mutex
	ends  map[netip.Addr]*memTransport
	cut   bool
	ttl   int
	count int // packets delivered
}

func newMemNet() *memNet { return &memNet{ends: map[netip.Addr]*memTransport{}, ttl: TTL} }

func (n *memNet) transport(addr string) *memTransport {
	t := &memTransport{n: n, addr: netip.MustParseAddr(addr)}
	n.mu.Lock()
	n.ends[t.addr] = t
	n.mu.Unlock()
	return t
}

func (n *memNet) setCut(cut bool) {
	n.mu.Lock()
	n.cut = cut
	n.mu.Unlock()
}

func (n *memNet) deliver(src, dst netip.Addr, b []byte) error {
	n.mu.Lock()
	to, cut, ttl := n.ends[dst], n.cut, n.ttl
	if to != nil && !cut {
		n.count++
	}
	n.mu.Unlock()
	if cut {
		return errors.New("network is unreachable")
	}
	if to == nil || to.h == nil {
		return nil // nobody listens: lost, as UDP would be
	}
	to.h(append([]byte(nil), b...), src, dst, ttl)
	return nil
}

type memTransport struct {
	n      *memNet
	addr   netip.Addr
	h      func(b []byte, src, dst netip.Addr, ttl int)
	opened int
}

func (t *memTransport) Open(local, remote netip.Addr) (Sender, error) {
	if local.IsValid() && local != t.addr {
		return nil, errors.New("no such local address")
	}
	t.opened++
	return &memSender{t: t, to: remote}, nil
}

func (t *memTransport) Serve(h func(b []byte, src, dst netip.Addr, ttl int)) error {
	t.h = h
	return nil
}

func (t *memTransport) Close() error { return nil }

type memSender struct {
	t      *memTransport
	to     netip.Addr
	closed bool
}

func (s *memSender) Send(b []byte) error {
	if s.closed {
		return errors.New("closed")
	}
	return s.t.n.deliver(s.t.addr, s.to, b)
}

func (s *memSender) Close() error { s.closed = true; return nil }

// pair is two Managers on one link, A 10.0.0.1 and B 10.0.0.2, with a
// fixed jitter (u = 0.5) and discriminators 1000+ and 2000+.
type pair struct {
	clock  *fakeClock
	net    *memNet
	a, b   *Manager
	ta, tb *memTransport
	ea, eb *events
}

var addrA, addrB = netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")

func newPair(t *testing.T) *pair {
	t.Helper()
	p := &pair{clock: newFakeClock(), net: newMemNet()}
	p.ta, p.tb = p.net.transport("10.0.0.1"), p.net.transport("10.0.0.2")
	mk := func(tr *memTransport, base uint32) *Manager {
		next := base
		m, err := NewManager(Config{
			Transport: tr, Clock: p.clock, Rand: func() float64 { return 0.5 },
			Discriminator: func() uint32 { next++; return next },
			Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Close() })
		return m
	}
	p.a, p.b = mk(p.ta, 1000), mk(p.tb, 2000)
	p.ea, p.eb = watch(t, p.a), watch(t, p.b)
	return p
}

// events collects a Manager's events.
type events struct {
	mu  sync.Mutex
	got []Event
	ch  chan struct{}
}

func watch(t *testing.T, m Sessions) *events {
	e := &events{ch: make(chan struct{}, 1000)}
	ctx := t.Context()
	m.Watch(ctx, func(ev Event) {
		e.mu.Lock()
		e.got = append(e.got, ev)
		e.mu.Unlock()
		e.ch <- struct{}{}
	})
	return e
}

// waitFor waits for the watcher goroutine to have delivered n events in
// total and returns them. Delivery is asynchronous by contract; the wait
// is for that goroutine, not for protocol time (the fake clock has
// already run).
func (e *events) waitFor(t *testing.T, n int) []Event {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		e.mu.Lock()
		if len(e.got) >= n {
			got := append([]Event(nil), e.got...)
			e.mu.Unlock()
			return got
		}
		e.mu.Unlock()
		select {
		case <-e.ch:
		case <-deadline:
			e.mu.Lock()
			defer e.mu.Unlock()
			t.Fatalf("waited for %d events, have %d: %+v", n, len(e.got), e.got)
		}
	}
}

func (p *pair) state(t *testing.T, m *Manager, peer netip.Addr) Status {
	t.Helper()
	for _, s := range m.Sessions() {
		if s.Peer.Remote == peer {
			return s
		}
	}
	t.Fatalf("no session to %s", peer)
	return Status{}
}

// up configures both ends with the timers and runs the clock until both
// are Up.
func (p *pair) up(t *testing.T, tm Timers) {
	t.Helper()
	if err := p.a.Set(Peer{Remote: addrB, Local: addrA, Timers: tm}); err != nil {
		t.Fatal(err)
	}
	if err := p.b.Set(Peer{Remote: addrA, Local: addrB, Timers: tm}); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		p.clock.Advance(100 * time.Millisecond)
		if p.state(t, p.a, addrB).State == Up && p.state(t, p.b, addrA).State == Up {
			return
		}
	}
	t.Fatalf("not Up: A %+v, B %+v", p.state(t, p.a, addrB), p.state(t, p.b, addrA))
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
