// Package rib is the receive side of Rhizome's BGP: it turns what peers
// send into the routes the kernel should hold, and hands them to the route
// programmer in batches.
//
// It implements bgp.Handler. For every path a peer sends it applies the
// import policy (bgp/policy), keeps the path per peer (so that a policy
// change re-judges everything without asking peers to resend), selects the
// best paths per prefix across peers (every path tied after the BGP
// decision steps becomes an ECMP next hop) and, after each UPDATE, gives
// the Sink one Batch of the prefixes whose result changed.
//
// Session loss and graceful restart follow the speaker: when a session
// leaves Established, or a restart timer runs out, the RIB re-reads what
// the speaker still holds for the peer (nothing, or the paths kept as
// stale) and withdraws the rest; at the peer's End-of-RIB the paths still
// stale are withdrawn. Converged is signalled once, when every configured
// peer has sent End-of-RIB (or ConvergeTimeout passed): only then may the
// route programmer remove kernel routes it adopted at startup.
//
// The bgp package never touches the kernel, and neither does this one.
package rib

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/bgp/policy"
)

// Sink receives learned routes; the agent implements it on top of the
// kernel route programmer.
type Sink interface {
	// ApplyRoutes receives the routes that changed since the previous call.
	// Calls are serialised and in order. The batch belongs to the sink;
	// NextHops slices may be shared between routes and must not be
	// modified. It may block (back-pressure), which delays later updates
	// but loses nothing.
	ApplyRoutes(b Batch)
	// Converged is called once, after the first batch of every configured
	// peer's table (End-of-RIB) or when ConvergeTimeout has passed.
	Converged()
}

// Route is the desired kernel state for one learned prefix: where it
// goes, not how. How the kernel reaches the next hops (directly, IPIP,
// VXLAN) is the route programmer's decision, from the IP pool containing
// the prefix (routes.State.Pools), so that it is made in one place.
type Route struct {
	Prefix netip.Prefix
	// NextHops are sorted; a Route always has at least one. The slice may
	// be shared with other routes and must not be modified.
	NextHops []netip.Addr
}

// Batch is a set of changes: routes to install or replace, prefixes to
// remove. A prefix appears at most once.
type Batch struct {
	Set      []Route
	Withdraw []netip.Prefix
}

// Receiver reads back what a peer's session holds; bgp.Speaker implements it.
type Receiver interface {
	Received(ctx context.Context, peer netip.Addr) ([]bgp.ReceivedPath, error)
}

// Config configures a RIB.
type Config struct {
	Speaker Receiver
	Sink    Sink
	Logger  *slog.Logger
	// ConvergeTimeout bounds the wait for End-of-RIB from every peer.
	// Default 60s.
	ConvergeTimeout time.Duration
	// StaleRecheck is how often paths kept stale (graceful restart) are
	// re-read from the speaker, which drops them when its timers run out
	// without telling. Default 10s.
	StaleRecheck time.Duration
}

// PeerInfo is what the RIB needs to know about a configured session.
type PeerInfo struct {
	// EBGP sessions win over iBGP ones in path selection.
	EBGP bool
}

// Settings is the RIB's configuration from the cluster's state.
type Settings struct {
	Policy *policy.Import
	// Peers are the configured sessions; paths of other peers are dropped.
	Peers map[netip.Addr]PeerInfo
	// Originated are the prefixes this node advertises itself (its blocks,
	// borrowed addresses, Service ranges). A locally originated route wins
	// over any learned one, as in BGP, so none is sent to the sink for
	// them: every node advertising the Service ranges must not route them
	// to each other.
	Originated []netip.Prefix
}

// PeerCounters counts one peer's prefixes as the RIB holds them.
type PeerCounters struct {
	State    bgp.SessionState
	Received int
	Accepted int
	// Stale paths are kept for a graceful restart; LongLivedStale of them
	// are in the long-lived phase (RFC 9494, least preferred).
	Stale          int
	LongLivedStale int
	// Rejected by reason (indexed by policy.Reason; Accepted is unused).
	Rejected [policy.NumReasons]int
	// EndOfRIB is set once the current session sent its whole table.
	EndOfRIB bool
}

// RIB is the receive-side routing table. Create it with New.
type RIB struct {
	cfg Config
	log *slog.Logger

	// sinkMu orders calls to the sink: it is taken before mu is released,
	// so two batches can never reach the sink out of order.
	sinkMu sync.Mutex

	mu        sync.Mutex
	settings  Settings
	haveSet   bool
	firstSet  time.Time
	converged bool
	// convergePending: Converged is due with the next flush.
	convergePending bool
	peers           map[netip.Addr]*peerTable
	// dests holds every prefix any peer sent, with every peer's path.
	dests map[pkey]*dest
	dirty []*dest
	// originated is Settings.Originated as a set
	originated map[pkey]bool
	// interned single next hops (most routes have one)
	oneNH  map[netip.Addr][]netip.Addr
	sel    []netip.Addr
	totals Totals
	// holdUntil ends HoldAll: paths still held then are re-read from the
	// speaker (zero: nothing held).
	holdUntil time.Time
}

// Totals are cumulative counters since start.
type Totals struct {
	RoutesSet       uint64
	RoutesWithdrawn uint64
	Batches         uint64
}

// peerTable is one peer's session state and counters; its paths live in
// the dests.
type peerTable struct {
	addr  netip.Addr
	info  PeerInfo
	state bgp.SessionState
	eor   bool
	gen   uint32
	// held: the peer's paths are kept across a speaker replacement
	// (HoldAll) until its new session sends End-of-RIB, and never re-read
	// from the new speaker meanwhile (it has nothing yet).
	held bool
	// counters, kept up to date on every change
	received, accepted, stale, llgrStale int
	rejected                             [policy.NumReasons]int
}

func (pt *peerTable) count(p *path, sign int) {
	pt.received += sign
	if p.reason == policy.Accepted {
		pt.accepted += sign
	} else {
		pt.rejected[p.reason] += sign
	}
	if p.stale {
		pt.stale += sign
		if p.attrs != nil && p.attrs.HasCommunity(bgp.CommunityLLGRStale) {
			pt.llgrStale += sign
		}
	}
}

// path is one peer's path for a prefix.
type path struct {
	peer   *peerTable
	nh     netip.Addr
	attrs  *bgp.Attrs
	stale  bool
	reason policy.Reason
	gen    uint32 // resync generation
}

func (p *path) accepted() bool { return p.reason == policy.Accepted }

// dest is one prefix: every peer's path and what was sent to the sink.
type dest struct {
	prefix netip.Prefix
	paths  []path
	inline [1]path      // storage for the usual single path
	out    []netip.Addr // next hops last sent to the sink; nil: none
	dirty  bool
}

func (d *dest) find(pt *peerTable) int {
	for i := range d.paths {
		if d.paths[i].peer == pt {
			return i
		}
	}
	return -1
}

// pkey is a prefix as a map key without pointers (netip.Prefix holds one,
// which makes hashing slower and gives the GC more to scan).
type pkey struct {
	hi, lo uint64
	bits   int16
	v4     bool
}

func keyOf(p netip.Prefix) pkey {
	a := p.Addr()
	if a.Is4() {
		b := a.As4()
		return pkey{lo: uint64(binary.BigEndian.Uint32(b[:])), bits: int16(p.Bits()), v4: true}
	}
	b := a.As16()
	return pkey{hi: binary.BigEndian.Uint64(b[:8]), lo: binary.BigEndian.Uint64(b[8:]), bits: int16(p.Bits())}
}

// New returns a RIB. Call Run to start its timers.
func New(cfg Config) *RIB {
	if cfg.ConvergeTimeout <= 0 {
		cfg.ConvergeTimeout = 60 * time.Second
	}
	if cfg.StaleRecheck <= 0 {
		cfg.StaleRecheck = 10 * time.Second
	}
	l := cfg.Logger
	if l == nil {
		l = slog.Default()
	}
	return &RIB{
		cfg:   cfg,
		log:   l.With("component", "bgp-rib"),
		peers: make(map[netip.Addr]*peerTable),
		dests: make(map[pkey]*dest),
		oneNH: make(map[netip.Addr][]netip.Addr),
	}
}

var _ bgp.Handler = (*RIB)(nil)

// Run drives the convergence timeout and stale rechecks until ctx ends.
func (r *RIB) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	lastRecheck := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			r.mu.Lock()
			if !r.converged && r.haveSet && now.Sub(r.firstSet) >= r.cfg.ConvergeTimeout {
				r.log.Info("bgp converged by timeout", "op", "converge", "waited", now.Sub(r.firstSet).Round(time.Second), "waitingFor", r.pendingEORLocked())
				r.converged, r.convergePending = true, true
				r.flushLocked()
			} else {
				r.mu.Unlock()
			}
			r.endHold(ctx, now)
			if now.Sub(lastRecheck) >= r.cfg.StaleRecheck {
				lastRecheck = now
				r.recheckStale(ctx)
			}
		}
	}
}

// HoldAll keeps every path the RIB holds, as stale, while the speaker is
// replaced by a new one (a new router ID or listen port): the kernel keeps
// its routes until the new sessions have sent their tables. Each peer's
// held paths go at its new session's End-of-RIB (those it did not send
// again), when the peer is no longer configured, or when ConvergeTimeout
// has passed (then what the speaker holds decides).
func (r *RIB) HoldAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range r.dests {
		for i := range d.paths {
			p := &d.paths[i]
			if !p.stale {
				p.peer.count(p, -1)
				p.stale = true
				p.peer.count(p, 1)
			}
		}
	}
	n := 0
	for _, pt := range r.peers {
		pt.held, pt.eor = true, false
		n++
	}
	r.holdUntil = time.Now().Add(r.cfg.ConvergeTimeout)
	r.log.Info("holding every learned route while the speaker is replaced", "op", "hold", "peers", n, "until", r.holdUntil)
}

// endHold re-reads the peers still held once the hold time is over.
func (r *RIB) endHold(ctx context.Context, now time.Time) {
	r.mu.Lock()
	if r.holdUntil.IsZero() || now.Before(r.holdUntil) {
		r.mu.Unlock()
		return
	}
	r.holdUntil = time.Time{}
	var peers []netip.Addr
	for a, pt := range r.peers {
		if pt.held {
			pt.held = false
			peers = append(peers, a)
		}
	}
	r.mu.Unlock()
	for _, a := range peers {
		r.log.Info("hold over without the peer's table: re-reading what the speaker holds", "op", "hold", "peer", a)
		r.mu.Lock()
		r.resyncLocked(ctx, a)
		r.flushLocked()
	}
}

func (r *RIB) recheckStale(ctx context.Context) {
	r.mu.Lock()
	var peers []netip.Addr
	for a, pt := range r.peers {
		if pt.stale > 0 {
			peers = append(peers, a)
		}
	}
	r.mu.Unlock()
	for _, a := range peers {
		r.mu.Lock()
		r.resyncLocked(ctx, a)
		r.flushLocked()
	}
}

// Set replaces the RIB's settings: every held path the new policy may
// judge otherwise is judged again (all of them, unless only the policy's
// Owners changed: see scope), and routes that change are sent to the
// sink. Paths of peers no longer configured are dropped.
func (r *RIB) Set(s Settings) {
	r.mu.Lock()
	if !r.haveSet {
		r.haveSet, r.firstSet = true, time.Now()
	}
	sc := scopeOf(r.settings.Policy, s.Policy)
	oldOrig := r.originated
	r.originated = make(map[pkey]bool, len(s.Originated))
	for _, p := range s.Originated {
		r.originated[keyOf(p.Masked())] = true
	}
	r.settings = s
	changedInfo := map[*peerTable]bool{}
	for a, info := range s.Peers {
		pt := r.peer(a)
		if pt.info != info {
			pt.info = info
			changedInfo[pt] = true
		}
	}
	gone := map[*peerTable]bool{}
	for a, pt := range r.peers {
		if _, ok := s.Peers[a]; !ok {
			gone[pt] = true
			delete(r.peers, a)
		}
	}
	// A prefix that became ours or stopped being ours changes its route.
	for k := range oldOrig {
		if d := r.dests[k]; d != nil && !r.originated[k] {
			r.markDirty(d)
		}
	}
	for k := range r.originated {
		if d := r.dests[k]; d != nil && !oldOrig[k] {
			r.markDirty(d)
		}
	}
	if !sc.empty() || len(gone) > 0 || len(changedInfo) > 0 {
		evals := map[*peerTable]evalFunc{}
		for _, d := range r.dests {
			judge := sc.covers(d.prefix)
			for i := 0; i < len(d.paths); i++ {
				p := &d.paths[i]
				if gone[p.peer] {
					r.removePath(d, i)
					i--
					continue
				}
				if judge {
					r.rejudgePath(d, p, evals)
				}
				if changedInfo[p.peer] && p.accepted() {
					r.markDirty(d)
				}
			}
			if len(d.paths) == 0 && d.out == nil && !d.dirty {
				delete(r.dests, keyOf(d.prefix))
			}
		}
	}
	r.checkConvergedLocked()
	r.flushLocked()
}

func (r *RIB) peer(a netip.Addr) *peerTable {
	pt := r.peers[a]
	if pt == nil {
		pt = &peerTable{addr: a}
		r.peers[a] = pt
	}
	return pt
}

func (r *RIB) markDirty(d *dest) {
	if !d.dirty {
		d.dirty = true
		r.dirty = append(r.dirty, d)
	}
}

// removePath deletes path i of d, keeping counters and dirtiness right.
func (r *RIB) removePath(d *dest, i int) {
	p := &d.paths[i]
	p.peer.count(p, -1)
	if p.accepted() {
		r.markDirty(d)
	}
	last := len(d.paths) - 1
	d.paths[i] = d.paths[last]
	d.paths[last] = path{}
	d.paths = d.paths[:last]
	if len(d.paths) == 0 && !d.dirty && d.out == nil {
		delete(r.dests, keyOf(d.prefix))
	}
}
