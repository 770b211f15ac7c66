package burstgc

import (
	"io"
	"log/slog"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

// fakeRuntime records SetGCPercent calls against a settable GOGC.
type fakeRuntime struct {
	gogc int
	live uint64
	sets []int
}

func (f *fakeRuntime) set(p int) int {
	old := f.gogc
	f.gogc = p
	f.sets = append(f.sets, p)
	return old
}

func newFake(cfg Config, gogc int, live uint64) (*Tuner, *fakeRuntime) {
	f := &fakeRuntime{gogc: gogc, live: live}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	t := New(cfg)
	t.setPercent = f.set
	t.liveHeap = func() uint64 { return f.live }
	return t, f
}

func TestBurstPercent(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name       string
		cfg        Config
		gogc       int
		live       uint64
		batch      int
		wantActive bool
		wantGOGC   int // during the burst (or unchanged)
	}{
		{name: "small batch is ignored", cfg: Config{HeapCap: 1024 * mib}, gogc: 100, live: 10 * mib, batch: 10, wantGOGC: 100},
		{name: "large batch raises to Percent", cfg: Config{HeapCap: 1024 * mib}, gogc: 100, live: 10 * mib, batch: 800, wantActive: true, wantGOGC: 400},
		{name: "configured percent", cfg: Config{Percent: 250, HeapCap: 1024 * mib}, gogc: 100, live: 10 * mib, batch: 300, wantActive: true, wantGOGC: 250},
		{name: "heap cap lowers the percent", cfg: Config{HeapCap: 300 * mib}, gogc: 100, live: 100 * mib, batch: 800, wantActive: true, wantGOGC: 200},
		{name: "no room under the cap: unchanged", cfg: Config{HeapCap: 150 * mib}, gogc: 100, live: 100 * mib, batch: 800, wantGOGC: 100},
		{name: "live heap above the cap: unchanged", cfg: Config{HeapCap: 50 * mib}, gogc: 100, live: 100 * mib, batch: 800, wantGOGC: 100},
		{name: "operator's higher GOGC is kept", cfg: Config{HeapCap: 1024 * mib}, gogc: 800, live: 10 * mib, batch: 800, wantGOGC: 800},
		{name: "GOGC=off is left alone", cfg: Config{HeapCap: 1024 * mib}, gogc: -1, live: 10 * mib, batch: 800, wantGOGC: -1},
		{name: "tuner off", cfg: Config{Percent: -1}, gogc: 100, live: 10 * mib, batch: 800, wantGOGC: 100},
		{name: "custom MinBatch", cfg: Config{MinBatch: 1000, HeapCap: 1024 * mib}, gogc: 100, live: 10 * mib, batch: 800, wantGOGC: 100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Quiet = time.Hour
			tu, f := newFake(tc.cfg, tc.gogc, tc.live)
			defer tu.Close()
			tu.ObserveBatch(tc.batch)
			if got := tu.Active(); got != tc.wantActive {
				t.Errorf("Active() = %v, want %v", got, tc.wantActive)
			}
			if f.gogc != tc.wantGOGC {
				t.Errorf("GOGC during the burst = %d, want %d (calls %v)", f.gogc, tc.wantGOGC, f.sets)
			}
			tu.Close()
			if f.gogc != tc.gogc {
				t.Errorf("GOGC after Close = %d, want the original %d", f.gogc, tc.gogc)
			}
		})
	}
}

func TestBurstAdjustsAsHeapGrows(t *testing.T) {
	const mib = 1 << 20
	tu, f := newFake(Config{HeapCap: 600 * mib, Quiet: time.Hour}, 100, 100*mib)
	defer tu.Close()
	tu.ObserveBatch(800)
	if f.gogc != 400 {
		t.Fatalf("GOGC = %d, want 400", f.gogc)
	}
	f.live = 200 * mib
	tu.adjusted = time.Time{} // past the rate limit
	tu.ObserveBatch(800)
	if f.gogc != 200 {
		t.Fatalf("with 200 MiB live under a 600 MiB cap GOGC = %d, want 200", f.gogc)
	}
	f.live = 700 * mib
	tu.adjusted = time.Time{}
	tu.ObserveBatch(800)
	if f.gogc != 100 {
		t.Fatalf("with the live heap above the cap GOGC = %d, want the process's own 100", f.gogc)
	}
}

func TestBurstEndsWhenQuiet(t *testing.T) {
	tu, f := newFake(Config{HeapCap: 1 << 30, Quiet: 30 * time.Millisecond}, 100, 1<<20)
	defer tu.Close()
	tu.ObserveBatch(800)
	if !tu.Active() || f.gogc != 400 {
		t.Fatalf("burst not started: active %v GOGC %d", tu.Active(), f.gogc)
	}
	// Large batches keep it going; small ones do not.
	for range 3 {
		time.Sleep(15 * time.Millisecond)
		tu.ObserveBatch(800)
		tu.ObserveBatch(3)
	}
	waitFor(t, func() bool { return !tu.Active() })
	tu.mu.Lock()
	got := f.gogc
	tu.mu.Unlock()
	if got != 100 {
		t.Fatalf("GOGC after the burst = %d, want 100", got)
	}
	// A second burst starts again and is counted.
	tu.ObserveBatch(800)
	if !tu.Active() || tu.Bursts() != 2 {
		t.Fatalf("second burst: active %v, bursts %d", tu.Active(), tu.Bursts())
	}
}

// TestBurstRealRuntime runs the tuner against the Go runtime itself.
func TestBurstRealRuntime(t *testing.T) {
	runtime.GC() // the live heap is known after a first cycle
	orig := debug.SetGCPercent(100)
	defer debug.SetGCPercent(orig)
	tu := New(Config{HeapCap: 1 << 30, Quiet: 20 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	defer tu.Close()
	tu.ObserveBatch(1000)
	if !tu.Active() {
		t.Fatalf("burst not started (live heap %d bytes)", liveHeap())
	}
	tu.mu.Lock()
	cur := debug.SetGCPercent(-1)
	debug.SetGCPercent(cur)
	tu.mu.Unlock()
	if cur <= 100 {
		t.Fatalf("runtime GOGC during the burst = %d, want above 100", cur)
	}
	waitFor(t, func() bool { return !tu.Active() })
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("runtime GOGC after the burst = %d, want 100", got)
	}
	if liveHeap() == 0 {
		t.Fatal("runtime/metrics reported no live heap")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
