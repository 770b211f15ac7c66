package bfd

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// TB is the part of testing.TB the fake uses (so that this file does not
// pull package testing into the agent binary).
type TB interface {
	Helper()
	Errorf(format string, args ...any)
}

// Fake is a stateful in-memory Sessions for other packages' tests. It keeps
// the sessions it was told about, records every call, and fails the test on
// misuse: an invalid peer, a Set that changes nothing (a reconciler should
// diff), a call after Close, a state driven for an unknown peer. Tests drive
// sessions with SetState, which delivers the event to every watcher before
// it returns.
type Fake struct {
	t TB

	mu       sync.Mutex
	peers    map[netip.Addr]Peer
	status   map[netip.Addr]Status
	ops      []string
	watchers []*fakeWatcher
	closed   bool
	// deliver serialises watcher calls, like a real watcher's goroutine.
	deliver sync.Mutex
}

type fakeWatcher struct {
	ctx context.Context
	f   func(Event)
}

var _ Sessions = (*Fake)(nil)

// NewFake returns a fake reporting misuse to t.
func NewFake(t TB) *Fake {
	return &Fake{t: t, peers: make(map[netip.Addr]Peer), status: make(map[netip.Addr]Status)}
}

func (f *Fake) misuse(format string, args ...any) error {
	f.t.Helper()
	err := fmt.Errorf(format, args...)
	f.t.Errorf("bfd.Fake misuse: %v", err)
	return err
}

// Set implements Sessions.
func (f *Fake) Set(p Peer) error {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = append(f.ops, "set "+p.Remote.String())
	if f.closed {
		return f.misuse("Set(%s) after Close", p.Remote)
	}
	if err := p.Validate(); err != nil {
		return f.misuse("Set: %v", err)
	}
	key := p.Remote.WithZone("")
	old, ok := f.peers[key]
	if ok && old == p {
		return f.misuse("Set(%s) changes nothing", p.Remote)
	}
	f.peers[key] = p
	st := f.status[key]
	if !ok || old.Local != p.Local {
		st = Status{State: Down, Since: time.Now()}
	}
	st.Peer = p
	f.status[key] = st
	return nil
}

// Remove implements Sessions.
func (f *Fake) Remove(peer netip.Addr) error {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = append(f.ops, "remove "+peer.String())
	if f.closed {
		return f.misuse("Remove(%s) after Close", peer)
	}
	delete(f.peers, peer.WithZone(""))
	delete(f.status, peer.WithZone(""))
	return nil
}

// Watch implements Sessions.
func (f *Fake) Watch(ctx context.Context, fn func(Event)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watchers = append(f.watchers, &fakeWatcher{ctx: ctx, f: fn})
}

// Sessions implements Sessions.
func (f *Fake) Sessions() []Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Status, 0, len(f.status))
	for _, s := range f.status {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Status) int { return a.Peer.Remote.Compare(b.Peer.Remote) })
	return out
}

// Close ends the fake; later calls are misuse.
func (f *Fake) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

// Peer returns the configuration of a session, if it exists.
func (f *Fake) Peer(addr netip.Addr) (Peer, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.peers[addr.WithZone("")]
	return p, ok
}

// Ops returns and clears the calls recorded since the last Ops: "set ADDR",
// "remove ADDR".
func (f *Fake) Ops() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ops := f.ops
	f.ops = nil
	return ops
}

// StateChange describes a transition for SetState.
type StateChange struct {
	To   State
	Diag Diag
	// RemoteAdminDown and RemoteCPI are copied into the event.
	RemoteAdminDown, RemoteCPI bool
}

// SetState moves a session to c.To and delivers the event to every watcher
// whose context is live, in the caller's goroutine, before returning.
func (f *Fake) SetState(peer netip.Addr, c StateChange) {
	f.t.Helper()
	f.mu.Lock()
	key := peer.WithZone("")
	st, ok := f.status[key]
	if !ok {
		f.mu.Unlock()
		_ = f.misuse("SetState(%s): no such session", peer)
		return
	}
	e := Event{
		Peer: st.Peer.Remote, From: st.State, To: c.To, Diag: c.Diag,
		RemoteAdminDown: c.RemoteAdminDown, RemoteControlPlaneIndependent: c.RemoteCPI, Time: time.Now(),
	}
	st.State, st.Diag, st.Since = c.To, c.Diag, e.Time
	st.RemoteControlPlaneIndependent = c.RemoteCPI
	if e.Failed() {
		st.Downs++
	}
	f.status[key] = st
	ws := slices.Clone(f.watchers)
	f.mu.Unlock()
	f.deliver.Lock()
	defer f.deliver.Unlock()
	for _, w := range ws {
		if w.ctx.Err() == nil {
			w.f(e)
		}
	}
}
