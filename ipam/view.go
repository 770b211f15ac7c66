package ipam

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"net/netip"
	"slices"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/ipam/pools"
)

// Snapshot implements View.
func (a *NodeAllocator) Snapshot() Snapshot {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := Snapshot{Node: a.node, Generation: a.gen}
	select {
	case <-a.ready:
		s.Ready = true
	default:
		return s
	}
	for _, p := range a.pools.All() {
		s.Pools = append(s.Pools, poolInfo(p))
	}
	for _, e := range a.sorted() {
		if e.obj == nil || e.shadowedBy != "" {
			continue // a claim in flight (not a block yet), or another block's addresses
		}
		b := Block{CIDR: e.prefix, Node: e.obj.Spec.Affinity, Allocated: len(e.obj.Spec.Allocations)}
		if p, ok := a.pools.ForBlock(e.prefix); ok {
			b.Pool = p.Name
		}
		s.Blocks = append(s.Blocks, b)
		ours := b.Node == a.node
		if ours {
			s.Affine = append(s.Affine, b)
		}
		for _, al := range e.obj.Spec.Allocations {
			addr, err := netip.ParseAddr(al.Address)
			if err != nil || al.Node == "" || al.Node == b.Node {
				continue
			}
			if s.BorrowedBy == nil {
				s.BorrowedBy = map[netip.Addr]string{}
			}
			s.BorrowedBy[addr] = al.Node
			switch {
			case al.Node == a.node:
				s.Borrowed = append(s.Borrowed, addr)
			case ours:
				s.Lent = append(s.Lent, addr)
				if s.LentTo == nil {
					s.LentTo = map[netip.Addr]string{}
				}
				s.LentTo[addr] = al.Node
			}
		}
	}
	slices.SortFunc(s.Borrowed, netip.Addr.Compare)
	return s
}

// registerInvalid exposes how many blocks the allocator ignores, by reason.
func (a *NodeAllocator) registerInvalid(r prometheus.Registerer) error {
	count := func(reason string, f func() int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "rhizome", Subsystem: "ipam", Name: "invalid_blocks",
			Help:        "IPAMBlocks this agent ignores (neither allocates from nor routes): malformed (cidr, size, name) or overlapping an older block.",
			ConstLabels: prometheus.Labels{"reason": reason},
		}, func() float64 {
			a.mu.Lock()
			defer a.mu.Unlock()
			return float64(f())
		})
	}
	pools := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "rhizome", Subsystem: "ipam", Name: "invalid_pools",
		Help: "IPPools this agent ignores (no allocation, no tunnel, no route through them): a spec the CRD's rules refuse, or a cidr overlapping an older pool. The IPPool's Valid condition and an InvalidPool Event say why.",
	}, func() float64 {
		a.mu.Lock()
		defer a.mu.Unlock()
		return float64(len(a.pools.Invalid))
	})
	for _, c := range []prometheus.Collector{
		count("malformed", func() int { return len(a.invalid) }),
		count("overlap", func() int { a.sorted(); return a.shadowed }),
		pools,
	} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func poolInfo(p pools.Pool) Pool {
	return Pool{
		Name: p.Name, CIDR: p.CIDR(), BlockBits: p.Layout.BlockBits(), Allocatable: p.Allocatable(),
		NATOutgoing: p.NATOutgoing, DisableBGPExport: p.DisableBGPExport, IPIPMode: p.IPIPMode, VXLANMode: p.VXLANMode,
	}
}

// Subscribe implements View.
func (a *NodeAllocator) Subscribe() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	ch := make(chan struct{}, 1)
	a.subs = append(a.subs, ch)
	ch <- struct{}{} // compute once at start
	return ch
}

// signal tells every subscriber that the snapshot changed. The caller holds
// a.mu; sends never block, bursts collapse into one signal. Before the
// caches are synced nobody hears of it: the view is not ready, and the
// initial list of a large cluster would wake a subscriber once per block
// (the agent made ~400 passes that found nothing ready at 5,000 nodes,
// design 0018); Run signals once when it is.
func (a *NodeAllocator) signal() {
	a.gen++
	select {
	case <-a.ready:
	default:
		return
	}
	for _, ch := range a.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// routingChanged reports whether a new version of a block changes the
// snapshot: its existence, affinity, or the addresses held by other nodes
// than its owner. Allocations of the owner's own pods do not, so a burst of
// pod starts does not wake the routing side.
func routingChanged(old, new *v1alpha1.IPAMBlock) bool {
	if old == nil || new == nil || old.Spec.Affinity != new.Spec.Affinity {
		return true
	}
	return !slices.Equal(foreign(old), foreign(new))
}

func foreign(b *v1alpha1.IPAMBlock) []string {
	var out []string
	for _, al := range b.Spec.Allocations {
		if al.Node != "" && al.Node != b.Spec.Affinity {
			out = append(out, al.Address+"@"+al.Node)
		}
	}
	slices.Sort(out)
	return out
}

// ReleaseEmptyBlocks deletes this node's blocks that have held no address
// for the empty-block grace period, and returns how many it deleted. Run
// calls it periodically; each delete is conditional on the block being
// unchanged since it was seen empty.
func (a *NodeAllocator) ReleaseEmptyBlocks(ctx context.Context) (int, error) {
	if err := a.waitReady(ctx); err != nil {
		return 0, err
	}
	a.mu.Lock()
	now := a.clock.Now()
	grace := a.settings.EmptyBlockGracePeriod
	var ops []*op
	for _, e := range a.sorted() {
		if e.obj == nil || e.creating || e.deleting || e.obj.Spec.Affinity != a.node ||
			len(e.obj.Spec.Allocations) > 0 || len(e.reserved) > 0 || len(e.queue) > 0 {
			continue
		}
		since := e.obj.CreationTimestamp.Time
		if e.obj.Spec.EmptySince != nil {
			since = e.obj.Spec.EmptySince.Time
		}
		if now.Sub(since) < grace {
			continue
		}
		o := &op{kind: opDeleteEmpty, entry: e, done: make(chan struct{})}
		e.queue = append(e.queue, o)
		a.kick(e)
		ops = append(ops, o)
	}
	a.mu.Unlock()
	n := 0
	for _, o := range ops {
		select {
		case <-o.done:
			if o.res.fresh {
				n++
			}
		case <-ctx.Done():
			return n, ctx.Err()
		}
	}
	return n, nil
}
