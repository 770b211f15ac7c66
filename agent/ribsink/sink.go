// Package ribsink is the glue between the receive side of BGP (bgp/rib)
// and the kernel route programmer (routes): Sink implements rib.Sink on a
// routes.Reconciler, so that every batch the RIB selects reaches the kernel
// through the Reconciler's batched path, and the RIB's convergence releases
// the routes adopted at startup.
//
// It lives with the agent, which wires the two parts together, so that
// neither part imports the other: routes knows nothing of BGP, and bgp
// nothing of the kernel. It adds no decision of its own: the RIB decides
// which next hops a prefix has, the route programmer how to reach them
// (the encapsulation, from the IP pool containing the prefix). The
// route-install benchmark (test/bench) uses it too, so that it times
// exactly the agent's receive path.
package ribsink

import (
	"log/slog"

	"github.com/rhizome-net/rhizome/bgp/rib"
	"github.com/rhizome-net/rhizome/routes"
)

// Applier is the part of *routes.Reconciler the sink uses.
type Applier interface {
	// Apply changes the remote routes; invalid entries are skipped and
	// named in the error, the rest is applied.
	Apply(b routes.Batch) error
	// SetConverged lets the route programmer delete routes nobody wants.
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
}

var _ rib.Sink = (*Sink)(nil)

// New returns a Sink feeding r; obs, when not nil, sees every batch size.
func New(r Applier, obs BatchObserver, log *slog.Logger) *Sink {
	if log == nil {
		log = slog.Default()
	}
	return &Sink{r: r, obs: obs, log: log.With("component", "routes-sink")}
}

// ApplyRoutes implements rib.Sink: the RIB's batch becomes one
// routes.Batch. The next-hop slices are handed over as they are: the RIB
// shares one slice between the routes with the same single next hop, and
// neither side modifies them.
func (s *Sink) ApplyRoutes(b rib.Batch) {
	if s.obs != nil {
		s.obs.ObserveBatch(len(b.Set) + len(b.Withdraw))
	}
	out := routes.Batch{Upserts: make([]routes.RemoteRoute, len(b.Set)), Withdrawals: b.Withdraw}
	for i := range b.Set {
		out.Upserts[i] = routes.RemoteRoute{Prefix: b.Set[i].Prefix, NextHops: b.Set[i].NextHops}
	}
	if err := s.r.Apply(out); err != nil {
		// Invalid entries are the RIB's bug; the rest was applied.
		s.log.Error("applying learned routes", "op", "apply", "error", err)
	}
}

// Converged implements rib.Sink.
func (s *Sink) Converged() { s.r.SetConverged() }
