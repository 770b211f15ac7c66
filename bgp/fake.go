package bgp

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// TB is the part of testing.TB the fake uses (so that this file does not
// pull package testing into the agent binary).
type TB interface {
	Helper()
	Errorf(format string, args ...any)
}

// Fake is a stateful in-memory Speaker for tests. It keeps what it was
// told (sessions, advertisements, export policy), records every call, and
// fails the test on misuse: calls before Start or after Stop, a peer added
// twice, updated or deleted while unknown, invalid peers or prefixes, a
// second Watch. Tests drive the receive side with Receive, SetState and
// EndOfRIB, which the fake delivers to the watching Handler synchronously.
type Fake struct {
	t TB

	mu       sync.Mutex
	running  bool
	stopped  bool
	global   Global
	peers    map[netip.Addr]Peer
	ads      map[netip.Prefix]Advertisement
	export   ExportPolicy
	ops      []string
	states   map[netip.Addr]PeerStatus
	received map[netip.Addr]map[netip.Prefix]ReceivedPath
	handler  Handler
	check    ImportCheck
	// deliver serialises handler calls like the real speaker does.
	deliver sync.Mutex
	// FailNext, if set, makes the next call whose op name it equals fail
	// with this error (for error-path tests), e.g. "add-peer".
	failOp  string
	failErr error
	// peersHold, while set, makes Peers wait (HoldPeers).
	peersHold    chan struct{}
	peersEntered chan struct{}
}

var _ Speaker = (*Fake)(nil)

// NewFake returns a fake speaker reporting misuse to t.
func NewFake(t TB) *Fake {
	return &Fake{
		t:        t,
		peers:    make(map[netip.Addr]Peer),
		ads:      make(map[netip.Prefix]Advertisement),
		states:   make(map[netip.Addr]PeerStatus),
		received: make(map[netip.Addr]map[netip.Prefix]ReceivedPath),
	}
}

// HoldPeers makes every Peers call wait until release is called (or its
// context ends), as GoBGP's ListPeer waits behind a server loop busy
// reflecting thousands of sessions' routes. entered receives when a call
// starts waiting.
func (f *Fake) HoldPeers() (entered <-chan struct{}, release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	hold, ent := make(chan struct{}), make(chan struct{}, 1)
	f.peersHold, f.peersEntered = hold, ent
	var once sync.Once
	return ent, func() {
		once.Do(func() {
			f.mu.Lock()
			f.peersHold, f.peersEntered = nil, nil
			f.mu.Unlock()
			close(hold)
		})
	}
}

// FailNext makes the next call of op (e.g. "add-peer", "advertise") fail.
func (f *Fake) FailNext(op string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failOp, f.failErr = op, err
}

func (f *Fake) misuse(format string, args ...any) error {
	f.t.Helper()
	err := fmt.Errorf(format, args...)
	f.t.Errorf("bgp.Fake misuse: %v", err)
	return err
}

// begin records an op and checks that the speaker runs. Called with f.mu held.
func (f *Fake) begin(op string) error {
	f.t.Helper()
	f.ops = append(f.ops, op)
	if !f.running {
		return f.misuse("%s while not running: %w", op, ErrNotRunning)
	}
	name, _, _ := cut(op)
	if f.failOp != "" && f.failOp == name {
		err := f.failErr
		f.failOp, f.failErr = "", nil
		return err
	}
	return nil
}

func cut(op string) (string, string, bool) {
	for i := range op {
		if op[i] == ' ' {
			return op[:i], op[i+1:], true
		}
	}
	return op, "", false
}

// Start implements Speaker.
func (f *Fake) Start(_ context.Context, g Global) error {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = append(f.ops, "start")
	if f.running || f.stopped {
		return f.misuse("start: already started")
	}
	if g.ASN == 0 || !g.RouterID.Is4() {
		return f.misuse("start: invalid global %+v", g)
	}
	f.running, f.global = true, g
	return nil
}

// Stop implements Speaker.
func (f *Fake) Stop(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = append(f.ops, "stop")
	f.running, f.stopped = false, f.running || f.stopped
	return nil
}

// StopGracefully implements Speaker.
func (f *Fake) StopGracefully(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = append(f.ops, "stop-gracefully")
	f.running, f.stopped = false, f.running || f.stopped
	return nil
}

// AddPeer implements Speaker.
func (f *Fake) AddPeer(_ context.Context, p Peer) error {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin("add-peer " + p.Address.String()); err != nil {
		return err
	}
	if err := p.Validate(); err != nil {
		return f.misuse("add-peer: %w", err)
	}
	if _, ok := f.peers[p.Address]; ok {
		return f.misuse("add-peer %s: already configured", p.Address)
	}
	f.peers[p.Address] = p
	f.states[p.Address] = PeerStatus{Address: p.Address, ASN: p.ASN, State: StateActive, Since: time.Now()}
	return nil
}

// UpdatePeer implements Speaker.
func (f *Fake) UpdatePeer(_ context.Context, p Peer) error {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin("update-peer " + p.Address.String()); err != nil {
		return err
	}
	if err := p.Validate(); err != nil {
		return f.misuse("update-peer: %w", err)
	}
	old, ok := f.peers[p.Address]
	if !ok {
		return f.misuse("update-peer %s: %w", p.Address, ErrPeerNotFound)
	}
	if old == p {
		return f.misuse("update-peer %s: nothing changed (the caller should not reset a session for nothing)", p.Address)
	}
	f.peers[p.Address] = p
	return nil
}

// DeletePeer implements Speaker.
func (f *Fake) DeletePeer(_ context.Context, addr netip.Addr) error {
	f.t.Helper()
	f.mu.Lock()
	if err := f.begin("delete-peer " + addr.String()); err != nil {
		f.mu.Unlock()
		return err
	}
	if _, ok := f.peers[addr]; !ok {
		f.mu.Unlock()
		return f.misuse("delete-peer %s: %w", addr, ErrPeerNotFound)
	}
	delete(f.peers, addr)
	prev := f.states[addr].State
	delete(f.states, addr)
	delete(f.received, addr)
	h := f.handler
	f.mu.Unlock()
	if h != nil && prev != StateIdle {
		f.deliver.Lock()
		h.HandlePeerState(PeerEvent{Peer: addr, State: StateIdle, Previous: prev, Reason: "peer deconfigured", Time: time.Now()})
		f.deliver.Unlock()
	}
	return nil
}

// Advertise implements Speaker.
func (f *Fake) Advertise(_ context.Context, a Advertisement) error {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin("advertise " + a.Prefix.String()); err != nil {
		return err
	}
	if !a.Prefix.IsValid() || a.Prefix != a.Prefix.Masked() {
		return f.misuse("advertise %s: not a network prefix", a.Prefix)
	}
	if old, ok := f.ads[a.Prefix]; ok && old.Equal(a) {
		return f.misuse("advertise %s: already advertised with the same attributes", a.Prefix)
	}
	f.ads[a.Prefix] = a
	return nil
}

// Withdraw implements Speaker.
func (f *Fake) Withdraw(_ context.Context, p netip.Prefix) error {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin("withdraw " + p.String()); err != nil {
		return err
	}
	if _, ok := f.ads[p]; !ok {
		return f.misuse("withdraw %s: not advertised", p)
	}
	delete(f.ads, p)
	return nil
}

// SetExportPolicy implements Speaker.
func (f *Fake) SetExportPolicy(_ context.Context, p ExportPolicy) error {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin("set-export-policy"); err != nil {
		return err
	}
	f.export = normalizeExport(p)
	return nil
}

// SetImportCheck implements Speaker. The fake keeps the check for
// ImportAccepts; it records "set-import-check all" or "set-import-check"
// with the prefixes to judge again.
func (f *Fake) SetImportCheck(_ context.Context, check ImportCheck, recheck []netip.Prefix, all bool) error {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	op := "set-import-check"
	switch {
	case all:
		op += " all"
	case len(recheck) > 0:
		l := slices.Clone(recheck)
		slices.SortFunc(l, comparePrefix)
		op += fmt.Sprint(" ", l)
	}
	if err := f.begin(op); err != nil {
		return err
	}
	for _, p := range recheck {
		if !p.IsValid() || p != p.Masked() {
			return f.misuse("set-import-check: invalid prefix %v", p)
		}
	}
	f.check = check
	return nil
}

// ImportAccepts reports whether the installed import check lets a path
// from peer into the speaker's table (true without a check).
func (f *Fake) ImportAccepts(peer netip.Addr, rp ReceivedPath) bool {
	f.mu.Lock()
	check := f.check
	f.mu.Unlock()
	if check == nil {
		return true
	}
	var orig netip.Addr
	if rp.Attrs != nil {
		orig = rp.Attrs.OriginatorID
	}
	return check(peer, rp.Prefix, rp.NextHop, orig)
}

// Peers implements Speaker.
func (f *Fake) Peers(ctx context.Context, countAdvertised func(netip.Addr) bool) ([]PeerStatus, error) {
	f.mu.Lock()
	if hold, entered := f.peersHold, f.peersEntered; hold != nil {
		f.mu.Unlock()
		select {
		case entered <- struct{}{}:
		default:
		}
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		f.mu.Lock()
	}
	defer f.mu.Unlock()
	if !f.running {
		return nil, ErrNotRunning
	}
	out := make([]PeerStatus, 0, len(f.states))
	for a, st := range f.states {
		st.Received = uint64(len(f.received[a]))
		if st.State == StateEstablished && countAdvertised != nil && countAdvertised(a) {
			st.Advertised = uint64(len(f.ads))
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b PeerStatus) int { return a.Address.Compare(b.Address) })
	return out, nil
}

// Received implements Speaker.
func (f *Fake) Received(_ context.Context, peer netip.Addr) ([]ReceivedPath, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.running {
		return nil, ErrNotRunning
	}
	if _, ok := f.peers[peer]; !ok {
		return nil, fmt.Errorf("listing paths received from %s: %w", peer, ErrPeerNotFound)
	}
	return slices.Collect(maps.Values(f.received[peer])), nil
}

// Watch implements Speaker.
func (f *Fake) Watch(_ context.Context, h Handler) error {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin("watch"); err != nil {
		return err
	}
	if f.handler != nil {
		return f.misuse("watch: already watched")
	}
	f.handler = h
	return nil
}

// Receive stores an update from a peer, as the real speaker's Adj-RIB-In
// would, and delivers it to the handler.
func (f *Fake) Receive(u Update) {
	f.t.Helper()
	f.mu.Lock()
	if _, ok := f.peers[u.Peer]; !ok {
		f.mu.Unlock()
		f.t.Errorf("bgp.Fake: Receive from unconfigured peer %s", u.Peer)
		return
	}
	m := f.received[u.Peer]
	if m == nil {
		m = make(map[netip.Prefix]ReceivedPath)
		f.received[u.Peer] = m
	}
	for _, p := range u.Announced {
		m[p.Prefix] = p
	}
	for _, p := range u.Withdrawn {
		delete(m, p)
	}
	h := f.handler
	f.mu.Unlock()
	if h != nil {
		f.deliver.Lock()
		h.HandleUpdate(&u)
		f.deliver.Unlock()
	}
}

// SetState moves a session to a state and tells the handler. Leaving
// Established drops the peer's paths, or with graceful=true keeps them as
// stale, as a graceful-restart-capable speaker does.
func (f *Fake) SetState(addr netip.Addr, st SessionState, graceful bool, reason string) {
	f.t.Helper()
	f.mu.Lock()
	ps, ok := f.states[addr]
	if !ok {
		f.mu.Unlock()
		f.t.Errorf("bgp.Fake: SetState of unconfigured peer %s", addr)
		return
	}
	prev := ps.State
	ps.State, ps.Since = st, time.Now()
	if reason != "" {
		ps.LastError = reason
	}
	f.states[addr] = ps
	if prev == StateEstablished && st != StateEstablished {
		if graceful {
			for p, rp := range f.received[addr] {
				rp.Stale = true
				f.received[addr][p] = rp
			}
		} else {
			delete(f.received, addr)
		}
	}
	h := f.handler
	f.mu.Unlock()
	if h != nil {
		f.deliver.Lock()
		// As GoBGP's watcher: a reason that starts with the prefix limit
		// is a session closed for it.
		h.HandlePeerState(PeerEvent{Peer: addr, State: st, Previous: prev, Reason: reason, Time: time.Now(),
			PrefixLimit: prev == StateEstablished && st != StateEstablished && strings.HasPrefix(reason, prefixLimitExceeded)})
		f.deliver.Unlock()
	}
}

// EndOfRIB delivers the peer's End-of-RIB and drops its stale paths.
func (f *Fake) EndOfRIB(addr netip.Addr, fam Family) {
	f.mu.Lock()
	for p, rp := range f.received[addr] {
		if rp.Stale && FamilyOf(p.Addr()) == fam {
			delete(f.received[addr], p)
		}
	}
	h := f.handler
	f.mu.Unlock()
	if h != nil {
		f.deliver.Lock()
		h.HandleEndOfRIB(addr, fam)
		f.deliver.Unlock()
	}
}

// ExpireStale drops a peer's stale paths without an event, as GoBGP does
// when a long-lived graceful restart timer runs out.
func (f *Fake) ExpireStale(addr netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for p, rp := range f.received[addr] {
		if rp.Stale {
			delete(f.received[addr], p)
		}
	}
}

// Global returns the settings Start was given.
func (f *Fake) Global() Global {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.global
}

// Running reports whether the fake is started and not stopped.
func (f *Fake) Running() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.running
}

// PeerConfigs returns the configured sessions.
func (f *Fake) PeerConfigs() map[netip.Addr]Peer {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.peers)
}

// Advertised returns the originated routes.
func (f *Fake) Advertised() map[netip.Prefix]Advertisement {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.ads)
}

// Export returns the export policy as last set (normalised).
func (f *Fake) Export() ExportPolicy {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.export
}

// Ops returns the calls made so far ("add-peer 10.0.0.2", "advertise
// 10.244.1.0/26", ...) and forgets them, so a test can check that a
// reconcile did exactly (and only) what it should.
func (f *Fake) Ops() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ops := f.ops
	f.ops = nil
	return ops
}

// ErrInjected is a ready-made error for FailNext.
var ErrInjected = errors.New("injected failure")
