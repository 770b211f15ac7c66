package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/ipam/blockmath"
	"github.com/rhizome-net/rhizome/ipam/store"
)

// Each block has at most one writer goroutine. It takes every operation
// queued on the block so far, applies them all to the newest version it
// holds and sends one create, update or delete with that version's
// resourceVersion. Operations queued meanwhile wait for the next round: under
// load, one write carries many allocations.

// linger is how long a writer waits for more operations before a write when
// its previous write carried several: callers that just got their answer
// and ask again then share one write instead of alternating between a write
// of one and a write of the rest. A lone sequential caller never waits.
const linger = time.Millisecond

// maxTransientRetries bounds the retries of a write that failed for a
// reason other than a conflict (API server overloaded or unreachable).
const maxTransientRetries = 5

type writeKind int

const (
	wCreate writeKind = iota
	wUpdate
	wDelete
)

// write is one request to send for a batch.
type write struct {
	kind     writeKind
	obj      *v1alpha1.IPAMBlock
	ops      []*op // finished when the write succeeds
	addrs    map[*op]netip.Addr
	released int
}

func blockName(p netip.Prefix) string { return blockmath.Name(p) }

// kick starts the block's writer if it has work and none runs. The caller
// holds a.mu.
func (a *NodeAllocator) kick(e *entry) {
	if e.writing || len(e.queue) == 0 {
		return
	}
	if a.stopped {
		for _, o := range e.queue {
			a.finish(o, result{err: errors.New("ipam: allocator stopped")})
		}
		e.queue = nil
		if e.creating && e.obj == nil {
			a.removeEntry(e)
		}
		return
	}
	e.writing = true
	a.wg.Add(1)
	go a.writeLoop(e)
}

func (a *NodeAllocator) writeLoop(e *entry) {
	defer a.wg.Done()
	transient, conflicts := 0, 0
	lingered := false
	a.mu.Lock()
	defer a.mu.Unlock()
	for {
		if err := a.runCtx.Err(); err != nil {
			for _, o := range e.queue {
				a.finish(o, result{err: fmt.Errorf("ipam: allocator stopped: %w", err)})
			}
			e.queue = nil
		}
		if len(e.queue) == 0 || a.blocks[e.name] != e {
			e.writing = false
			return
		}
		if e.creating && e.obj != nil {
			// The cache shows the block before our create was sent:
			// another node claimed it. No write was wasted.
			a.lostClaim(e)
			return
		}
		if !lingered && len(e.queue) < e.lastBatch {
			lingered = true
			a.mu.Unlock()
			time.Sleep(linger)
			a.mu.Lock()
			continue
		}
		lingered = false
		batch := e.queue
		e.queue = nil
		for _, o := range batch {
			o.taken = true
		}
		w := a.build(e, batch)
		if w == nil {
			continue
		}
		e.lastBatch = len(w.ops)
		a.mu.Unlock()
		out, err := a.send(w)
		a.mu.Lock()
		switch {
		case err == nil:
			transient, conflicts = 0, 0
			a.applied(e, w, out)
		case w.kind == wCreate && apierrors.IsAlreadyExists(err):
			// Another node claimed the block first: pick again.
			a.c.conflicts.Add(1)
			a.c.lostClaims.Add(1)
			a.claimLosses++
			a.requeue(e, batch)
			a.lostClaim(e)
			return
		case w.kind == wDelete:
			// The block changed (or vanished): it is not ours to delete
			// any more; the next maintenance pass looks again.
			e.deleting = false
			for _, o := range w.ops {
				a.finish(o, result{})
			}
			if apierrors.IsNotFound(err) {
				a.removeEntry(e)
			}
		case apierrors.IsConflict(err) && conflicts < store.MaxAttempts:
			a.c.conflicts.Add(1)
			conflicts++
			a.requeue(e, batch)
			a.mu.Unlock()
			fresh, gerr := a.refresh(e, conflicts-1)
			a.mu.Lock()
			switch {
			case apierrors.IsNotFound(gerr):
				a.removeEntry(e)
			case gerr != nil:
				a.fail(e, fmt.Errorf("ipam: re-reading block %s after a conflict: %w", e.name, gerr))
			default:
				a.setObj(e, fresh)
			}
		case apierrors.IsNotFound(err):
			// Deleted under us (by the GC of a node's blocks, say).
			a.requeue(e, batch)
			a.removeEntry(e)
		case store.Retriable(err) && transient < maxTransientRetries:
			transient++
			a.requeue(e, batch)
			a.mu.Unlock()
			berr := store.Backoff(a.runCtx, transient+3)
			a.mu.Lock()
			if berr != nil {
				a.fail(e, fmt.Errorf("ipam: writing block %s: %w", e.name, err))
			}
		default:
			a.requeue(e, batch)
			a.fail(e, fmt.Errorf("ipam: writing block %s: %w", e.name, err))
		}
	}
}

// requeue puts a batch back in front of the queue, cancellable again.
func (a *NodeAllocator) requeue(e *entry, batch []*op) {
	var keep []*op
	for _, o := range batch {
		select {
		case <-o.done:
		default:
			o.taken = false
			keep = append(keep, o)
		}
	}
	e.queue = append(keep, e.queue...)
}

// fail finishes every queued op of the block with err. A claim that failed
// is forgotten.
func (a *NodeAllocator) fail(e *entry, err error) {
	for _, o := range e.queue {
		a.finish(o, result{err: err})
	}
	e.queue = nil
	if e.creating && e.obj == nil {
		a.removeEntry(e)
	}
	e.creating = false
}

func (a *NodeAllocator) lostClaim(e *entry) {
	a.taken[e.name] = e.prefix
	for _, o := range e.queue {
		a.finish(o, result{retry: true})
	}
	e.queue = nil
	e.creating = false
	e.writing = false
	if e.obj == nil {
		a.removeEntry(e)
	} else {
		clear(e.reserved)
	}
}

// refresh reads the block live after a conflict, after a jittered pause
// that spreads writers which collided.
func (a *NodeAllocator) refresh(e *entry, attempt int) (*v1alpha1.IPAMBlock, error) {
	if err := store.Backoff(a.runCtx, attempt); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(a.runCtx, 30*time.Second)
	defer cancel()
	return a.cfg.Client.IPAMBlocks().Get(ctx, e.name, metav1.GetOptions{})
}

// send performs one write.
func (a *NodeAllocator) send(w *write) (*v1alpha1.IPAMBlock, error) {
	ctx, cancel := context.WithTimeout(a.runCtx, 30*time.Second)
	defer cancel()
	blocks := a.cfg.Client.IPAMBlocks()
	switch w.kind {
	case wCreate:
		a.c.wrote("create")
		return blocks.Create(ctx, w.obj, metav1.CreateOptions{})
	case wUpdate:
		a.c.wrote("update")
		return blocks.Update(ctx, w.obj, metav1.UpdateOptions{})
	default:
		a.c.wrote("delete")
		rv, uid := w.obj.ResourceVersion, w.obj.UID
		return nil, blocks.Delete(ctx, w.obj.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv, UID: &uid}})
	}
}

// build turns a batch into one write, finishing at once the ops that need
// none (an allocation already present, a release of an absent handle, a
// delete that no longer applies). It returns nil when nothing is to be
// written. The caller holds a.mu.
func (a *NodeAllocator) build(e *entry, batch []*op) *write {
	var deletes, rest []*op
	for _, o := range batch {
		if o.kind == opDeleteEmpty {
			deletes = append(deletes, o)
		} else {
			rest = append(rest, o)
		}
	}
	if len(rest) == 0 {
		return a.buildDelete(e, deletes)
	}
	for _, o := range deletes { // the block is in use again
		a.finish(o, result{})
	}
	if e.obj == nil {
		// A claim: create the block empty, and let the allocations follow
		// in the next write. An empty create is the cheapest write there
		// is and shows up in other nodes' caches soonest, so a claim lost
		// to a node that went for the same block wastes little.
		a.requeue(e, rest)
		obj := &v1alpha1.IPAMBlock{
			ObjectMeta: metav1.ObjectMeta{Name: e.name},
			Spec:       v1alpha1.IPAMBlockSpec{CIDR: e.prefix.String(), Affinity: a.node},
		}
		store.StampEmpty(obj, a.clock.Now())
		return &write{kind: wCreate, obj: obj}
	}
	w := &write{kind: wUpdate, addrs: map[*op]netip.Addr{}, obj: e.obj.DeepCopy()}
	occupied := slices.Clone(e.used)
	changed := false
	for _, o := range rest {
		switch o.kind {
		case opRelease:
			if n := store.RemoveHandle(w.obj, o.handle, a.node); n > 0 {
				w.released += n
				changed = true
			}
			w.ops = append(w.ops, o)
		case opAlloc:
			if addr, ok := handleIn(w.obj, o.handle, o.family); ok {
				// Written before (a response lost, or a duplicate).
				a.finish(o, result{addr: a.address(e, addr)})
				continue
			}
			if occupied[o.offset] {
				// Someone else took the promised address: promise another.
				delete(e.reserved, o.offset)
				o.offset = freeOffset(&entry{used: occupied, reserved: e.reserved}, o)
				if o.offset < 0 {
					a.finish(o, result{retry: true})
					continue
				}
				e.reserved[o.offset] = o
			}
			occupied[o.offset] = true
			addr, _ := blockmath.Nth(e.prefix, o.offset)
			w.obj.Spec.Allocations = append(w.obj.Spec.Allocations, v1alpha1.IPAMAllocation{
				Address: addr.String(), Handle: o.handle, Namespace: o.namespace, Pod: o.pod, PodUID: o.podUID, Node: a.node,
			})
			w.addrs[o] = addr
			w.ops = append(w.ops, o)
			changed = true
		}
	}
	if !changed {
		for _, o := range w.ops {
			a.finish(o, result{})
		}
		return nil
	}
	slices.SortFunc(w.obj.Spec.Allocations, func(x, y v1alpha1.IPAMAllocation) int {
		return netip.MustParseAddr(x.Address).Compare(netip.MustParseAddr(y.Address))
	})
	store.StampEmpty(w.obj, a.clock.Now())
	store.Summarize(w.obj)
	return w
}

func (a *NodeAllocator) buildDelete(e *entry, ops []*op) *write {
	if e.obj == nil || e.creating || len(e.obj.Spec.Allocations) > 0 || len(e.reserved) > 0 ||
		e.obj.Spec.Affinity != a.node {
		for _, o := range ops {
			a.finish(o, result{})
		}
		return nil
	}
	e.deleting = true
	return &write{kind: wDelete, obj: e.obj, ops: ops}
}

func handleIn(b *v1alpha1.IPAMBlock, handle string, fam int) (netip.Addr, bool) {
	for _, al := range b.Spec.Allocations {
		if al.Handle == handle {
			if addr, err := netip.ParseAddr(al.Address); err == nil && addr.Is4() == (fam == 4) {
				return addr, true
			}
		}
	}
	return netip.Addr{}, false
}

// applied records a successful write and finishes its ops.
func (a *NodeAllocator) applied(e *entry, w *write, out *v1alpha1.IPAMBlock) {
	if w.kind == wDelete {
		a.log.Info("released empty block", "op", "release-block", "block", e.name)
		for _, o := range w.ops {
			a.finish(o, result{fresh: true})
		}
		e.deleting = false
		a.removeEntry(e)
		return
	}
	if w.kind == wCreate {
		e.creating = false
		a.claimLosses = 0
		a.c.claims.Add(1)
		a.log.Info("claimed block", "op", "claim", "block", e.name)
	}
	a.setObj(e, out)
	a.c.releases.Add(uint64(w.released))
	for _, o := range w.ops {
		if o.kind != opAlloc {
			a.finish(o, result{})
			continue
		}
		addr := a.address(e, w.addrs[o])
		a.c.allocations.Add(1)
		if addr.Borrowed {
			a.c.borrowed.Add(1)
		}
		a.finish(o, result{addr: addr, fresh: true})
	}
}
