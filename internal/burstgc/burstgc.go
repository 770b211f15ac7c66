// Package burstgc raises the Go garbage collector's target while the agent
// absorbs a burst of routes, and puts it back when the burst is over.
//
// A peer that sends its whole table (a session coming up, a route
// reflector restarting) makes GoBGP and the receive path allocate a few
// hundred bytes per route that die within milliseconds. With the default
// GOGC=100 the heap of an idle agent is small, so the collector runs every
// few megabytes of such garbage: at 100,000 routes it took ~12 % of the
// CPU, on the critical path of installing them (docs/design/0002-routes.md).
// A higher GOGC for the length of the burst trades memory the node has for
// a while against time; keeping it high all the time would trade it
// against the agent's idle footprint, which is what nodes pay for.
//
// The raised target is bounded: the percent is lowered so that the heap
// goal, live heap × (1 + percent/100), stays under HeapCap, and never goes
// below the process's own setting (GOGC). The runtime's memory limit
// (GOMEMLIMIT, which the DaemonSet sets from the container's limit) still
// applies and wins over both.
package burstgc

import (
	"log/slog"
	"math"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// Config tunes a Tuner. The zero value of a field means its default.
type Config struct {
	// Percent is the GOGC used during a burst. Negative turns the tuner
	// off. Default 400.
	Percent int
	// HeapCap bounds the heap goal during a burst, in bytes. Default: half
	// the runtime's memory limit when one is set, else 1 GiB.
	HeapCap uint64
	// MinBatch is the smallest batch (route changes) that starts or extends
	// a burst. Default 256: BGP peers pack several hundred IPv4 prefixes
	// into an UPDATE when they send a table, while day-to-day changes of a
	// cluster (a node's blocks) are a handful.
	MinBatch int
	// Quiet ends a burst when no large batch came for this long. Default 1s.
	Quiet  time.Duration
	Logger *slog.Logger
}

// Defaults of Config.
const (
	DefaultPercent  = 400
	DefaultMinBatch = 256
	DefaultQuiet    = time.Second
	defaultHeapCap  = 1 << 30
	// adjustEvery rate-limits re-reading the live heap during a burst (the
	// heap grows as routes are stored, so the percent that respects
	// HeapCap shrinks).
	adjustEvery = 100 * time.Millisecond
)

// Tuner raises GOGC during bursts. It is safe for concurrent use; Observe
// is cheap for the small batches that do not concern it.
type Tuner struct {
	cfg Config
	log *slog.Logger

	// set/restore the process-wide settings; tests replace them.
	setPercent func(int) int
	liveHeap   func() uint64

	mu        sync.Mutex
	active    bool
	prev      int // the process's own GOGC, restored after the burst
	cur       int
	adjusted  time.Time
	lastLarge time.Time
	timer     *time.Timer

	bursts atomic.Uint64
}

// New returns a Tuner; Observe does nothing when cfg.Percent is negative.
func New(cfg Config) *Tuner {
	if cfg.Percent == 0 {
		cfg.Percent = DefaultPercent
	}
	if cfg.MinBatch <= 0 {
		cfg.MinBatch = DefaultMinBatch
	}
	if cfg.Quiet <= 0 {
		cfg.Quiet = DefaultQuiet
	}
	if cfg.HeapCap == 0 {
		cfg.HeapCap = defaultHeapCap
		if l := debug.SetMemoryLimit(-1); l > 0 && l < math.MaxInt64 {
			cfg.HeapCap = uint64(l) / 2
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Tuner{cfg: cfg, log: cfg.Logger.With("component", "burstgc"), setPercent: debug.SetGCPercent, liveHeap: liveHeap}
}

// ObserveBatch implements agent/ribsink.BatchObserver: n is the number of route
// changes in one batch.
func (t *Tuner) ObserveBatch(n int) {
	if t == nil || t.cfg.Percent < 0 || n < t.cfg.MinBatch {
		return
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lastLarge = now
	if !t.active {
		t.start(now)
		return
	}
	if now.Sub(t.adjusted) >= adjustEvery {
		t.adjust(now)
	}
}

// Bursts returns how many bursts raised the GC target so far.
func (t *Tuner) Bursts() uint64 { return t.bursts.Load() }

// Active reports whether a burst is under way.
func (t *Tuner) Active() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.active
}

// percentFor is the GOGC to use with this much live heap: cfg.Percent,
// lowered to respect HeapCap, never below the process's own.
func (t *Tuner) percentFor(live uint64) int {
	p := t.cfg.Percent
	if live > 0 {
		if t.cfg.HeapCap <= live {
			p = t.prev
		} else if byCap := (t.cfg.HeapCap - live) * 100 / live; byCap < uint64(p) {
			p = int(byCap)
		}
	}
	return max(p, t.prev)
}

// start begins a burst. Called with mu held.
func (t *Tuner) start(now time.Time) {
	// SetGCPercent is the only way to read the current setting.
	t.prev = t.setPercent(t.cfg.Percent)
	live := t.liveHeap()
	if t.prev < 0 || t.percentFor(live) <= t.prev {
		// GOGC=off (the operator runs the collector by GOMEMLIMIT alone),
		// or no room under HeapCap: leave the setting as it was.
		t.setPercent(t.prev)
		return
	}
	if t.cur = t.percentFor(live); t.cur != t.cfg.Percent {
		t.setPercent(t.cur)
	}
	t.active, t.adjusted = true, now
	t.bursts.Add(1)
	t.log.Info("route burst: GC target raised", "op", "burst-start", "gogc", t.cur, "was", t.prev, "live_heap_mib", live>>20)
	if t.timer == nil {
		t.timer = time.AfterFunc(t.cfg.Quiet, t.check)
	} else {
		t.timer.Reset(t.cfg.Quiet)
	}
}

// Close ends a burst under way at once (for a clean shutdown and tests).
func (t *Tuner) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.timer != nil {
		t.timer.Stop()
	}
	if t.active {
		t.setPercent(t.prev)
		t.active = false
	}
}

// adjust lowers (or raises back) the percent as the live heap changes.
// Called with mu held.
func (t *Tuner) adjust(now time.Time) {
	t.adjusted = now
	if p := t.percentFor(t.liveHeap()); p != t.cur {
		t.cur = p
		t.setPercent(p)
	}
}

// check ends the burst after Quiet without a large batch, or waits again.
func (t *Tuner) check() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.active {
		return
	}
	if left := t.cfg.Quiet - time.Since(t.lastLarge); left > 0 {
		t.timer.Reset(left)
		return
	}
	t.setPercent(t.prev)
	t.active = false
	t.log.Info("route burst over: GC target restored", "op", "burst-end", "gogc", t.prev, "live_heap_mib", t.liveHeap()>>20)
}

// liveHeap is the heap marked live by the last collection.
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
