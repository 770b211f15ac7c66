//go:build integration

package ipam_test

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/ipam"
	"github.com/rhizome-net/rhizome/ipam/blockmath"
)

// Run with, for example:
//
//	go test -tags integration -run '^$' -bench . -benchtime 2000x ./ipam/
//
// Each iteration is one allocation per allocating node: EightNodes with
// 2000x makes 16,000 allocations. OneOfEight runs eight agents of which one
// allocates: the fair single-node reference for an 8-node cluster, where the
// other agents watch the blocks all the same. The figures that matter are the custom metrics:
// allocs/s (all nodes together), writes/alloc (IPAMBlock POST/PUT/DELETE
// requests that reached the API server, counted by the client transport) and
// conflicts/alloc (writes retried after a resourceVersion conflict or a lost
// claim). RawUpdate is the reference: back-to-back compare-and-swap updates of
// one 64-address block, the API server's write rate for this object shape on
// the same machine in the same run.

var benchRun atomic.Int64

func BenchmarkIPAM(b *testing.B) {
	b.Run("RawUpdate", benchRawUpdate)
	for _, c := range []struct {
		name                   string
		nodes, active, callers int
	}{
		{"OneNode/callers=1", 1, 1, 1},
		{"OneNode/callers=4", 1, 1, 4},
		{"OneNode/callers=16", 1, 1, 16},
		// One node allocating while seven other agents run and watch, as
		// in an 8-node cluster: the API server sends every block change
		// to 8 watchers, and on this one machine the 8 agents' decoding
		// shares the 2 cores with it.
		{"OneOfEight/callers=16", 8, 1, 16},
		{"EightNodes/callers=16", 8, 8, 16},
	} {
		b.Run(c.name, func(b *testing.B) { benchAllocate(b, c.nodes, c.active, c.callers) })
	}
}

// benchRawUpdate rewrites one block holding 64 allocations, b.N times in a
// row, each update with the resourceVersion of the previous response.
func benchRawUpdate(b *testing.B) {
	e := newEnv(b)
	ctx := ctxFor(b, 10*time.Minute)
	run := benchRun.Add(1)
	blk := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(run), 0}), 26)
	obj := &v1alpha1.IPAMBlock{ObjectMeta: metav1.ObjectMeta{Name: blockmath.Name(blk)}, Spec: v1alpha1.IPAMBlockSpec{CIDR: blk.String(), Affinity: "bench"}}
	for i := range 64 {
		addr, _ := blockmath.Nth(blk, i)
		obj.Spec.Allocations = append(obj.Spec.Allocations, v1alpha1.IPAMAllocation{
			Address: addr.String(), Handle: fmt.Sprintf("%064d.eth0", i), Namespace: "default", Pod: fmt.Sprintf("pod-%d", i), Node: "bench",
		})
	}
	blocks := e.rz.RhizomeV1alpha1().IPAMBlocks()
	cur, err := blocks.Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = blocks.Delete(ctx, cur.Name, metav1.DeleteOptions{}) }()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		cur.Status.Borrowed = int32(i % 2) // a change, so that every update is a real write
		if cur, err = blocks.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "writes/s")
}

// benchAllocate runs nodes allocators; the first active ones each make b.N
// allocations with callers concurrent callers.
func benchAllocate(b *testing.B, nodes, active, callers int) {
	run := benchRun.Add(1)
	e := newEnv(b)
	e.label = fmt.Sprintf("bench-%d", run) // one label per run: b.N runs do not share pools
	cidr := fmt.Sprintf("10.%d.0.0/16", 130+run)
	e.pool(fmt.Sprintf("bench-%d", run), cidr, 26)
	if active*b.N > 65536 {
		b.Fatalf("%d allocations do not fit the /16 pool", active*b.N)
	}
	ctx := ctxFor(b, 20*time.Minute)
	as := make([]*running, nodes)
	for i := range as {
		as[i] = e.start(e.node(fmt.Sprintf("bench-%d-n%d", run, i)))
	}
	handle := func(node, k int) string { return fmt.Sprintf("b%d-n%d-%06d.eth0", run, node, k) }
	writes0 := e.writes.Load()

	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i, a := range as[:active] {
		var next atomic.Int64
		for range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := int(next.Add(1) - 1); k < b.N; k = int(next.Add(1) - 1) {
					if _, err := a.Allocate(ctx, ipam.Request{Handle: handle(i, k), Namespace: "bench", Pod: handle(i, k)}); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()

	total := float64(active * b.N)
	var conflicts, lost uint64
	for _, a := range as {
		conflicts += a.Stats().Conflicts
		lost += a.Stats().LostClaims
	}
	b.ReportMetric(float64(lost)/total, "lostclaims/alloc")
	b.ReportMetric(total/elapsed.Seconds(), "allocs/s")
	b.ReportMetric(float64(e.writes.Load()-writes0)/total, "writes/alloc")
	b.ReportMetric(float64(conflicts)/total, "conflicts/alloc")
	if got := len(e.allocations(cidr)); got != int(total) {
		b.Fatalf("%d allocations stored, %d made", got, int(total))
	}
	for _, a := range as {
		a.stop(b)
	}
}
