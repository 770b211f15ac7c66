package ipam

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Stats are the allocator's counters since it was created. Benchmarks and
// the agent's status read them; Prometheus reads the same counters.
type Stats struct {
	Allocations      uint64 // addresses handed out (one per family)
	AllocationErrors uint64 // Allocate calls that failed
	Releases         uint64 // addresses released by Release
	Creates          uint64 // block creations sent (claims)
	Updates          uint64 // block updates sent
	Deletes          uint64 // block deletions sent
	Conflicts        uint64 // writes retried: resourceVersion conflicts and lost claims
	LostClaims       uint64 // of which claims lost to another node (create: AlreadyExists)
	Claims           uint64 // blocks claimed
	Borrowed         uint64 // addresses taken from another node's block
}

// Writes is the number of API writes sent.
func (s Stats) Writes() uint64 { return s.Creates + s.Updates + s.Deletes }

type counters struct {
	allocations, allocationErrors, releases atomic.Uint64
	creates, updates, deletes               atomic.Uint64
	conflicts, claims, borrowed             atomic.Uint64
	lostClaims                              atomic.Uint64
}

func (c *counters) stats() Stats {
	return Stats{
		Allocations: c.allocations.Load(), AllocationErrors: c.allocationErrors.Load(), Releases: c.releases.Load(),
		Creates: c.creates.Load(), Updates: c.updates.Load(), Deletes: c.deletes.Load(),
		Conflicts: c.conflicts.Load(), LostClaims: c.lostClaims.Load(), Claims: c.claims.Load(), Borrowed: c.borrowed.Load(),
	}
}

func (c *counters) wrote(op string) {
	switch op {
	case "create":
		c.creates.Add(1)
	case "update":
		c.updates.Add(1)
	case "delete":
		c.deletes.Add(1)
	}
}

// register exposes the counters. A registration error (a second allocator
// on one registry) is returned to the constructor.
func (c *counters) register(r prometheus.Registerer) error {
	counter := func(name, help string, v *atomic.Uint64, labels prometheus.Labels) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "rhizome", Subsystem: "ipam", Name: name, Help: help, ConstLabels: labels,
		}, func() float64 { return float64(v.Load()) })
	}
	cs := []prometheus.Collector{
		counter("allocations_total", "Addresses handed out (one per family).", &c.allocations, nil),
		counter("allocation_errors_total", "Allocate calls that failed.", &c.allocationErrors, nil),
		counter("releases_total", "Addresses released by handle.", &c.releases, nil),
		counter("block_writes_total", "IPAMBlock writes sent to the API server.", &c.creates, prometheus.Labels{"op": "create"}),
		counter("block_writes_total", "IPAMBlock writes sent to the API server.", &c.updates, prometheus.Labels{"op": "update"}),
		counter("block_writes_total", "IPAMBlock writes sent to the API server.", &c.deletes, prometheus.Labels{"op": "delete"}),
		counter("conflicts_total", "IPAMBlock writes retried after a resourceVersion conflict or a lost claim.", &c.conflicts, nil),
		counter("blocks_claimed_total", "Blocks claimed by this node.", &c.claims, nil),
		counter("claims_lost_total", "Block claims lost to another node that created the block first.", &c.lostClaims, nil),
		counter("borrowed_total", "Addresses borrowed from other nodes' blocks.", &c.borrowed, nil),
	}
	for _, col := range cs {
		if err := r.Register(col); err != nil {
			return err
		}
	}
	return nil
}
