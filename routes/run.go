package routes

import (
	"context"
	"net/netip"
	"time"
)

// Timings of the Run loop.
const (
	// settleDelay lets a burst of kernel events (a device deleted takes its
	// routes, neighbours and addresses with it) end before the pass it
	// triggers, so one pass repairs all of it.
	settleDelay = 20 * time.Millisecond
	// retryMin and retryMax bound the backoff between passes retried
	// because a write or a pass failed: a route the kernel refused is tried
	// again within seconds, not at the next resync, and a failure that
	// persists costs a pass every half minute at most.
	retryMin = time.Second
	retryMax = 30 * time.Second
)

// Run makes a full pass at once, then whenever the kernel reports a change
// to something we own (a route of ours deleted or altered, a device
// changed, a route or address our next hops resolve through), after
// SetState and SetConverged, and every ResyncInterval. A pass that failed,
// or left routes the kernel refused, is retried with backoff (1 s
// doubling to 30 s). It returns when ctx ends, leaving routes, devices and
// rules in place. Pass errors are logged and retried; they do not end Run.
func (r *Reconciler) Run(ctx context.Context) error {
	if r.k.Watcher != nil {
		go r.watch(ctx)
	}
	resync := time.NewTicker(r.cfg.ResyncInterval)
	defer resync.Stop()
	var retry <-chan time.Time
	backoff := retryMin
	r.Trigger()
	for {
		select {
		case <-ctx.Done():
			r.log.Info("stopping; routes stay in place", "op", "stop")
			return nil
		case <-r.trigger:
			select {
			case <-time.After(settleDelay):
			case <-ctx.Done():
				continue
			}
		case <-r.retrySoon:
			// A write outside a pass failed (Apply's queue): retry it
			// with the backoff, not at once.
			if retry == nil {
				retry = time.After(backoff)
			}
			continue
		case <-resync.C:
		case <-retry:
		}
		// A trigger that arrived while waiting is served by this pass.
		select {
		case <-r.trigger:
		default:
		}
		retry = nil
		err := r.pass()
		failing := r.writeFailures()
		switch {
		case err != nil:
			r.log.Error("route pass failed; retrying", "op", "pass", "error", err, "retryIn", backoff)
		case failing > 0:
			r.log.Warn("routes the kernel refused; retrying", "op", "pass", "routes", failing, "retryIn", backoff)
		}
		if err != nil || failing > 0 {
			retry = time.After(backoff)
			backoff = min(2*backoff, retryMax)
		} else {
			backoff = retryMin
		}
	}
}

// watch runs the kernel event watch until ctx ends, restarting it when it
// fails: a dead watch would leave drift to the periodic resync. Events
// lost while it was down are covered by a full pass after each restart.
func (r *Reconciler) watch(ctx context.Context) {
	backoff := retryMin
	for ctx.Err() == nil {
		start := time.Now()
		err := r.k.Watcher.Watch(ctx, r.onEvents)
		if ctx.Err() != nil {
			return
		}
		r.m.watchRestarts.Inc()
		if time.Since(start) > time.Minute {
			backoff = retryMin
		}
		r.log.Error("kernel event watch ended; restarting it (a full pass covers what it missed)",
			"op", "watch", "error", err, "retryIn", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, retryMax)
		r.Trigger()
	}
}

// onEvents queues kernel notifications and judges them when the state
// lock is free. It never waits for the lock: while Apply or a pass holds it
// (writing, possibly 100k routes), the watcher must keep draining its
// socket, or the kernel drops notifications (ENOBUFS) and a needless full
// pass follows. Whoever holds the lock judges the queue before releasing
// it (unlock). Our own writes echo back as notifications too; they match
// r.owned and are ignored.
func (r *Reconciler) onEvents(evs []Event) {
	r.evMu.Lock()
	r.evq = append(r.evq, evs...)
	r.evMu.Unlock()
	if r.mu.TryLock() {
		r.unlock()
	}
}

// unlock judges the queued events, then releases mu, then triggers a pass
// if they showed drift.
func (r *Reconciler) unlock() {
	need := false
	for {
		r.evMu.Lock()
		q := r.evq
		r.evq = r.evSpare[:0]
		r.evMu.Unlock()
		if len(q) == 0 {
			break
		}
		for i := range q {
			if !need && r.drifted(&q[i]) {
				need = true
			}
			q[i] = Event{}
		}
		r.evSpare = q[:0]
	}
	r.mu.Unlock()
	if need {
		r.m.driftEvents.Inc()
		r.Trigger()
	}
	// Events queued after the loop above and before Unlock, whose sender
	// found the lock taken, are judged now.
	r.evMu.Lock()
	pending := len(r.evq) > 0
	r.evMu.Unlock()
	if pending && r.mu.TryLock() {
		r.unlock()
	}
}

// drifted reports whether one event changes something we own, or how our
// next hops are reached. Called with mu held; it may record a conflict.
func (r *Reconciler) drifted(ev *Event) bool {
	switch ev.Kind {
	case EventOverflow:
		return true
	case EventLink:
		if ev.LinkName == r.cfg.VXLANDevice || ev.LinkName == IPIPDevice || ev.LinkName == r.dev.UnderlayName {
			return true
		}
		l := r.dev.Links
		if ev.LinkIndex != 0 && (ev.LinkIndex == l.Underlay || ev.LinkIndex == l.VXLAN || ev.LinkIndex == l.IPIP) {
			return true
		}
		// A link that a resolved next hop leaves through went up, down or
		// away; or a link went away that may have taken a foreign route
		// holding one of our keys with it (the kernel does not report
		// IPv4 routes removed with their device).
		return ev.LinkIndex != 0 && r.comp.resolvedThrough(netip.Prefix{}, ev.LinkIndex) ||
			ev.Deleted && len(r.conflicts) > 0
	case EventNeigh:
		return ev.LinkIndex != 0 && ev.LinkIndex == r.dev.Links.VXLAN
	case EventRoute:
		if ev.Table != uint32(r.cfg.Table) {
			return false
		}
		p := ev.Route.Dst
		have, owned := r.owned[p]
		if ev.Protocol == uint8(r.cfg.Protocol) {
			if ev.Deleted {
				return owned // ours, deleted by someone else
			}
			return !owned || !have.Equal(ev.Route)
		}
		if ev.Deleted {
			if _, blocked := r.conflicts[p]; blocked {
				return true // the foreign route in our way is gone
			}
			return r.comp.resolvedThrough(p, 0) // a route our next hops went through
		}
		if owned {
			// A route of another protocol took the key of ours: a pod's
			// own route written over a learned one, or a route replaced
			// by hand. It wins; we hold the key again when it goes.
			delete(r.owned, p)
			if _, known := r.conflicts[p]; !known {
				r.log.Warn("a route of another protocol replaced ours; leaving it alone", "op", "drift", "prefix", p, "protocol", ev.Protocol)
			}
			r.conflicts[p] = struct{}{}
			return false
		}
		return r.comp.resolvedThrough(p, 0) // a new or changed route towards our next hops
	}
	return false
}
