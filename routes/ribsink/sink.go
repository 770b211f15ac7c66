// Package ribsink connects the receive side of BGP (bgp/rib) to the kernel
// route programmer (routes): Sink implements rib.Sink on a
// routes.Reconciler, so that every batch the RIB selects reaches the kernel
// through the Reconciler's fast, batched path, and the RIB's convergence
// releases the routes adopted at startup.
//
// It is the glue the agent uses, and the one the route-install benchmark
// (test/bench) measures, so that the benchmark times exactly the agent's
// receive path.
package ribsink

import (
	"log/slog"
	"net/netip"

	"github.com/rhizome-net/rhizome/bgp/rib"
	"github.com/rhizome-net/rhizome/routes"
)

// Applier is the part of *routes.Reconciler the sink uses.
type Applier interface {
	Apply(b routes.Batch) error
	SetConverged()
}

// BatchObserver is told the size of every batch before it is applied: the
// agent's GC tuner (internal/burstgc) watches for route bursts there.
type BatchObserver interface {
	ObserveBatch(n int)
}

// Sink implements rib.Sink. Calls are serialised by the RIB.
type Sink struct {
	r   Applier
	obs BatchObserver
	log *slog.Logger
	// single next-hop slices are shared between routes (most routes have
	// one next hop, and 100k routes share a handful of them).
	one map[netip.Addr][]netip.Addr
}

var _ rib.Sink = (*Sink)(nil)

// New returns a Sink feeding r; obs, when not nil, sees every batch size.
func New(r Applier, obs BatchObserver, log *slog.Logger) *Sink {
	if log == nil {
		log = slog.Default()
	}
	return &Sink{r: r, obs: obs, log: log.With("component", "routes-sink"), one: map[netip.Addr][]netip.Addr{}}
}

// ApplyRoutes implements rib.Sink: the RIB's batch becomes one
// routes.Batch. A route inside a pool gets the pool's encapsulation; any
// other route (Service ranges, routes from routers) goes directly.
func (s *Sink) ApplyRoutes(b rib.Batch) {
	if s.obs != nil {
		s.obs.ObserveBatch(len(b.Set) + len(b.Withdraw))
	}
	out := routes.Batch{Upserts: make([]routes.RemoteRoute, len(b.Set)), Withdrawals: b.Withdraw}
	for i := range b.Set {
		r := &b.Set[i]
		rr := &out.Upserts[i]
		rr.Prefix = r.Prefix
		rr.NextHops = s.nextHops(r.NextHops)
		rr.Encap = routes.Encap{Mode: routes.EncapNone}
		if r.Pool != "" {
			rr.Encap = routes.EncapForModes(r.IPIPMode, r.VXLANMode)
		}
	}
	if err := s.r.Apply(out); err != nil {
		// Invalid entries are the RIB's bug; the rest was applied.
		s.log.Error("applying learned routes", "op", "apply", "error", err)
	}
}

func (s *Sink) nextHops(nhs []rib.NextHop) []netip.Addr {
	if len(nhs) == 1 {
		a := nhs[0].Addr
		if v, ok := s.one[a]; ok {
			return v
		}
		v := []netip.Addr{a}
		s.one[a] = v
		return v
	}
	v := make([]netip.Addr, len(nhs))
	for i, nh := range nhs {
		v[i] = nh.Addr
	}
	return v
}

// Converged implements rib.Sink.
func (s *Sink) Converged() { s.r.SetConverged() }
