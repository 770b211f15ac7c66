//go:build integration

package ipam_test

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/ipam"
	"github.com/rhizome-net/rhizome/ipam/controller"
	"github.com/rhizome-net/rhizome/ipam/manifests"
)

// newController starts the caches of a controller that runs on a fake
// clock; the test drives it with Reconcile.
func (e *env) newController(clk *clocktesting.FakeClock) *controller.Controller {
	e.t.Helper()
	c, err := controller.New(controller.Config{
		Identity: "test-controller", Client: e.rzc, Kube: e.core, Metadata: e.meta, Logger: e.log, Clock: clk,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := c.Start(ctxFor(e.t, 10*time.Minute)); err != nil {
		e.t.Fatal(err)
	}
	return c
}

// reconcileUntil runs passes until cond holds (the controller's caches lag
// the API server by a moment).
func reconcileUntil(t *testing.T, c *controller.Controller, what string, cond func() bool) {
	t.Helper()
	ctx := ctxFor(t, time.Minute)
	waitFor(t, time.Minute, what, func() bool {
		if err := c.Reconcile(ctx); err != nil {
			t.Logf("Reconcile: %v", err)
		}
		return cond()
	})
}

func mustReconcile(t *testing.T, c *controller.Controller) {
	t.Helper()
	if err := c.Reconcile(ctxFor(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
}

// TestGarbageCollection allocates addresses for pods that exist, pods that
// are deleted, a pod that never existed and a pod deleted then re-created,
// and checks that the collector releases exactly the orphans, only after
// seeing them orphaned twice a grace period apart, and never a live pod's
// address however long it runs.
func TestGarbageCollection(t *testing.T) {
	e := newEnv(t)
	e.pool("gc", "10.105.0.0/24", 26)
	node := e.node("gc-n1")
	a := e.start(node)
	ctx := ctxFor(t, 5*time.Minute)
	for _, name := range []string{"gc-live", "gc-gone", "gc-back"} {
		e.pod(name)
	}
	addrOf := map[string]netip.Addr{}
	for _, pod := range []string{"gc-live", "gc-gone", "gc-back", "gc-never"} {
		r, err := a.Allocate(ctx, ipam.Request{Handle: pod + ".eth0", Namespace: "default", Pod: pod})
		if err != nil {
			t.Fatal(err)
		}
		addrOf[pod] = r.Addresses[0].Addr
	}
	// An address without a pod (a node's own address) stays while its node does.
	if _, err := a.Allocate(ctx, ipam.Request{Handle: "node-tunnel." + node}); err != nil {
		t.Fatal(err)
	}
	e.deletePod("gc-gone")
	e.deletePod("gc-back")

	clk := clocktesting.NewFakeClock(time.Now())
	c := e.newController(clk)
	reconcileUntil(t, c, "three orphans (gone, back, never)", func() bool { return c.Stats().Candidates == 3 })
	for range 2 { // again, at once: nothing is released before the grace period
		mustReconcile(t, c)
		if s := c.Stats(); s.Candidates != 3 || s.CandidatesSeen != 3 || s.Releases != 0 {
			t.Fatalf("second sighting at once: %+v", s)
		}
	}
	e.pod("gc-back") // re-created (same name): alive again, forgotten
	reconcileUntil(t, c, "gc-back alive again", func() bool { return c.Stats().Candidates == 2 })

	clk.Step(15*time.Minute - time.Second)
	mustReconcile(t, c)
	if s := c.Stats(); s.Releases != 0 {
		t.Fatalf("released before the grace period: %+v", s)
	}
	clk.Step(2 * time.Second)
	for range 2 {
		mustReconcile(t, c)
		if s := c.Stats(); s.Releases != 2 || s.Candidates != 0 {
			t.Fatalf("after the grace period: %+v", s)
		}
	}
	left := e.allocations("10.105.0.0/24")
	for pod, addr := range addrOf {
		_, held := left[addr]
		if want := pod == "gc-live" || pod == "gc-back"; held != want {
			t.Errorf("%s's address %v held = %v, want %v", pod, addr, held, want)
		}
	}
	if len(left) != 3 {
		t.Errorf("allocations left: %+v", left)
	}
	// Hours later, live pods and the node's address are still untouched.
	for range 4 {
		clk.Step(time.Hour)
		mustReconcile(t, c)
	}
	if got := e.allocations("10.105.0.0/24"); len(got) != 3 || c.Stats().Releases != 2 {
		t.Fatalf("live allocations touched: %+v, %+v", got, c.Stats())
	}
	// The allocator learns of the collector's releases from its cache.
	probe := 0
	waitFor(t, time.Minute, "the allocator to reuse a collected address", func() bool {
		probe++
		h := fmt.Sprintf("reuse-%d.eth0", probe)
		r, err := a.Allocate(ctx, ipam.Request{Handle: h})
		if err != nil {
			t.Fatal(err)
		}
		if r.Addresses[0].Addr == addrOf["gc-gone"] {
			return true
		}
		return a.Release(ctx, h) != nil
	})
}

// TestDeletedNodeBlocks deletes a node with a block that still holds a live
// pod's address: the block loses its affinity after the grace period but
// keeps the address, the node's pod-less address is released, and the block
// is deleted once its last address goes.
func TestDeletedNodeBlocks(t *testing.T) {
	e := newEnv(t)
	e.pool("gone", "10.107.0.0/24", 26)
	node := e.node("gone-n1")
	a := e.start(node)
	ctx := ctxFor(t, 5*time.Minute)
	e.pod("gone-pod")
	if _, err := a.Allocate(ctx, ipam.Request{Handle: "gone-pod.eth0", Namespace: "default", Pod: "gone-pod"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Allocate(ctx, ipam.Request{Handle: "tunnel." + node}); err != nil {
		t.Fatal(err)
	}
	a.stop(t)
	if err := e.kube.CoreV1().Nodes().Delete(ctx, node, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakeClock(time.Now())
	c := e.newController(clk)
	reconcileUntil(t, c, "the node's absence to be seen", func() bool { return c.Stats().Candidates == 1 })
	clk.Step(16 * time.Minute)
	for range 2 {
		mustReconcile(t, c)
	}
	blocks := e.blocks("10.107.0.0/24")
	if len(blocks) != 1 || blocks[0].Spec.Affinity != "" || len(blocks[0].Spec.Allocations) != 1 ||
		blocks[0].Spec.Allocations[0].Pod != "gone-pod" || blocks[0].Status.Borrowed != 1 {
		t.Fatalf("block of the deleted node: %+v", blocks)
	}
	if s := c.Stats(); s.AffinitiesReleased != 1 || s.Releases != 1 {
		t.Fatalf("stats: %+v", s)
	}
	e.deletePod("gone-pod")
	reconcileUntil(t, c, "the pod's absence to be seen", func() bool { return c.Stats().Candidates == 1 })
	clk.Step(16 * time.Minute)
	reconcileUntil(t, c, "the empty unowned block to be deleted", func() bool { return len(e.blocks("10.107.0.0/24")) == 0 })
}

// TestEmptyBlockGrace checks that an emptied block keeps its affinity for
// the grace period and is then released, and that reuse cancels it.
func TestEmptyBlockGrace(t *testing.T) {
	e := newEnv(t)
	e.pool("empty", "10.106.0.0/24", 26)
	clk := clocktesting.NewFakeClock(time.Now())
	a := e.start(e.node("empty-n1"), func(c *ipam.Config) { c.Clock = clk; c.MaintenanceInterval = 24 * time.Hour })
	ctx := ctxFor(t, 2*time.Minute)
	if _, err := a.Allocate(ctx, ipam.Request{Handle: "a.eth0"}); err != nil {
		t.Fatal(err)
	}
	if err := a.Release(ctx, "a.eth0"); err != nil {
		t.Fatal(err)
	}
	release := func(want int) {
		t.Helper()
		n, err := a.ReleaseEmptyBlocks(ctx)
		if err != nil || n != want {
			t.Fatalf("ReleaseEmptyBlocks = %d, %v; want %d", n, err, want)
		}
	}
	clk.Step(9 * time.Minute)
	release(0)
	// Reused within the grace period: the clock starts again when it empties.
	if _, err := a.Allocate(ctx, ipam.Request{Handle: "b.eth0"}); err != nil {
		t.Fatal(err)
	}
	if b := e.blocks("10.106.0.0/24"); len(b) != 1 || b[0].Spec.EmptySince != nil {
		t.Fatalf("reused block: %+v", b)
	}
	if err := a.Release(ctx, "b.eth0"); err != nil {
		t.Fatal(err)
	}
	clk.Step(9 * time.Minute)
	release(0)
	clk.Step(2 * time.Minute)
	release(1)
	release(0)
	if b := e.blocks("10.106.0.0/24"); len(b) != 0 {
		t.Fatalf("blocks after the grace period: %+v", b)
	}
	if s := a.Snapshot(); len(s.Affine) != 0 {
		t.Fatalf("snapshot still shows %v", s.Affine)
	}
	// The next allocation claims a block again.
	if r, err := a.Allocate(ctx, ipam.Request{Handle: "c.eth0"}); err != nil || r.Addresses[0].Addr != netip.MustParseAddr("10.106.0.0") {
		t.Fatalf("after release: %+v, %v", r, err)
	}
}

func condition(p *v1alpha1.IPPool, typ string) string {
	c := meta.FindStatusCondition(p.Status.Conditions, typ)
	if c == nil {
		return "absent"
	}
	return string(c.Status) + "/" + c.Reason
}

func (e *env) getPool(name string) *v1alpha1.IPPool {
	e.t.Helper()
	p, err := e.rz.RhizomeV1alpha1().IPPools().Get(ctxFor(e.t, time.Minute), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// events returns the reasons of the events about a pool.
func (e *env) events(pool string) string {
	e.t.Helper()
	list, err := e.kube.CoreV1().Events(metav1.NamespaceDefault).List(ctxFor(e.t, time.Minute), metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("involvedObject.name", pool).String(),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, ev := range list.Items {
		out = append(out, ev.Reason)
	}
	return strings.Join(out, ",")
}

// TestPoolStatusAndDeletion follows a pool through its life: finalizer,
// status counts and conditions, the 90 % and exhaustion events, a deletion
// refused by the admission policy while addresses are allocated, the
// finalizer holding a deletion that got past a stale status, and the pool
// going once empty.
func TestPoolStatusAndDeletion(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 5*time.Minute)
	if out, err := e.cp.Kubectl(ctx, manifests.IPPoolDeletionPolicy, "apply", "-f", "-"); err != nil {
		t.Fatalf("applying the deletion policy: %v\n%s", err, out)
	}
	t.Cleanup(func() { // the control plane is shared: leave no policy behind
		ctx := ctxFor(t, time.Minute)
		if out, err := e.cp.Kubectl(ctx, manifests.IPPoolDeletionPolicy, "delete", "--ignore-not-found", "-f", "-"); err != nil {
			t.Errorf("removing the deletion policy: %v\n%s", err, out)
		}
	})
	e.pool("life", "10.108.0.0/27", 28)
	node := e.node("life-n1")
	a := e.start(node)
	clk := clocktesting.NewFakeClock(time.Now())
	c := e.newController(clk)

	reconcileUntil(t, c, "finalizer and status", func() bool {
		p := e.getPool("life")
		return len(p.Finalizers) == 1 && p.Status.Blocks == 2 && condition(p, v1alpha1.IPPoolValid) == "True/Valid"
	})
	p := e.getPool("life")
	if p.Finalizers[0] != v1alpha1.IPPoolFinalizer || p.Status.AddressesFree != 32 || condition(p, v1alpha1.IPPoolExhausted) != "False/AddressesFree" {
		t.Fatalf("new pool: %+v", p)
	}
	mustReconcile(t, c) // twice: nothing changes, nothing is written
	if again := e.getPool("life"); again.ResourceVersion != p.ResourceVersion {
		t.Fatalf("idempotent pass wrote the pool: %s -> %s", p.ResourceVersion, again.ResourceVersion)
	}

	alloc := func(from, to int) {
		for i := from; i < to; i++ {
			if _, err := a.Allocate(ctx, ipam.Request{Handle: fmt.Sprintf("life-%d.eth0", i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	alloc(0, 28) // 87.5 %
	reconcileUntil(t, c, "28 in use", func() bool { return e.getPool("life").Status.AddressesInUse == 28 })
	if ev := e.events("life"); strings.Contains(ev, "PoolNearlyFull") {
		t.Fatalf("event below 90%%: %s", ev)
	}
	alloc(28, 29) // 90.6 %
	reconcileUntil(t, c, "29 in use", func() bool { return e.getPool("life").Status.AddressesInUse == 29 })
	waitFor(t, time.Minute, "the 90% event", func() bool { return strings.Contains(e.events("life"), "PoolNearlyFull") })
	alloc(29, 32)
	reconcileUntil(t, c, "exhausted", func() bool {
		p := e.getPool("life")
		return p.Status.AddressesFree == 0 && condition(p, v1alpha1.IPPoolExhausted) == "True/NoFreeAddress"
	})
	waitFor(t, time.Minute, "the exhaustion event", func() bool { return strings.Contains(e.events("life"), "PoolExhausted") })
	if ev := e.events("life"); strings.Count(ev, "PoolNearlyFull") != 1 {
		t.Errorf("events: %s (want one PoolNearlyFull)", ev)
	}

	// Deleting a pool in use is refused, with a message saying what to do.
	// The policy takes effect a moment after it is applied: wait for it with
	// a probe pool whose status claims an allocation.
	probe := 0
	waitFor(t, time.Minute, "the admission policy to take effect", func() bool {
		probe++
		name := fmt.Sprintf("life-probe-%d", probe)
		p := e.pool(name, fmt.Sprintf("10.108.%d.0/24", 100+probe), 26)
		p.Status.AddressesInUse = 1
		if _, err := e.rz.RhizomeV1alpha1().IPPools().UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		return e.rz.RhizomeV1alpha1().IPPools().Delete(ctx, name, metav1.DeleteOptions{}) != nil
	})
	out, err := e.cp.Kubectl(ctx, nil, "delete", "ippool", "life", "--wait=false")
	if err == nil {
		t.Fatalf("deletion of a pool in use accepted: %s", out)
	}
	if !strings.Contains(string(out), "IPPool life still has 32 allocated addresses") {
		t.Fatalf("refusal message: %s", out)
	}

	// A pool whose status lags (a second pool, used before the controller
	// counted it) gets past the policy; the finalizer holds it, disabled.
	e.pool("life2", "10.108.1.0/28", 28)
	reconcileUntil(t, c, "life2's finalizer", func() bool { return len(e.getPool("life2").Finalizers) == 1 })
	if _, err := a.Allocate(ctx, ipam.Request{Handle: "late.eth0"}); err != nil { // life is full: from life2
		t.Fatal(err)
	}
	if err := e.rz.RhizomeV1alpha1().IPPools().Delete(ctx, "life2", metav1.DeleteOptions{}); err != nil {
		t.Fatalf("deleting life2 with a stale status: %v", err)
	}
	reconcileUntil(t, c, "life2's deletion to be blocked", func() bool {
		return condition(e.getPool("life2"), v1alpha1.IPPoolDeletionBlocked) == "True/AddressesAllocated"
	})
	mustReconcile(t, c)
	if p := e.getPool("life2"); p.DeletionTimestamp == nil || len(p.Finalizers) != 1 {
		t.Fatalf("life2 while in use: %+v", p.ObjectMeta)
	}
	waitFor(t, time.Minute, "the allocator to stop using the deleted pool", func() bool {
		return !poolNamed(a.Snapshot(), "life2").Allocatable
	})
	if err := a.Release(ctx, "late.eth0"); err != nil {
		t.Fatal(err)
	}
	reconcileUntil(t, c, "life2 to go", func() bool {
		_, err := e.rz.RhizomeV1alpha1().IPPools().Get(ctx, "life2", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	if b := e.blocks("10.108.1.0/28"); len(b) != 0 {
		t.Fatalf("blocks of the deleted pool remain: %+v", b)
	}

	// Released, counted, deleted.
	for i := range 32 {
		if err := a.Release(ctx, fmt.Sprintf("life-%d.eth0", i)); err != nil {
			t.Fatal(err)
		}
	}
	reconcileUntil(t, c, "life empty", func() bool { return e.getPool("life").Status.AddressesInUse == 0 })
	if out, err := e.cp.Kubectl(ctx, nil, "delete", "ippool", "life", "--wait=false"); err != nil {
		t.Fatalf("deleting the empty pool: %v\n%s", err, out)
	}
	reconcileUntil(t, c, "life to go", func() bool {
		_, err := e.rz.RhizomeV1alpha1().IPPools().Get(ctx, "life", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
}

// TestReleaseByAddress is the operator's path: refused for a live pod
// unless forced, refused for the wrong handle, an error for a free address.
func TestReleaseByAddress(t *testing.T) {
	e := newEnv(t)
	e.pool("byaddr", "10.109.0.0/24", 26)
	a := e.start(e.node("byaddr-n1"))
	ctx := ctxFor(t, 2*time.Minute)
	e.pod("byaddr-pod")
	r, err := a.Allocate(ctx, ipam.Request{Handle: "h1.eth0", Namespace: "default", Pod: "byaddr-pod"})
	if err != nil {
		t.Fatal(err)
	}
	addr := r.Addresses[0].Addr
	_, err = a.ReleaseByAddress(ctx, addr, ipam.ReleaseOptions{})
	if !errors.Is(err, ipam.ErrInUse) || !strings.Contains(err.Error(), "pod default/byaddr-pod still exists") {
		t.Fatalf("release of a live pod's address: %v", err)
	}
	if _, err := a.ReleaseByAddress(ctx, addr, ipam.ReleaseOptions{Force: true, Handle: "other.eth0"}); err == nil ||
		!strings.Contains(err.Error(), "held by handle h1.eth0, not other.eth0") {
		t.Fatalf("release with the wrong handle: %v", err)
	}
	got, err := ipam.ReleaseAddress(ctx, e.rzc, e.core, addr, ipam.ReleaseOptions{Force: true})
	if err != nil || got.Handle != "h1.eth0" || got.Pod != "byaddr-pod" || got.Block != "10-109-0-0-26" {
		t.Fatalf("forced release = %+v, %v", got, err)
	}
	for range 2 {
		if _, err := a.ReleaseByAddress(ctx, addr, ipam.ReleaseOptions{Force: true}); !errors.Is(err, ipam.ErrNotAllocated) {
			t.Fatalf("releasing a free address: %v", err)
		}
	}
	if _, err := a.ReleaseByAddress(ctx, netip.MustParseAddr("192.0.2.1"), ipam.ReleaseOptions{}); !errors.Is(err, ipam.ErrNotAllocated) ||
		!strings.Contains(err.Error(), "no pool or block contains it") {
		t.Fatalf("releasing an address outside every pool: %v", err)
	}
	// The allocator's cache catches up: the handle is gone, the address free.
	waitFor(t, time.Minute, "the allocator to hand the address out again", func() bool {
		r, err := a.Allocate(ctx, ipam.Request{Handle: fmt.Sprintf("h2-%d.eth0", time.Now().UnixNano())})
		return err == nil && r.Addresses[0].Addr == addr
	})
}

// TestLeaderElection runs two allocators that both stand for the cluster-wide
// controllers: exactly one leads, it collects an orphaned address on the real
// clock, and when it stops the other takes over.
func TestLeaderElection(t *testing.T) {
	e := newEnv(t)
	e.pool("elect", "10.110.0.0/24", 26)
	e.ipamConfig(v1alpha1.IPAMConfigurationSpec{GCGracePeriod: &metav1.Duration{Duration: time.Second}})
	withController := func(c *ipam.Config) {
		c.Controller = &ipam.ControllerOptions{Metadata: e.meta, Interval: 500 * time.Millisecond, MinInterval: 200 * time.Millisecond}
	}
	a1 := e.start(e.node("elect-n1"), withController)
	a2 := e.start(e.node("elect-n2"), withController)
	leader := func(a *running) bool { s, _ := a.ControllerStats(); return s.Leader }
	waitFor(t, time.Minute, "a leader", func() bool { return leader(a1) || leader(a2) })
	if leader(a1) && leader(a2) {
		t.Fatal("two leaders")
	}
	first, second := a1, a2
	if leader(a2) {
		first, second = a2, a1
	}
	ctx := ctxFor(t, 2*time.Minute)
	r, err := a1.Allocate(ctx, ipam.Request{Handle: "orphan.eth0", Namespace: "default", Pod: "elect-never-existed"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the leader to collect the orphan", func() bool {
		_, held := e.allocations("10.110.0.0/24")[r.Addresses[0].Addr]
		return !held
	})
	if s, _ := first.ControllerStats(); s.Releases != 1 {
		t.Fatalf("leader's stats: %+v", s)
	}
	first.stop(t) // releases the Lease on the way out
	waitFor(t, time.Minute, "the other agent to take over", func() bool { return leader(second) })
}

// TestInvalidBlockEvent: two overlapping blocks written straight to the API
// server (no admission policy installed here, as in a cluster installed
// without ipam/manifests). The leader records one InvalidBlock event on the
// younger block, once, however many passes run, and none on the older.
func TestInvalidBlockEvent(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, time.Minute)
	older := &v1alpha1.IPAMBlock{ObjectMeta: metav1.ObjectMeta{Name: "10-201-0-0-24"}, Spec: v1alpha1.IPAMBlockSpec{CIDR: "10.201.0.0/24"}}
	if _, err := e.rz.RhizomeV1alpha1().IPAMBlocks().Create(ctx, older, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // creation timestamps have a resolution of one second
	younger := &v1alpha1.IPAMBlock{ObjectMeta: metav1.ObjectMeta{Name: "10-201-0-64-26"}, Spec: v1alpha1.IPAMBlockSpec{CIDR: "10.201.0.64/26"}}
	if _, err := e.rz.RhizomeV1alpha1().IPAMBlocks().Create(ctx, younger, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, n := range []string{older.Name, younger.Name} {
			_ = e.rz.RhizomeV1alpha1().IPAMBlocks().Delete(ctxFor(t, time.Minute), n, metav1.DeleteOptions{})
		}
	})
	c := e.newController(clocktesting.NewFakeClock(time.Now()))
	reconcileUntil(t, c, "InvalidBlock event", func() bool { return e.events(younger.Name) == "InvalidBlock" })
	mustReconcile(t, c)
	mustReconcile(t, c)
	time.Sleep(500 * time.Millisecond) // events are written in the background
	if got := e.events(younger.Name); got != "InvalidBlock" {
		t.Errorf("events on the younger block: %q, want one InvalidBlock", got)
	}
	if got := e.events(older.Name); got != "" {
		t.Errorf("events on the older block: %q, want none", got)
	}
}

// TestGarbageCollectionByPodUID: a pod is deleted and re-created under the
// same name while the runtime never sent DEL for the old sandbox (a node
// that crashed, a runtime that lost its state). The old incarnation's
// address, recorded with the old UID, is freed after the grace period; the
// new incarnation's address is kept.
func TestGarbageCollectionByPodUID(t *testing.T) {
	e := newEnv(t)
	e.pool("gcuid", "10.106.0.0/24", 26)
	node := e.node("gcuid-n1")
	a := e.start(node)
	ctx := ctxFor(t, 5*time.Minute)
	old := e.pod("gcuid-web")
	r1, err := a.Allocate(ctx, ipam.Request{Handle: "sandbox1.eth0", Namespace: "default", Pod: old.Name, PodUID: string(old.UID)})
	if err != nil {
		t.Fatal(err)
	}
	e.deletePod(old.Name)
	waitFor(t, time.Minute, "the old pod gone", func() bool {
		_, err := e.kube.CoreV1().Pods("default").Get(ctx, old.Name, metav1.GetOptions{})
		return err != nil
	})
	cur := e.pod(old.Name)
	if cur.UID == old.UID {
		t.Fatal("re-created pod has the old UID")
	}
	r2, err := a.Allocate(ctx, ipam.Request{Handle: "sandbox2.eth0", Namespace: "default", Pod: cur.Name, PodUID: string(cur.UID)})
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakeClock(time.Now())
	c := e.newController(clk)
	reconcileUntil(t, c, "the old incarnation's address a candidate", func() bool { return c.Stats().Candidates == 1 })
	clk.Step(15*time.Minute + time.Second)
	reconcileUntil(t, c, "the old incarnation's address released", func() bool { return c.Stats().Releases == 1 })
	left := e.allocations("10.106.0.0/24")
	if _, held := left[r1.Addresses[0].Addr]; held {
		t.Errorf("old incarnation's address %v still allocated", r1.Addresses[0].Addr)
	}
	if al, held := left[r2.Addresses[0].Addr]; !held || al.PodUID != string(cur.UID) {
		t.Errorf("new incarnation's address %v: held %v, allocation %+v", r2.Addresses[0].Addr, held, al)
	}
}
