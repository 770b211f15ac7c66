package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/rhizome-net/rhizome/ipam/blockmath"
	"github.com/rhizome-net/rhizome/ipam/pools"
)

// TB is the part of testing.TB the fake uses to fail a test on misuse, so
// that this file does not link package testing into the binaries that
// import ipam (the agent's must not: cmd/rhizome-agent/deps_test.go).
type TB interface {
	Helper()
	Errorf(format string, args ...any)
}

// Fake is a stateful, in-memory Allocator and View for the unit tests of
// other packages (the agent's pass and its local API backend). It
// follows the real allocator's rules — idempotent handles, lowest free block
// and address, borrowing from other nodes' blocks when no block is free,
// "pool … exhausted" errors — and fails the test on misuse (an invalid handle,
// a Release while an Allocate of the same handle runs). Build other nodes'
// blocks and loans with AddBlock and Lend.
type Fake struct {
	t    TB
	node string

	mu       sync.Mutex
	strict   bool
	notReady bool
	layouts  []blockmath.Layout
	// pools are the routing attributes of each layout's pool, same order.
	pools []Pool
	// invalid marks the pools SetPool gave a spec the real view ignores
	// (pools.From): left out of the snapshot and of allocation.
	invalid map[netip.Prefix]bool
	blocks  map[netip.Prefix]*fakeBlock
	handles map[string][]netip.Addr
	busy    map[string]bool
	failing error
	subs    []chan struct{}
	gen     uint64
}

type fakeBlock struct {
	node   string
	holder map[netip.Addr]fakeAlloc
}

type fakeAlloc struct{ handle, node string }

// NewFake returns a Fake for node, with IPv4 pools in /26 blocks and IPv6
// pools in /122 blocks, each named after its CIDR, allocatable, without
// encapsulation or natOutgoing (SetPool changes that).
func NewFake(t TB, node string, poolCIDRs ...netip.Prefix) *Fake {
	f := &Fake{t: t, node: node, blocks: map[netip.Prefix]*fakeBlock{}, handles: map[string][]netip.Addr{}, busy: map[string]bool{}}
	for _, p := range poolCIDRs {
		bits := 26
		if p.Addr().Is6() {
			bits = 122
		}
		l, err := blockmath.NewLayout(p, bits)
		if err != nil {
			t.Helper()
			t.Errorf("ipam.NewFake: pool %v: %v", p, err)
			continue
		}
		f.layouts = append(f.layouts, l)
		f.pools = append(f.pools, Pool{Name: p.String(), CIDR: p, BlockBits: bits, Allocatable: true})
	}
	return f
}

var _ Allocator = (*Fake)(nil)
var _ View = (*Fake)(nil)

// SetStrictAffinity forbids borrowing, as the IPAMConfiguration field does.
func (f *Fake) SetStrictAffinity(strict bool) { f.mu.Lock(); f.strict = strict; f.mu.Unlock() }

// SetPool changes one pool's attributes (name, encapsulation modes,
// natOutgoing, disableBGPExport, allocatable), as an edit of the IPPool
// would, and signals the subscribers. Its CIDR names it; the block size
// cannot change (the API refuses that edit). Encapsulation the real view
// refuses (an unknown mode, both enabled, IPIP on IPv6) makes the pool
// invalid, as there: it leaves the snapshot and takes no allocation until
// a valid SetPool.
func (f *Fake) SetPool(p Pool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.pools {
		if f.pools[i].CIDR != p.CIDR {
			continue
		}
		if p.BlockBits != 0 && p.BlockBits != f.pools[i].BlockBits {
			f.t.Helper()
			f.t.Errorf("ipam.Fake: SetPool(%v): the block size cannot change", p.CIDR)
			return
		}
		p.BlockBits = f.pools[i].BlockBits
		f.pools[i] = p
		if f.invalid == nil {
			f.invalid = map[netip.Prefix]bool{}
		}
		_, _, err := pools.EncapModes(p.IPIPMode, p.VXLANMode, p.CIDR)
		f.invalid[p.CIDR] = err != nil
		f.signal()
		return
	}
	f.t.Helper()
	f.t.Errorf("ipam.Fake: SetPool(%v): no such pool", p.CIDR)
}

// SetReady sets whether the fake's caches have synced (true from the
// start). While not ready, Snapshot says so and holds nothing else, as
// the real view does before its first sync; the allocator still works.
func (f *Fake) SetReady(ready bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.notReady = !ready
	f.signal()
}

// FailWith makes every following call fail with err (nil: work again), to
// test callers' error paths (an API server that is down).
func (f *Fake) FailWith(err error) { f.mu.Lock(); f.failing = err; f.mu.Unlock() }

// AddBlock records a block owned by another node (or by this one).
func (f *Fake) AddBlock(block netip.Prefix, node string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.blocks[block]; ok {
		f.t.Errorf("ipam.Fake: AddBlock(%v): block exists", block)
		return
	}
	f.blocks[block] = &fakeBlock{node: node, holder: map[netip.Addr]fakeAlloc{}}
	f.signal()
}

// MoveBlock gives another node's block (or one of this node's) to node,
// as a new claim after the old owner let it go would: its allocations
// stay.
func (f *Fake) MoveBlock(block netip.Prefix, node string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.blocks[block]
	if !ok {
		f.t.Errorf("ipam.Fake: MoveBlock(%v): no such block", block)
		return
	}
	b.node = node
	f.signal()
}

// Lend records that another node's pod holds addr of one of this node's
// blocks (as the other node borrowing it would).
func (f *Fake) Lend(addr netip.Addr, node, handle string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for p, b := range f.blocks {
		if p.Contains(addr) {
			if _, taken := b.holder[addr]; taken {
				f.t.Errorf("ipam.Fake: Lend(%v): address is allocated", addr)
				return
			}
			b.holder[addr] = fakeAlloc{handle: handle, node: node}
			f.signal()
			return
		}
	}
	f.t.Errorf("ipam.Fake: Lend(%v): no block holds it; AddBlock first", addr)
}

// Allocations returns the addresses held by each handle of this node.
func (f *Fake) Allocations() map[string][]netip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string][]netip.Addr{}
	for h, as := range f.handles {
		out[h] = slices.Clone(as)
	}
	return out
}

// Allocate implements Allocator.
func (f *Fake) Allocate(ctx context.Context, req Request) (Result, error) {
	if err := f.enter(req.Handle); err != nil {
		return Result{}, err
	}
	defer f.leave(req.Handle)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(ctx); err != nil {
		return Result{}, err
	}
	fams := req.Families
	if len(fams) == 0 {
		fams = []int{4, 6}
	}
	var res Result
	var fresh []netip.Addr
	for _, fam := range fams {
		var ls []blockmath.Layout
		for i, l := range f.layouts {
			if l.Pool().Addr().Is4() == (fam == 4) && f.pools[i].Allocatable && !f.invalid[l.Pool()] {
				ls = append(ls, l)
			}
		}
		if len(ls) == 0 {
			if len(req.Families) > 0 {
				return Result{}, fmt.Errorf("ipam: no enabled IPv%d pool selects node %s: %w", fam, f.node, ErrNoPool)
			}
			continue
		}
		held := len(f.handles[req.Handle])
		addr, err := f.allocate(req.Handle, ls)
		if err != nil {
			for _, a := range fresh { // undo this call's other family
				f.dropAddr(req.Handle, a)
			}
			return Result{}, err
		}
		if len(f.handles[req.Handle]) > held {
			fresh = append(fresh, addr.Addr)
		}
		res.Addresses = append(res.Addresses, addr)
	}
	if len(res.Addresses) == 0 {
		return Result{}, fmt.Errorf("ipam: no enabled IP pool selects node %s: %w", f.node, ErrNoPool)
	}
	f.signal()
	return res, nil
}

func (f *Fake) allocate(handle string, ls []blockmath.Layout) (Address, error) {
	for _, a := range f.handles[handle] {
		if a.Is4() == ls[0].Pool().Addr().Is4() {
			return f.address(a), nil
		}
	}
	try := func(mine bool) (Address, bool) {
		for _, p := range f.sortedBlocks() {
			b := f.blocks[p]
			if (b.node == f.node) != mine || !slices.ContainsFunc(ls, func(l blockmath.Layout) bool { return l.Contains(p) }) {
				continue
			}
			for i := 0; ; i++ {
				addr, ok := blockmath.Nth(p, i)
				if !ok {
					break
				}
				if _, taken := b.holder[addr]; !taken {
					b.holder[addr] = fakeAlloc{handle: handle, node: f.node}
					f.handles[handle] = append(f.handles[handle], addr)
					return f.address(addr), true
				}
			}
		}
		return Address{}, false
	}
	if a, ok := try(true); ok {
		return a, nil
	}
	for _, l := range ls {
		if blk, ok := l.LowestFree(f.sortedBlocks()); ok {
			f.blocks[blk] = &fakeBlock{node: f.node, holder: map[netip.Addr]fakeAlloc{}}
			a, _ := try(true)
			return a, nil
		}
	}
	if f.strict {
		return Address{}, fmt.Errorf("ipam: pool %v %w: no free block left for node %s, and strictAffinity forbids borrowing", ls[0].Pool(), ErrExhausted, f.node)
	}
	if a, ok := try(false); ok {
		return a, nil
	}
	return Address{}, fmt.Errorf("ipam: pool %v %w: no free address left in any block", ls[0].Pool(), ErrExhausted)
}

func (f *Fake) address(addr netip.Addr) Address {
	for p, b := range f.blocks {
		if p.Contains(addr) {
			return Address{Addr: addr, Block: p, Borrowed: b.node != f.node}
		}
	}
	return Address{Addr: addr}
}

func (f *Fake) sortedBlocks() []netip.Prefix {
	var out []netip.Prefix
	for p := range f.blocks {
		out = append(out, p)
	}
	slices.SortFunc(out, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
	return out
}

// Release implements Allocator.
func (f *Fake) Release(ctx context.Context, handle string) error {
	if err := f.enter(handle); err != nil {
		return err
	}
	defer f.leave(handle)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(ctx); err != nil {
		return err
	}
	f.releaseLocked(handle)
	f.signal()
	return nil
}

func (f *Fake) dropAddr(handle string, addr netip.Addr) {
	for p, b := range f.blocks {
		if p.Contains(addr) {
			delete(b.holder, addr)
		}
	}
	f.handles[handle] = slices.DeleteFunc(f.handles[handle], func(a netip.Addr) bool { return a == addr })
	if len(f.handles[handle]) == 0 {
		delete(f.handles, handle)
	}
}

func (f *Fake) releaseLocked(handle string) {
	for _, addr := range f.handles[handle] {
		for p, b := range f.blocks {
			if p.Contains(addr) {
				delete(b.holder, addr)
			}
		}
	}
	delete(f.handles, handle)
}

// ReleaseByAddress implements Allocator. The fake has no pods, so Force
// changes nothing.
func (f *Fake) ReleaseByAddress(ctx context.Context, addr netip.Addr, opts ReleaseOptions) (Released, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check(ctx); err != nil {
		return Released{}, err
	}
	for p, b := range f.blocks {
		al, ok := b.holder[addr]
		if !ok {
			continue
		}
		if opts.Handle != "" && opts.Handle != al.handle {
			return Released{}, fmt.Errorf("ipam: releasing %v: held by handle %s, not %s", addr, al.handle, opts.Handle)
		}
		delete(b.holder, addr)
		f.handles[al.handle] = slices.DeleteFunc(f.handles[al.handle], func(a netip.Addr) bool { return a == addr })
		f.signal()
		return Released{Addr: addr, Block: blockmath.Name(p), Handle: al.handle, Node: al.node}, nil
	}
	return Released{}, fmt.Errorf("ipam: releasing %v: %w", addr, ErrNotAllocated)
}

// Handles returns, sorted, the handles holding addresses of this node, as
// NodeAllocator.Handles does.
func (f *Fake) Handles() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.handles))
	for h := range f.handles {
		out = append(out, h)
	}
	slices.Sort(out)
	return out
}

// HandleAddresses returns the addresses the handle holds, sorted, as
// NodeAllocator.HandleAddresses does.
func (f *Fake) HandleAddresses(handle string) []netip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := slices.Clone(f.handles[handle])
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// Snapshot implements View.
func (f *Fake) Snapshot() Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := Snapshot{Node: f.node, Ready: !f.notReady, Generation: f.gen}
	if f.notReady {
		return s
	}
	for _, p := range f.pools {
		if !f.invalid[p.CIDR] {
			s.Pools = append(s.Pools, p)
		}
	}
	for _, p := range f.sortedBlocks() {
		b := f.blocks[p]
		blk := Block{CIDR: p, Node: b.node, Allocated: len(b.holder)}
		for i, l := range f.layouts {
			if l.Contains(p) && !f.invalid[l.Pool()] {
				blk.Pool = f.pools[i].Name
			}
		}
		s.Blocks = append(s.Blocks, blk)
		if b.node == f.node {
			s.Affine = append(s.Affine, blk)
		}
		var addrs []netip.Addr
		for a := range b.holder {
			addrs = append(addrs, a)
		}
		slices.SortFunc(addrs, netip.Addr.Compare)
		for _, a := range addrs {
			if al := b.holder[a]; al.node != "" && al.node != b.node {
				if s.BorrowedBy == nil {
					s.BorrowedBy = map[netip.Addr]string{}
				}
				s.BorrowedBy[a] = al.node
			}
			switch al := b.holder[a]; {
			case b.node != f.node && al.node == f.node:
				s.Borrowed = append(s.Borrowed, a)
			case b.node == f.node && al.node != f.node:
				s.Lent = append(s.Lent, a)
				if s.LentTo == nil {
					s.LentTo = map[netip.Addr]string{}
				}
				s.LentTo[a] = al.node
			}
		}
	}
	return s
}

// Subscribe implements View.
func (f *Fake) Subscribe() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan struct{}, 1)
	ch <- struct{}{}
	f.subs = append(f.subs, ch)
	return ch
}

func (f *Fake) signal() {
	f.gen++
	for _, ch := range f.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (f *Fake) check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return f.failing
}

// enter marks a handle busy; two concurrent calls for one handle are a
// caller bug (CNI serializes ADD and DEL of one container).
func (f *Fake) enter(handle string) error {
	if err := validHandle(handle); err != nil {
		f.t.Errorf("ipam.Fake: %v", err)
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.busy[handle] {
		f.t.Errorf("ipam.Fake: concurrent calls for handle %s", handle)
		return fmt.Errorf("ipam.Fake: concurrent calls for handle %s", handle)
	}
	f.busy[handle] = true
	return nil
}

func (f *Fake) leave(handle string) {
	f.mu.Lock()
	delete(f.busy, handle)
	f.mu.Unlock()
}
