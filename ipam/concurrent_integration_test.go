//go:build integration

package ipam_test

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rhizome-net/rhizome/ipam"
)

// TestEightNodesConcurrent runs 8 allocators as 8 nodes, each allocating
// 2,000 addresses with 16 concurrent callers from a pool that is only just
// large enough (16,384 addresses in 256 blocks of 64; each node needs 32
// blocks). Half the nodes restart in the middle, with writes in flight; their
// callers retry with the same handles on the new allocator, as kubelet
// retries CNI ADD. Then: no address twice, none lost, the API server holds
// exactly what the callers were given, and after releasing everything the
// pool is empty.
func TestEightNodesConcurrent(t *testing.T) {
	const nodes, perNode, callers = 8, 2000, 16
	const cidr = "10.102.0.0/18"
	e := newEnv(t)
	e.pool("eight", cidr, 26)
	ctx := ctxFor(t, 6*time.Minute)

	type nodeState struct {
		name    string
		current atomic.Pointer[running]
		got     []netip.Addr
		stats   []ipam.Stats
	}
	ns := make([]*nodeState, nodes)
	for i := range ns {
		n := &nodeState{name: e.node(fmt.Sprintf("eight-n%d", i)), got: make([]netip.Addr, perNode)}
		n.current.Store(e.start(n.name))
		ns[i] = n
	}
	handle := func(node, k int) string { return fmt.Sprintf("n%d-%04d.eth0", node, k) }

	start := time.Now()
	var wg sync.WaitGroup
	for i, n := range ns {
		var next atomic.Int64
		restart := make(chan struct{})
		var once sync.Once
		if i < nodes/2 {
			wg.Add(1)
			go func() { // restart this node when half its addresses are out
				defer wg.Done()
				select {
				case <-restart:
				case <-ctx.Done():
					return
				}
				old := n.current.Load()
				n.stats = append(n.stats, old.Stats())
				old.stop(t)
				n.current.Store(e.start(n.name))
			}()
		}
		for range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					k := int(next.Add(1) - 1)
					if k >= perNode {
						return
					}
					if i < nodes/2 && k == perNode/2 {
						once.Do(func() { close(restart) })
					}
					req := ipam.Request{Handle: handle(i, k), Namespace: "default", Pod: fmt.Sprintf("p%d-%d", i, k)}
					for attempt := 0; ; attempt++ {
						res, err := n.current.Load().Allocate(ctx, req)
						if err == nil {
							n.got[k] = res.Addresses[0].Addr
							break
						}
						if ctx.Err() != nil || attempt > 1000 {
							t.Errorf("node %d: allocating %s: %v", i, req.Handle, err)
							return
						}
						time.Sleep(10 * time.Millisecond) // the node is restarting
					}
				}
			}()
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	if t.Failed() {
		t.FailNow()
	}

	// No duplicate among what callers were given, and exactly that in the
	// API server.
	given := map[netip.Addr]string{}
	for i, n := range ns {
		for k, addr := range n.got {
			if prev, dup := given[addr]; dup {
				t.Fatalf("address %v given to %s and %s", addr, prev, handle(i, k))
			}
			given[addr] = handle(i, k)
		}
	}
	stored := e.allocations(cidr)
	if len(stored) != nodes*perNode {
		t.Errorf("API server holds %d allocations, callers were given %d", len(stored), nodes*perNode)
	}
	for addr, h := range given {
		if al, ok := stored[addr]; !ok || al.Handle != h {
			t.Errorf("address %v given to %s, stored as %+v", addr, h, al)
		}
	}
	var total ipam.Stats
	for i, n := range ns {
		all := append(n.stats, n.current.Load().Stats())
		var s ipam.Stats
		for _, x := range all {
			s.Allocations += x.Allocations
			s.Creates += x.Creates
			s.Updates += x.Updates
			s.Conflicts += x.Conflicts
			s.Claims += x.Claims
		}
		total.Allocations += s.Allocations
		total.Creates += s.Creates
		total.Updates += s.Updates
		total.Conflicts += s.Conflicts
		total.Claims += s.Claims
		blocks := 0
		for _, b := range e.blocks(cidr) {
			if b.Spec.Affinity == n.name {
				blocks++
			}
		}
		t.Logf("node %d: %d blocks, %d claims, %d writes, %d conflicts (restarted: %v)", i, blocks, s.Claims, s.Writes(), s.Conflicts, i < nodes/2)
	}
	t.Logf("%d allocations in %v (%.0f/s): %.3f writes and %.4f conflict retries per allocation",
		nodes*perNode, elapsed.Round(time.Millisecond), float64(nodes*perNode)/elapsed.Seconds(),
		float64(total.Writes())/float64(nodes*perNode), float64(total.Conflicts)/float64(nodes*perNode))
	if total.Claims != 256 {
		t.Errorf("%d blocks claimed, want exactly the pool's 256", total.Claims)
	}

	// Release everything, concurrently, and check the pool is empty.
	start = time.Now()
	for i, n := range ns {
		for c := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := c; k < perNode; k += callers {
					if err := n.current.Load().Release(ctx, handle(i, k)); err != nil {
						t.Errorf("releasing %s: %v", handle(i, k), err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	t.Logf("released %d addresses in %v", nodes*perNode, time.Since(start).Round(time.Millisecond))
	if left := e.allocations(cidr); len(left) != 0 {
		t.Fatalf("%d allocations left after releasing everything", len(left))
	}
}
