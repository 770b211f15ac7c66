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
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/bgp/policy"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
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

// NextHop is one next hop of a learned route.
type NextHop struct {
	Addr netip.Addr
	// Node is the name of the node owning Addr, when it is one of ours.
	Node string
}

// Route is the desired kernel state for one learned prefix.
type Route struct {
	Prefix netip.Prefix
	// NextHops are sorted; a Route always has at least one.
	NextHops []NextHop
	// Pool is the IPPool holding the prefix, "" for other routes (Service
	// ranges, external routes); its encapsulation modes decide how the
	// route is programmed.
	Pool      string
	IPIPMode  v1alpha1.EncapMode
	VXLANMode v1alpha1.EncapMode
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
	// Nodes maps our nodes' addresses to their names, for NextHop.Node.
	Nodes map[netip.Addr]string
}

// PeerCounters counts one peer's prefixes as the RIB holds them.
type PeerCounters struct {
	State    bgp.SessionState
	Received int
	Accepted int
	Stale    int
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
	dests           map[netip.Prefix]*dest
	dirty           []netip.Prefix
	// interned single next hops (most routes have one)
	oneNH  map[netip.Addr][]netip.Addr
	oneOut map[netip.Addr][]NextHop
	sel    []netip.Addr
	// withdrawnTotal and friends feed metrics.
	totals Totals
}

// Totals are cumulative counters since start.
type Totals struct {
	RoutesSet       uint64
	RoutesWithdrawn uint64
	Batches         uint64
}

type peerTable struct {
	addr       netip.Addr
	info       PeerInfo
	configured bool
	state      bgp.SessionState
	eor        bool
	gen        uint32
	paths      map[netip.Prefix]*entry
}

type entry struct {
	nh     netip.Addr
	attrs  *bgp.Attrs
	stale  bool
	reason policy.Reason
	pool   int16
	gen    uint32 // resync generation
}

type dest struct {
	cands   []candidate
	out     []netip.Addr // next hops last sent to the sink; nil: none
	outPool int16
	dirty   bool
	force   bool // resend even if the next hops are unchanged
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
		cfg:    cfg,
		log:    l.With("component", "bgp-rib"),
		peers:  make(map[netip.Addr]*peerTable),
		dests:  make(map[netip.Prefix]*dest),
		oneNH:  make(map[netip.Addr][]netip.Addr),
		oneOut: make(map[netip.Addr][]NextHop),
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
			if now.Sub(lastRecheck) >= r.cfg.StaleRecheck {
				lastRecheck = now
				r.recheckStale(ctx)
			}
		}
	}
}

func (r *RIB) recheckStale(ctx context.Context) {
	r.mu.Lock()
	var peers []netip.Addr
	for a, pt := range r.peers {
		for _, e := range pt.paths {
			if e.stale {
				peers = append(peers, a)
				break
			}
		}
	}
	r.mu.Unlock()
	for _, a := range peers {
		r.mu.Lock()
		r.resyncLocked(ctx, a)
		r.flushLocked()
	}
}

// Set replaces the RIB's settings: every held path is judged again and
// routes that change are sent to the sink. Paths of peers no longer
// configured are dropped.
func (r *RIB) Set(s Settings) {
	r.mu.Lock()
	if !r.haveSet {
		r.haveSet, r.firstSet = true, time.Now()
	}
	oldPools := r.poolsLocked()
	oldNodes := r.settings.Nodes
	r.settings = s
	clear(r.oneOut)
	for a, info := range s.Peers {
		pt := r.peer(a)
		pt.configured = true
		if pt.info != info {
			pt.info = info
			for p, e := range pt.paths {
				if e.reason == policy.Accepted {
					r.markDirty(p)
				}
			}
		}
	}
	for a, pt := range r.peers {
		if _, ok := s.Peers[a]; !ok {
			pt.configured = false
			r.dropPeerLocked(pt)
			delete(r.peers, a)
		}
	}
	for _, pt := range r.peers {
		r.judgeAllLocked(pt)
	}
	// Pool attributes or node names may have changed without any path
	// changing: compare what was sent.
	newPools := r.poolsLocked()
	for p, d := range r.dests {
		if d.out == nil {
			continue
		}
		if poolChanged(oldPools, newPools, d.outPool, r.poolOfDest(d)) || nodesChanged(oldNodes, s.Nodes, d.out) {
			d.force = true
			r.markDirty(p)
		}
	}
	r.checkConvergedLocked()
	r.flushLocked()
}

func (r *RIB) poolsLocked() []policy.Pool {
	if r.settings.Policy == nil {
		return nil
	}
	return r.settings.Policy.Pools()
}

func (r *RIB) poolOfDest(d *dest) int16 {
	if len(d.cands) == 0 {
		return -1
	}
	return d.cands[0].e.pool
}

func poolChanged(old, cur []policy.Pool, oi, ni int16) bool {
	var a, b policy.Pool
	if oi >= 0 && int(oi) < len(old) {
		a = old[oi]
	}
	if ni >= 0 && int(ni) < len(cur) {
		b = cur[ni]
	}
	return a.Name != b.Name || a.IPIPMode != b.IPIPMode || a.VXLANMode != b.VXLANMode
}

func nodesChanged(old, cur map[netip.Addr]string, nhs []netip.Addr) bool {
	for _, a := range nhs {
		if old[a] != cur[a] {
			return true
		}
	}
	return false
}

func (r *RIB) peer(a netip.Addr) *peerTable {
	pt := r.peers[a]
	if pt == nil {
		pt = &peerTable{addr: a, paths: make(map[netip.Prefix]*entry)}
		r.peers[a] = pt
	}
	return pt
}

func (r *RIB) markDirty(p netip.Prefix) {
	d := r.dests[p]
	if d == nil {
		d = &dest{outPool: -1}
		r.dests[p] = d
	}
	if !d.dirty {
		d.dirty = true
		r.dirty = append(r.dirty, p)
	}
}

// judgeAllLocked re-evaluates every path of a peer against the policy.
func (r *RIB) judgeAllLocked(pt *peerTable) {
	eval := r.evaluator(pt)
	for p, e := range pt.paths {
		reason, pool := eval(p)
		if reason == e.reason && pool == e.pool {
			continue
		}
		if e.reason == policy.Accepted {
			r.removeCand(p, pt)
		}
		e.reason, e.pool = reason, pool
		if reason == policy.Accepted {
			r.addCand(p, pt, e)
		}
	}
}

func (r *RIB) addCand(p netip.Prefix, pt *peerTable, e *entry) {
	r.markDirty(p)
	d := r.dests[p]
	for i := range d.cands {
		if d.cands[i].peer == pt {
			d.cands[i].e = e
			return
		}
	}
	d.cands = append(d.cands, candidate{peer: pt, e: e})
}

func (r *RIB) removeCand(p netip.Prefix, pt *peerTable) {
	d := r.dests[p]
	if d == nil {
		return
	}
	for i := range d.cands {
		if d.cands[i].peer == pt {
			d.cands = slices.Delete(d.cands, i, i+1)
			r.markDirty(p)
			return
		}
	}
}

func (r *RIB) dropPeerLocked(pt *peerTable) {
	for p, e := range pt.paths {
		if e.reason == policy.Accepted {
			r.removeCand(p, pt)
		}
	}
	clear(pt.paths)
}
