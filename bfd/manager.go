package bfd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is returned by a closed Manager.
var ErrClosed = errors.New("bfd manager is closed")

// Config configures a Manager.
type Config struct {
	// Transport carries the packets; required (NewUDP in the agent).
	Transport Transport
	// Clock; nil means the time package.
	Clock Clock
	// Rand returns uniform values in [0,1) for jitter; nil means
	// math/rand/v2.
	Rand func() float64
	// Discriminator returns random candidates for local discriminators
	// (0 and duplicates are skipped); nil means math/rand/v2.
	Discriminator func() uint32
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Drop reasons counted by Stats.
const (
	DropTTL           = "ttl"            // not 255: the packet crossed a router
	DropMalformed     = "malformed"      // Decode refused it
	DropUnknownDiscr  = "unknown-discr"  // Your Discriminator matches no session
	DropUnknownPeer   = "unknown-peer"   // Your Discriminator 0 and no session to the source
	DropWrongAddress  = "wrong-address"  // matched a session of another source or local address
	DropSessionClosed = "session-closed" // arrived while its session was being removed
)

// Stats are the Manager's packet counters since it started.
type Stats struct {
	Sent, Received, SendErrors uint64
	Dropped                    map[string]uint64
}

// Manager runs BFD sessions: it is the real Sessions. Each session has a
// transmit timer and a detection timer; received packets are matched to
// sessions (by Your Discriminator, or by source address while the peer
// does not know ours) and applied under the session's lock; packets are
// sent outside it. State changes are queued to watchers, so no watcher can
// delay a session.
type Manager struct {
	cfg   Config
	log   *slog.Logger
	clock Clock

	mu      sync.Mutex
	byPeer  map[netip.Addr]*msession // zone-less remote address
	byDiscr map[uint32]*msession     // also holds sessions being removed
	closed  bool
	// resume holds sessions a previous agent suspended (Resume).
	resume map[netip.Addr]Suspended
	// watchers is read by sessions under their own locks, so it is not
	// guarded by mu (sessions never take mu while holding theirs);
	// writers hold mu and replace the slice.
	watchers atomic.Pointer[[]*watcher]

	sent, received, sendErrs atomic.Uint64
	dropMu                   sync.Mutex
	dropped                  map[string]uint64
}

var _ Sessions = (*Manager)(nil)

// NewManager starts receiving on cfg.Transport and returns a Manager with
// no sessions.
func NewManager(cfg Config) (*Manager, error) {
	if cfg.Transport == nil {
		return nil, errors.New("bfd: no transport")
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	if cfg.Discriminator == nil {
		cfg.Discriminator = rand.Uint32
	}
	l := cfg.Logger
	if l == nil {
		l = slog.Default()
	}
	m := &Manager{
		cfg:     cfg,
		log:     l.With("component", "bfd"),
		clock:   cfg.Clock,
		byPeer:  make(map[netip.Addr]*msession),
		byDiscr: make(map[uint32]*msession),
		dropped: make(map[string]uint64),
	}
	if err := cfg.Transport.Serve(m.receive); err != nil {
		return nil, fmt.Errorf("bfd: listening: %w", err)
	}
	return m, nil
}

// msession is one running session.
type msession struct {
	m    *Manager
	peer Peer
	tx   Sender

	mu       sync.Mutex
	core     *session
	txTimer  Timer
	detTimer Timer
	lastTx   time.Time
	nextTx   time.Time
	removed  bool // Remove or Close: no more events or client actions
	done     bool // timers stopped, socket closed
	// pollDone is closed when the Poll Sequence of a restart ends
	// (CloseForRestart).
	pollDone chan struct{}
	since    time.Time
	downs    uint64
	sent     uint64
	received uint64
}

// Set implements Sessions.
func (m *Manager) Set(p Peer) error {
	if err := p.Validate(); err != nil {
		return err
	}
	key := p.Remote.WithZone("")
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if s := m.byPeer[key]; s != nil {
		if s.peer.Local == p.Local && s.peer.Remote == p.Remote {
			s.reconfigure(p)
			return nil
		}
		m.retireLocked(s, false)
	}
	tx, err := m.cfg.Transport.Open(p.Local, p.Remote)
	if err != nil {
		return fmt.Errorf("bfd peer %s: %w", p.Remote, err)
	}
	s := &msession{m: m, peer: p, tx: tx, since: m.clock.Now()}
	if sus, ok := m.resumedLocked(p); ok {
		s.core, s.since = resumedSession(sus, p.Timers, m.clock.Now()), sus.Since
		m.log.Info("BFD session resumed from the agent before", "op", "resume", "peer", p.Remote, "discr", sus.LocalDiscr)
	} else {
		s.core = newSession(m.newDiscrLocked(), p.Timers)
	}
	discr := s.core.localDiscr
	s.mu.Lock()
	s.txTimer = m.clock.AfterFunc(0, s.onTx) // the first packet goes at once
	s.detTimer = m.clock.AfterFunc(maxInterval, s.onDetect)
	s.detTimer.Stop()
	s.mu.Unlock()
	m.byPeer[key], m.byDiscr[discr] = s, s
	m.log.Info("BFD session added", "op", "add", "peer", p.Remote, "local", p.Local,
		"minTx", p.MinTx, "minRx", p.MinRx, "multiplier", p.Multiplier)
	return nil
}

func (m *Manager) newDiscrLocked() uint32 {
	for {
		d := m.cfg.Discriminator()
		if d != 0 && m.byDiscr[d] == nil {
			return d
		}
	}
}

// Remove implements Sessions.
func (m *Manager) Remove(peer netip.Addr) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if s := m.byPeer[peer.WithZone("")]; s != nil {
		m.retireLocked(s, true)
		m.log.Info("BFD session removed", "op", "remove", "peer", peer)
	}
	return nil
}

// retireLocked takes a session out of byPeer. With adminDown it is held
// AdminDown for one detection time of the peer first (RFC 5882 8), so that
// the peer learns it was switched off rather than lost; otherwise it ends
// at once.
func (m *Manager) retireLocked(s *msession, adminDown bool) {
	delete(m.byPeer, s.peer.Remote.WithZone(""))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removed = true
	if !adminDown || s.core.state == Down && s.core.remoteDiscr == 0 {
		s.finishLocked()
		delete(m.byDiscr, s.core.localDiscr)
		return
	}
	s.core.setAdminDown(true)
	// One detection time of the peer's at our new (slow) interval: the
	// AdminDown packets go out at least Multiplier times.
	linger := time.Duration(s.core.cfg.Multiplier) * s.core.txInterval()
	m.clock.AfterFunc(linger, func() {
		s.mu.Lock()
		s.finishLocked()
		s.mu.Unlock()
		m.mu.Lock()
		if m.byDiscr[s.core.localDiscr] == s {
			delete(m.byDiscr, s.core.localDiscr)
		}
		m.mu.Unlock()
	})
}

// finishLocked stops a session's timers and closes its socket; the caller
// removes it from byDiscr. Called with s.mu held.
func (s *msession) finishLocked() {
	if s.done {
		return
	}
	s.done, s.removed = true, true
	s.txTimer.Stop()
	s.detTimer.Stop()
	_ = s.tx.Close()
}

// Close ends every session at once, without telling the peers: it is what
// an agent that restarts does. Its peers' sessions time out after the
// restart has begun (its BGP connections closed first), which RFC 5882
// 4.3.2 asks them not to take as a forwarding failure. It also stops
// receiving. Close is idempotent.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	all := make([]*msession, 0, len(m.byDiscr))
	for _, s := range m.byDiscr {
		all = append(all, s)
	}
	clear(m.byPeer)
	clear(m.byDiscr)
	var watchers []*watcher
	if ws := m.watchers.Swap(nil); ws != nil {
		watchers = *ws
	}
	m.mu.Unlock()
	for _, s := range all {
		s.mu.Lock()
		s.finishLocked()
		s.mu.Unlock()
	}
	for _, w := range watchers {
		w.stop()
	}
	return m.cfg.Transport.Close()
}

// Sessions implements Sessions.
func (m *Manager) Sessions() []Status {
	m.mu.Lock()
	all := make([]*msession, 0, len(m.byPeer))
	for _, s := range m.byPeer {
		all = append(all, s)
	}
	m.mu.Unlock()
	out := make([]Status, 0, len(all))
	for _, s := range all {
		out = append(out, s.status())
	}
	slices.SortFunc(out, func(a, b Status) int { return a.Peer.Remote.Compare(b.Peer.Remote) })
	return out
}

// Stats returns the packet counters.
func (m *Manager) Stats() Stats {
	m.dropMu.Lock()
	d := make(map[string]uint64, len(m.dropped))
	for k, v := range m.dropped {
		d[k] = v
	}
	m.dropMu.Unlock()
	return Stats{Sent: m.sent.Load(), Received: m.received.Load(), SendErrors: m.sendErrs.Load(), Dropped: d}
}

func (m *Manager) drop(reason string, src netip.Addr, err error) {
	m.dropMu.Lock()
	m.dropped[reason]++
	n := m.dropped[reason]
	m.dropMu.Unlock()
	// Log the first of each reason and then rarely: a hostile or
	// misconfigured sender must not flood the log.
	if n == 1 || n%1000 == 0 {
		m.log.Warn("BFD packet dropped", "op", "receive", "reason", reason, "source", src, "count", n, "error", err)
	}
}

// receive is the Transport's handler: it checks and matches a datagram and
// hands it to its session.
func (m *Manager) receive(b []byte, src, dst netip.Addr, ttl int) {
	src, dst = src.Unmap(), dst.Unmap()
	if ttl != TTL {
		m.drop(DropTTL, src, fmt.Errorf("ttl %d", ttl))
		return
	}
	p, err := Decode(b)
	if err != nil {
		m.drop(DropMalformed, src, err)
		return
	}
	m.mu.Lock()
	var s *msession
	if p.YourDiscriminator != 0 {
		s = m.byDiscr[p.YourDiscriminator]
	} else {
		s = m.byPeer[src.WithZone("")]
	}
	m.mu.Unlock()
	switch {
	case s == nil && p.YourDiscriminator != 0:
		m.drop(DropUnknownDiscr, src, nil)
		return
	case s == nil:
		m.drop(DropUnknownPeer, src, nil)
		return
	case s.peer.Remote.WithZone("") != src.WithZone(""),
		s.peer.Local.IsValid() && dst.IsValid() && s.peer.Local != dst.WithZone(""):
		// Another host that guessed or saw a discriminator, or our
		// packet for another address: not this session's path.
		m.drop(DropWrongAddress, src, nil)
		return
	}
	m.received.Add(1)
	s.onPacket(&p)
}

// onPacket applies a received packet and answers a Poll at once.
func (s *msession) onPacket(p *Packet) {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		s.m.drop(DropSessionClosed, s.peer.Remote, nil)
		return
	}
	now := s.m.clock.Now()
	s.received++
	tr, changed := s.core.receive(p, now)
	if changed {
		s.changedLocked(tr, now)
	}
	if s.pollDone != nil && (!s.core.polling || s.core.state != Up) {
		close(s.pollDone)
		s.pollDone = nil
	}
	s.detTimer.Reset(s.core.detectionTime())
	var final []byte
	if s.core.finalOwed {
		pk := s.core.packet(true)
		final = pk.Append(make([]byte, 0, HeaderLen))
		s.sent++
	}
	s.rescheduleLocked(now)
	s.mu.Unlock()
	if final != nil {
		s.send(final)
	}
}

// onTx sends a periodic packet and schedules the next one.
func (s *msession) onTx() {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return
	}
	now := s.m.clock.Now()
	if now.Before(s.nextTx) { // rescheduled later meanwhile
		s.txTimer.Reset(s.nextTx.Sub(now))
		s.mu.Unlock()
		return
	}
	var b []byte
	if s.core.periodic() {
		pk := s.core.packet(false)
		b = pk.Append(make([]byte, 0, HeaderLen))
		s.sent++
	}
	s.lastTx = now
	s.nextTx = now.Add(s.core.jittered(s.m.cfg.Rand()))
	s.txTimer.Reset(s.nextTx.Sub(now))
	s.mu.Unlock()
	if b != nil {
		s.send(b)
	}
}

// rescheduleLocked brings the next periodic packet forward when the
// negotiated interval became shorter (going Up, the peer asking for more):
// at most the new interval after the last one sent.
func (s *msession) rescheduleLocked(now time.Time) {
	if s.lastTx.IsZero() {
		return // the first packet is still pending
	}
	next := s.lastTx.Add(s.core.jittered(s.m.cfg.Rand()))
	if next.Before(s.nextTx) {
		s.nextTx = next
		s.txTimer.Reset(max(0, next.Sub(now)))
	}
}

// onDetect runs when the detection time may have run out.
func (s *msession) onDetect() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return
	}
	now := s.m.clock.Now()
	d := s.core.deadline()
	if d.IsZero() {
		return
	}
	if now.Before(d) { // a packet arrived meanwhile
		s.detTimer.Reset(d.Sub(now))
		return
	}
	if tr, changed := s.core.expire(now); changed {
		s.changedLocked(tr, now)
		s.rescheduleLocked(now)
	}
}

func (s *msession) send(b []byte) {
	if err := s.tx.Send(b); err != nil {
		s.m.sendErrs.Add(1)
		// Sending fails while a link is down (no route, ENETUNREACH):
		// that is what detection is for, not worth a log line each time.
		s.m.log.Debug("sending a BFD packet", "op", "send", "peer", s.peer.Remote, "error", err)
		return
	}
	s.m.sent.Add(1)
}

// changedLocked records a state change and queues its event. Called with
// s.mu held, which keeps one session's events in order.
func (s *msession) changedLocked(tr transition, now time.Time) {
	s.since = now
	if tr.from == Up && tr.to == Down {
		s.downs++
	}
	lvl := slog.LevelInfo
	if tr.to == Down && tr.from == Up {
		lvl = slog.LevelWarn
	}
	s.m.log.Log(context.Background(), lvl, "BFD session state changed", "op", "state", "peer", s.peer.Remote,
		"from", tr.from, "to", tr.to, "diag", tr.diag, "remoteDiag", s.core.remoteDiag, "remoteAdminDown", tr.remoteAdminDown)
	if s.removed {
		return
	}
	e := Event{
		Peer: s.peer.Remote, From: tr.from, To: tr.to, Diag: tr.diag,
		RemoteAdminDown:               tr.remoteAdminDown,
		RemoteControlPlaneIndependent: s.core.remoteCPI,
		Time:                          now,
	}
	if ws := s.m.watchers.Load(); ws != nil {
		for _, w := range *ws {
			w.push(e)
		}
	}
}

func (s *msession) reconfigure(p Peer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.peer == p {
		return
	}
	s.peer = p
	s.core.configure(p.Timers)
	s.rescheduleLocked(s.m.clock.Now())
	s.m.log.Info("BFD session reconfigured", "op", "set", "peer", p.Remote,
		"minTx", p.MinTx, "minRx", p.MinRx, "multiplier", p.Multiplier)
}

func (s *msession) status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.core
	return Status{
		Peer: s.peer, State: c.state, Diag: c.diag, RemoteDiag: c.remoteDiag, RemoteState: c.remoteState,
		LocalDiscr: c.localDiscr, RemoteDiscr: c.remoteDiscr,
		TxInterval: c.txInterval(), DetectionTime: c.detectionTime(),
		RemoteControlPlaneIndependent: c.remoteCPI,
		Since:                         s.since, Downs: s.downs, Sent: s.sent, Received: s.received,
	}
}
