package routes

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
)

// This file sends plans to the kernel: synchronously for full passes,
// through the write queue for Apply.

// execute performs a plan whose effect is already recorded in r.owned,
// synchronously, and corrects r.owned for what failed. Called with mu held
// (by a pass, with the write queue empty).
func (r *Reconciler) execute(pl *plan) {
	r.noteFailures(pl, r.write(pl))
}

// writeResult is what the kernel refused of a plan.
type writeResult struct {
	failed  []RouteError
	opFails []string // operations whose whole write failed
	unknown bool     // replies lost: only a full pass knows the outcome
}

// write sends a plan to the kernel: deletions, then creations, then
// replacements. It needs no lock: the Table serializes itself.
func (r *Reconciler) write(pl *plan) writeResult {
	var res writeResult
	do := func(op string, rs []Route, fn func([]Route) error) {
		if len(rs) == 0 {
			return
		}
		r.m.writes.WithLabelValues(op).Add(float64(len(rs)))
		err := fn(rs)
		if err == nil {
			return
		}
		var we *WriteError
		if !errors.As(err, &we) {
			we = &WriteError{Op: op, Err: err}
		}
		if we.Err != nil {
			res.unknown = true
			res.opFails = append(res.opFails, op)
		}
		res.failed = append(res.failed, we.Failed...)
	}
	do("delete", pl.del, r.k.Table.Delete)
	do("create", pl.create, r.k.Table.Create)
	do("replace", pl.replace, r.k.Table.Replace)
	return res
}

// noteFailures corrects r.owned for the routes the kernel refused, records
// their errors and conflicts, and asks for a full pass if the outcome of a
// write is unknown. A failed route whose prefix a later plan has changed
// meanwhile (asynchronous writes) is left to that plan. Called with mu held.
func (r *Reconciler) noteFailures(pl *plan, res writeResult) {
	for _, op := range res.opFails {
		r.m.errors.WithLabelValues(op).Inc()
	}
	if len(res.failed) > 0 {
		kind := make(map[netip.Prefix]string, len(res.failed))
		prev := map[netip.Prefix]Route{}
		for _, d := range pl.del {
			kind[d.Dst] = "delete"
		}
		for _, c := range pl.create {
			kind[c.Dst] = "create"
		}
		for i, c := range pl.replace {
			kind[c.Dst] = "replace"
			prev[c.Dst] = pl.prev[i]
		}
		for _, f := range res.failed {
			p := f.Route.Dst
			cur, owned := r.owned[p]
			switch kind[p] {
			case "delete":
				if errors.Is(f.Err, syscall.ESRCH) || owned {
					continue // already gone; or wanted again since
				}
				r.owned[p] = f.Route
				r.routeErrs[p] = fmt.Errorf("deleting route %s: %w", p, f.Err)
				r.failedWrites++
			case "create":
				if !owned || !cur.Equal(f.Route) {
					continue
				}
				delete(r.owned, p)
				if errors.Is(f.Err, syscall.EEXIST) {
					// Someone else's route holds the key: never overwrite it.
					if _, known := r.conflicts[p]; !known {
						r.log.Warn("a route of another protocol holds the prefix; leaving it alone",
							"op", "create", "prefix", p)
					}
					r.conflicts[p] = struct{}{}
					continue
				}
				r.routeErrs[p] = fmt.Errorf("creating route %s: %w", f.Route, f.Err)
				r.failedWrites++
			case "replace":
				if !owned || !cur.Equal(f.Route) {
					continue
				}
				if old := prev[p]; old.Dst.IsValid() {
					r.owned[p] = old // the kernel kept the old route
				} else {
					delete(r.owned, p)
				}
				r.routeErrs[p] = fmt.Errorf("replacing route %s: %w", f.Route, f.Err)
				r.failedWrites++
			}
			r.m.errors.WithLabelValues(kind[p]).Inc()
		}
	}
	for _, c := range pl.create {
		if cur, ok := r.owned[c.Dst]; ok && cur.Equal(c) {
			delete(r.conflicts, c.Dst)
		}
	}
	for _, c := range pl.replace {
		if cur, ok := r.owned[c.Dst]; ok && cur.Equal(c) {
			delete(r.conflicts, c.Dst)
		}
	}
	r.m.programmed.Set(float64(len(r.owned)))
	if res.unknown {
		r.Trigger() // outcome unknown: the next pass lists and repairs
	} else if r.failedWrites > 0 {
		// Refused writes are retried by a pass within seconds (Run backs
		// off), not at the next resync.
		select {
		case r.retrySoon <- struct{}{}:
		default:
		}
	}
}

// writeFailures is the number of routes the kernel refused since the last
// pass began.
func (r *Reconciler) writeFailures() int {
	r.mu.Lock()
	defer r.unlock()
	return r.failedWrites
}

// The write queue. Apply computes its plan under mu (so plans are ordered
// like the state changes that made them) and queues it; one writer
// goroutine sends the plans to the kernel in order, without holding mu.
// The kernel does a route write's work inside the system call, in the
// writer's thread, so BGP parsing, path selection and compiling the next
// batch overlap with it. A pass first waits for the queue to drain.
const maxQueuedPlans = 8

// enqueue queues a plan for the writer. Called with mu held.
func (r *Reconciler) enqueue(pl *plan) {
	r.wqMu.Lock()
	r.wq = append(r.wq, pl)
	r.wqCond.Broadcast()
	if !r.writerUp {
		r.writerUp = true
		go r.writer()
	}
	r.wqMu.Unlock()
}

// writer sends queued plans to the kernel, in order, until Close.
func (r *Reconciler) writer() {
	r.wqMu.Lock()
	for {
		for len(r.wq) == 0 && !r.closed {
			r.wqCond.Wait()
		}
		if len(r.wq) == 0 && r.closed {
			r.wqMu.Unlock()
			return
		}
		pl := r.wq[0]
		r.writing = true
		r.wqMu.Unlock()
		res := r.write(pl)
		if len(res.failed) > 0 || res.unknown {
			r.mu.Lock()
			r.noteFailures(pl, res)
			r.unlock()
		}
		r.wqMu.Lock()
		r.wq[0] = nil
		r.wq = r.wq[1:]
		r.writing = false
		r.wqCond.Broadcast()
	}
}

// backpressure makes Apply wait while too many plans are queued, so that a
// fast BGP peer cannot grow the queue without bound. Called without mu.
func (r *Reconciler) backpressure() {
	r.wqMu.Lock()
	for len(r.wq) > maxQueuedPlans && !r.closed {
		r.wqCond.Wait()
	}
	r.wqMu.Unlock()
}

// WaitWritten returns when every route change queued by Apply so far has
// been sent to the kernel (and its failures recorded in Status).
func (r *Reconciler) WaitWritten() {
	r.wqMu.Lock()
	for (len(r.wq) > 0 || r.writing) && !r.closed {
		r.wqCond.Wait()
	}
	r.wqMu.Unlock()
}

// lockIdle takes mu with the write queue empty: a pass lists the kernel
// and must not race with queued writes.
func (r *Reconciler) lockIdle() {
	for {
		r.WaitWritten()
		r.mu.Lock()
		r.wqMu.Lock()
		idle := len(r.wq) == 0 && !r.writing
		r.wqMu.Unlock()
		if idle {
			return
		}
		r.unlock()
	}
}
