package ipam

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rhizome-net/rhizome/ipam/pools"
)

type opKind int

const (
	opAlloc opKind = iota
	opRelease
	opDeleteEmpty
)

// op is one operation queued on a block for its writer.
type op struct {
	kind   opKind
	handle string
	// Allocation only.
	namespace, pod string
	podUID         string
	family         int
	key            string // handle/family, the inflight key
	offset         int    // reserved offset in the block
	entry          *entry
	taken          bool // in a batch being written: no longer cancellable

	done chan struct{} // closed by finish
	res  result
}

type result struct {
	addr  Address
	fresh bool  // written by this op (not found already there)
	retry bool  // pick a block again
	err   error // final failure
}

// finish completes an op; the caller holds a.mu.
func (a *NodeAllocator) finish(o *op, r result) {
	select {
	case <-o.done:
		return // already finished
	default:
	}
	if o.kind == opAlloc {
		if o.entry != nil && o.entry.reserved[o.offset] == o {
			delete(o.entry.reserved, o.offset)
		}
		if a.inflight[o.key] == o {
			delete(a.inflight, o.key)
		}
	}
	o.res = r
	close(o.done)
}

// maxPicks bounds how often one allocation picks a block again (after a
// lost claim or a block deleted under it).
const maxPicks = 64

// Allocate implements Allocator.
func (a *NodeAllocator) Allocate(ctx context.Context, req Request) (res Result, err error) {
	if err := validHandle(req.Handle); err != nil {
		return Result{}, err
	}
	if err := a.waitReady(ctx); err != nil {
		return Result{}, err
	}
	defer func() {
		if err != nil {
			a.c.allocationErrors.Add(1)
		}
	}()
	families, err := a.families(req)
	if err != nil {
		return Result{}, err
	}
	var fresh []string // blocks written by this call, undone on failure
	defer func() {
		if err != nil && len(fresh) > 0 {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if rerr := a.release(rctx, req.Handle, fresh); rerr != nil {
				err = errors.Join(err, fmt.Errorf("undoing the other family's allocation for %s: %w", req.Handle, rerr))
			}
		}
	}()
	for _, fam := range families {
		addr, isNew, err := a.allocateFamily(ctx, req, fam)
		if err != nil {
			return Result{}, err
		}
		if isNew {
			fresh = append(fresh, blockName(addr.Block))
		}
		res.Addresses = append(res.Addresses, addr)
	}
	return res, nil
}

func validHandle(h string) error {
	if h == "" || len(h) > MaxHandleLength {
		return fmt.Errorf("ipam: invalid handle %q: want the container ID and interface joined by a dot, 1-%d characters", h, MaxHandleLength)
	}
	return nil
}

// families returns the families to allocate: those asked for (or every
// family with a pool for this node) plus any the handle already holds.
func (a *NodeAllocator) families(req Request) ([]int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	asked := req.Families
	if len(asked) == 0 {
		asked = []int{4, 6}
	}
	var out []int
	for _, f := range asked {
		if f != 4 && f != 6 {
			return nil, fmt.Errorf("ipam: unknown address family %d; use 4 or 6", f)
		}
		_, held := a.existing(req.Handle, f)
		if held || len(a.pools.ForNode(a.labels, f)) > 0 {
			out = append(out, f)
		} else if len(req.Families) > 0 {
			return nil, fmt.Errorf("ipam: no enabled IPv%d pool selects node %s: %w", f, a.node, ErrNoPool)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("ipam: no enabled IP pool selects node %s (check the pools' nodeSelector, disabled and the node's labels): %w", a.node, ErrNoPool)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func (a *NodeAllocator) allocateFamily(ctx context.Context, req Request, fam int) (Address, bool, error) {
	key := req.Handle + "/" + strconv.Itoa(fam)
	for range maxPicks {
		a.mu.Lock()
		if addr, ok := a.existing(req.Handle, fam); ok {
			a.mu.Unlock()
			return addr, false, nil
		}
		o, own := a.inflight[key], false
		if o == nil {
			var err error
			if o, err = a.enqueueAlloc(req, fam, key); err != nil {
				a.mu.Unlock()
				return Address{}, false, err
			}
			own = true
		}
		a.mu.Unlock()
		select {
		case <-o.done:
		case <-ctx.Done():
			a.cancel(o)
			return Address{}, false, ctx.Err()
		}
		switch {
		case o.res.retry:
			continue
		case o.res.err != nil:
			return Address{}, false, o.res.err
		}
		return o.res.addr, own && o.res.fresh, nil
	}
	return Address{}, false, fmt.Errorf("ipam: allocating IPv%d for %s: no block accepted the allocation after %d attempts", fam, req.Handle, maxPicks)
}

// cancel withdraws an allocation whose caller gave up, if no write of it
// has started; a started write completes and its address stays allocated
// under the handle (released by the caller's Release, or the GC).
func (a *NodeAllocator) cancel(o *op) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if o.taken || o.entry == nil {
		return
	}
	e := o.entry
	if i := slices.Index(e.queue, o); i >= 0 {
		e.queue = slices.Delete(e.queue, i, i+1)
		a.finish(o, result{retry: true})
	}
}

// existing returns the address handle already holds in family fam.
func (a *NodeAllocator) existing(handle string, fam int) (Address, bool) {
	for _, l := range a.handles[handle] {
		if (fam == 4) == l.addr.Is4() {
			if e := a.blocks[l.block]; e != nil {
				return a.address(e, l.addr), true
			}
		}
	}
	return Address{}, false
}

func (a *NodeAllocator) address(e *entry, addr netip.Addr) Address {
	out := Address{Addr: addr, Block: e.prefix, Borrowed: !a.mine(e)}
	if p, ok := a.pools.ForBlock(e.prefix); ok {
		out.Pool = p.Name
	}
	return out
}

// enqueueAlloc picks a block and an offset and queues the allocation: this
// node's blocks first (lowest address first), then a newly claimed block
// (the lowest free one), then, unless strictAffinity is set, a free address
// of another node's block. The caller holds a.mu.
func (a *NodeAllocator) enqueueAlloc(req Request, fam int, key string) (*op, error) {
	if a.releasing[req.Handle] > 0 {
		return nil, fmt.Errorf("ipam: allocating for %s: %w", req.Handle, ErrReleased)
	}
	ps := a.pools.ForNode(a.labels, fam)
	if len(ps) == 0 {
		return nil, fmt.Errorf("ipam: no enabled IPv%d pool selects node %s: %w", fam, a.node, ErrNoPool)
	}
	e, off := a.pick(ps, true)
	if e == nil {
		if e = a.claim(ps); e != nil {
			off = 0
		}
	}
	if e == nil {
		if a.settings.StrictAffinity {
			return nil, exhausted(ps, fmt.Sprintf("no free block left for node %s, and strictAffinity forbids borrowing from other nodes' blocks", a.node))
		}
		if e, off = a.pick(ps, false); e == nil {
			return nil, exhausted(ps, "no free address left in any block")
		}
	}
	o := &op{
		kind: opAlloc, handle: req.Handle, namespace: req.Namespace, pod: req.Pod, podUID: req.PodUID,
		family: fam, key: key, offset: off, entry: e, done: make(chan struct{}),
	}
	e.reserved[off] = o
	e.queue = append(e.queue, o)
	a.inflight[key] = o
	a.kick(e)
	return o, nil
}

func exhausted(ps []pools.Pool, why string) error {
	var names []string
	for _, p := range ps {
		names = append(names, fmt.Sprintf("%s (%v)", p.Name, p.CIDR()))
	}
	word := "pool"
	if len(ps) > 1 {
		word = "pools"
	}
	return fmt.Errorf("ipam: %s %s %w: %s", word, strings.Join(names, ", "), ErrExhausted, why)
}

// pick returns the lowest block with a free offset among this node's blocks
// (mine) or the others' (borrowing), in the given pools.
func (a *NodeAllocator) pick(ps []pools.Pool, mine bool) (*entry, int) {
	for _, e := range a.sorted() {
		if e.deleting || e.shadowedBy != "" || a.mine(e) != mine || (!mine && e.obj == nil) || !inPools(ps, e) {
			continue
		}
		if off := freeOffset(e, nil); off >= 0 {
			return e, off
		}
	}
	return nil, -1
}

func inPools(ps []pools.Pool, e *entry) bool {
	return slices.ContainsFunc(ps, func(p pools.Pool) bool { return p.Layout.Contains(e.prefix) })
}

// freeOffset returns the lowest offset neither allocated in the block nor
// promised to another op (skip may hold its own promise), or -1.
func freeOffset(e *entry, skip *op) int {
	for i, used := range e.used {
		if o := e.reserved[i]; !used && (o == nil || o == skip) {
			return i
		}
	}
	return -1
}

// claim starts claiming the lowest free block of the first pool that has
// one. The block is created by its writer together with the first batch of
// allocations, so a claim costs no write of its own.
//
// After claims lost in a row, the node picks among the lowest 2^losses free
// blocks (at most 256) by a hash of its name and the loss count: with no
// contention that is the lowest free block, as before; when many nodes
// start at once (a cluster created, a node pool scaled up), they spread over
// the free blocks in a few rounds instead of all racing for the same next
// block, which cost one round per node.
func (a *NodeAllocator) claim(ps []pools.Pool) *entry {
	for _, p := range ps {
		var taken []netip.Prefix
		for _, e := range a.sorted() {
			taken = append(taken, e.prefix)
		}
		for _, t := range a.taken {
			taken = append(taken, t)
		}
		blk, ok := p.Layout.NthFree(taken, a.claimOffset())
		if !ok {
			blk, ok = p.Layout.LowestFree(taken)
		}
		if ok {
			e := a.addEntry(blk)
			e.creating = true
			return e
		}
	}
	return nil
}

// claimOffset is which free block (0 = the lowest) the next claim takes.
func (a *NodeAllocator) claimOffset() int {
	if a.claimLosses == 0 {
		return 0
	}
	window := 1 << min(a.claimLosses, 8)
	h := fnv.New32a()
	fmt.Fprintf(h, "%s/%d", a.node, a.claimLosses)
	return int(h.Sum32() % uint32(window))
}

// Release implements Allocator.
func (a *NodeAllocator) Release(ctx context.Context, handle string) error {
	if err := validHandle(handle); err != nil {
		return err
	}
	if err := a.waitReady(ctx); err != nil {
		return err
	}
	return a.release(ctx, handle, nil)
}

// release frees handle's addresses in the given blocks (nil: everywhere).
//
// A Release can race an Allocate of the same handle that is still in
// flight (a runtime that timed out an ADD and sent DEL). It must free what
// that Allocate writes, not leave it allocated for the GC: while a release
// of the handle runs, new allocations for it fail with ErrReleased; an
// allocation still queued is withdrawn (it fails the same way); one whose
// write was already sent is waited for, and what it wrote is then released.
func (a *NodeAllocator) release(ctx context.Context, handle string, only []string) error {
	a.mu.Lock()
	a.releasing[handle]++
	defer func() {
		a.mu.Lock()
		if a.releasing[handle]--; a.releasing[handle] <= 0 {
			delete(a.releasing, handle)
		}
		a.mu.Unlock()
	}()
	for {
		var writing []*op
		for _, o := range a.inflight {
			if o.handle != handle {
				continue
			}
			if o.taken || o.entry == nil {
				writing = append(writing, o)
				continue
			}
			if i := slices.Index(o.entry.queue, o); i >= 0 {
				o.entry.queue = slices.Delete(o.entry.queue, i, i+1)
			}
			a.finish(o, result{err: fmt.Errorf("ipam: allocating for %s: %w", handle, ErrReleased)})
		}
		if len(writing) == 0 {
			break
		}
		a.mu.Unlock()
		for _, o := range writing {
			select {
			case <-o.done:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		a.mu.Lock()
	}
	var ops []*op
	for _, l := range a.handles[handle] {
		e := a.blocks[l.block]
		if e == nil || (only != nil && !slices.Contains(only, l.block)) ||
			slices.ContainsFunc(ops, func(o *op) bool { return o.entry == e }) {
			continue
		}
		o := &op{kind: opRelease, handle: handle, entry: e, done: make(chan struct{})}
		e.queue = append(e.queue, o)
		a.kick(e)
		ops = append(ops, o)
	}
	a.mu.Unlock()
	var errs []error
	for _, o := range ops {
		select {
		case <-o.done:
			if o.res.err != nil {
				errs = append(errs, o.res.err)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return errors.Join(errs...)
}
