//go:build integration

package lease_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/internal/kubecore"
	"github.com/rhizome-net/rhizome/internal/lease"
	"github.com/rhizome-net/rhizome/test/controlplane"
)

func TestMain(m *testing.M) { controlplane.Main(m) }

// flaky wraps a Leases client; while broken every call fails, as when the
// API server is unreachable from the holder.
type flaky struct {
	kubecore.Leases
	broken atomic.Bool
}

var errCut = errors.New("connection cut by the test")

func (f *flaky) Get(ctx context.Context, name string, o metav1.GetOptions) (*coordinationv1.Lease, error) {
	if f.broken.Load() {
		return nil, errCut
	}
	return f.Leases.Get(ctx, name, o)
}

func (f *flaky) Update(ctx context.Context, l *coordinationv1.Lease, o metav1.UpdateOptions) (*coordinationv1.Lease, error) {
	if f.broken.Load() {
		return nil, errCut
	}
	return f.Leases.Update(ctx, l, o)
}

// candidate runs one elector in a loop and records its terms.
type candidate struct {
	name    string
	leading atomic.Bool
	terms   atomic.Int32
}

func (c *candidate) run(ctx context.Context, t *testing.T, leases kubecore.Leases, leaseName string, live *atomic.Int32, wg *sync.WaitGroup) {
	e, err := lease.New(lease.Config{Leases: leases, Name: leaseName, Identity: c.name,
		Duration: 2 * time.Second, Deadline: 1500 * time.Millisecond, Retry: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			e.Run(ctx, func(ctx context.Context) {
				if n := live.Add(1); n > 1 {
					t.Errorf("%s leads while %d others do", c.name, n-1)
				}
				c.leading.Store(true)
				c.terms.Add(1)
				<-ctx.Done()
				c.leading.Store(false)
				live.Add(-1)
			})
		}
	}()
}

func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

func TestElection(t *testing.T) {
	cp := controlplane.ForTest(t)
	kc, err := kubecore.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	leases := kc.Leases("default")

	t.Run("one leader, handover on release", func(t *testing.T) {
		var live atomic.Int32
		var wg sync.WaitGroup
		ctxA, stopA := context.WithCancel(context.Background())
		ctxB, stopB := context.WithCancel(context.Background())
		defer func() { stopA(); stopB(); wg.Wait() }()
		a, b := &candidate{name: "a"}, &candidate{name: "b"}
		a.run(ctxA, t, leases, "release", &live, &wg)
		waitFor(t, "a leads", 5*time.Second, a.leading.Load)
		b.run(ctxB, t, leases, "release", &live, &wg)
		time.Sleep(3 * time.Second) // longer than the lease: b must still wait
		if b.terms.Load() != 0 {
			t.Fatal("b took the lease while a renewed it")
		}
		stopA()
		d := waitFor(t, "b leads after a released", 5*time.Second, b.leading.Load)
		if d > 1500*time.Millisecond {
			t.Errorf("b took %s to lead after a released the lease; release should spare the 2 s expiry", d)
		}
		l, err := leases.Get(context.Background(), "release", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if *l.Spec.HolderIdentity != "b" || *l.Spec.LeaseTransitions != 1 {
			t.Errorf("lease holder %q transitions %d, want b and 1", *l.Spec.HolderIdentity, *l.Spec.LeaseTransitions)
		}
	})

	t.Run("cut-off leader steps down before another takes over", func(t *testing.T) {
		var live atomic.Int32
		var wg sync.WaitGroup
		ctx, stop := context.WithCancel(context.Background())
		defer func() { stop(); wg.Wait() }()
		cut := &flaky{Leases: leases}
		a, b := &candidate{name: "a"}, &candidate{name: "b"}
		a.run(ctx, t, cut, "expiry", &live, &wg)
		waitFor(t, "a leads", 5*time.Second, a.leading.Load)
		b.run(ctx, t, leases, "expiry", &live, &wg)
		cut.broken.Store(true)
		waitFor(t, "a steps down", 3*time.Second, func() bool { return !a.leading.Load() })
		d := waitFor(t, "b leads after a's lease expired", 6*time.Second, b.leading.Load)
		t.Logf("b led %s after a stepped down", d)
		cut.broken.Store(false)
		time.Sleep(time.Second) // a is back: it must not take the lease from b
		if a.leading.Load() || !b.leading.Load() {
			t.Fatalf("after a's return: a leading %v, b leading %v", a.leading.Load(), b.leading.Load())
		}
	})
}
