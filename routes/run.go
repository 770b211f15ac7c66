package routes

import (
	"context"
	"time"
)

// Timings of the Run loop.
const (
	// settleDelay lets a burst of kernel events (a device deleted takes its
	// routes, neighbours and addresses with it) end before the pass it
	// triggers, so one pass repairs all of it.
	settleDelay = 20 * time.Millisecond
	// retryDelay is the wait before retrying a pass that failed.
	retryDelay = time.Second
)

// Run makes a full pass at once, then whenever the kernel reports a change
// to something we own (a route of ours deleted or altered, a device
// changed), after SetState and SetConverged, and every ResyncInterval. It
// returns when ctx ends, leaving routes, devices and rules in place. Pass
// errors are logged and retried; they do not end Run.
func (r *Reconciler) Run(ctx context.Context) error {
	if r.k.Watcher != nil {
		go func() {
			if err := r.k.Watcher.Watch(ctx, r.onEvents); err != nil && ctx.Err() == nil {
				r.log.Error("kernel event watch ended; drift is repaired by the periodic resync only",
					"op", "watch", "error", err)
			}
		}()
	}
	resync := time.NewTicker(r.cfg.ResyncInterval)
	defer resync.Stop()
	var retry <-chan time.Time
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
		case <-resync.C:
		case <-retry:
		}
		// A trigger that arrived while waiting is served by this pass.
		select {
		case <-r.trigger:
		default:
		}
		retry = nil
		if err := r.pass(); err != nil {
			r.log.Error("route pass failed; retrying", "op", "pass", "error", err)
			retry = time.After(retryDelay)
		}
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

// drifted reports whether one event changes something we own. Called with
// mu held.
func (r *Reconciler) drifted(ev *Event) bool {
	switch ev.Kind {
	case EventOverflow:
		return true
	case EventLink:
		if ev.LinkName == r.cfg.VXLANDevice || ev.LinkName == IPIPDevice || ev.LinkName == r.dev.UnderlayName {
			return true
		}
		l := r.dev.Links
		return ev.LinkIndex != 0 && (ev.LinkIndex == l.Underlay || ev.LinkIndex == l.VXLAN || ev.LinkIndex == l.IPIP)
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
			_, blocked := r.conflicts[p]
			return blocked // the foreign route in our way is gone
		}
		return owned // a route of ours replaced by someone else's
	}
	return false
}
