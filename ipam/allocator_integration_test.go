//go:build integration

package ipam_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/ipam"
)

// TestAllocateRelease covers one node with IPv4 and IPv6 pools: one address
// of each family, idempotent allocation and release, and the block objects
// the API server ends up with.
func TestAllocateRelease(t *testing.T) {
	e := newEnv(t)
	e.pool("basic-v4", "10.101.0.0/24", 26)
	e.pool("basic-v6", "fd00:101::/120", 122)
	node := e.node("basic-n1")
	a := e.start(node)
	ctx := ctxFor(t, 2*time.Minute)

	req := ipam.Request{Handle: "c0ffee.eth0", Namespace: "default", Pod: "web-0"}
	first, err := a.Allocate(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.101.0.0", "fd00:101::"}
	if got := addrs(first); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("addresses = %v, want %v (lowest address of the lowest block, IPv4 first)", got, want)
	}
	for _, ad := range first.Addresses {
		if ad.Borrowed || !ad.Block.Contains(ad.Addr) || !strings.HasPrefix(ad.Pool, "basic-") {
			t.Errorf("address %+v", ad)
		}
	}
	// Twice: the same handle gets the same addresses, nothing is written.
	writes := a.Stats().Writes()
	for range 2 {
		again, err := a.Allocate(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(addrs(again)) != fmt.Sprint(want) {
			t.Fatalf("second Allocate = %v, want %v", addrs(again), want)
		}
	}
	if w := a.Stats().Writes(); w != writes {
		t.Errorf("idempotent Allocate wrote %d times", w-writes)
	}
	// A second pod gets the next addresses; a family can be asked for alone.
	second, err := a.Allocate(ctx, ipam.Request{Handle: "beef.eth0", Namespace: "default", Pod: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	if got := addrs(second); fmt.Sprint(got) != "[10.101.0.1 fd00:101::1]" {
		t.Errorf("second pod = %v", got)
	}
	only6, err := a.Allocate(ctx, ipam.Request{Handle: "v6only.eth0", Families: []int{6}})
	if err != nil || len(only6.Addresses) != 1 || !only6.Addresses[0].Addr.Is6() {
		t.Fatalf("IPv6-only request = %+v, %v", only6, err)
	}

	// The API server holds what was handed out, with the pod attributes.
	got := e.allocations("10.101.0.0/24")
	al, ok := got[netip.MustParseAddr("10.101.0.0")]
	if len(got) != 2 || !ok || al.Handle != "c0ffee.eth0" || al.Pod != "web-0" || al.Namespace != "default" || al.Node != node {
		t.Fatalf("IPv4 allocations = %+v", got)
	}
	blocks := e.blocks("10.101.0.0/24")
	if len(blocks) != 1 || blocks[0].Name != "10-101-0-0-26" || blocks[0].Spec.Affinity != node || blocks[0].Status.Allocated != 2 {
		t.Fatalf("blocks = %+v", blocks)
	}
	if b6 := e.blocks("fd00:101::/120"); len(b6) != 1 || b6[0].Name != "fd00-101---122" {
		t.Fatalf("IPv6 blocks = %+v", b6)
	}

	// Release, twice: the second finds nothing and succeeds.
	for range 2 {
		if err := a.Release(ctx, "c0ffee.eth0"); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Release(ctx, "never-allocated.eth0"); err != nil {
		t.Fatalf("releasing an unknown handle: %v", err)
	}
	if got := e.allocations("10.101.0.0/24"); len(got) != 1 {
		t.Fatalf("after release: %+v", got)
	}
	// The freed address is the lowest free one again.
	third, err := a.Allocate(ctx, ipam.Request{Handle: "f00d.eth0", Families: []int{4}})
	if err != nil || third.Addresses[0].Addr != netip.MustParseAddr("10.101.0.0") {
		t.Fatalf("reuse = %+v, %v", third, err)
	}
	for _, h := range []string{"beef.eth0", "v6only.eth0", "f00d.eth0"} {
		if err := a.Release(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	blocks = e.blocks("10.101.0.0/24")
	if len(blocks) != 1 || len(blocks[0].Spec.Allocations) != 0 || blocks[0].Spec.EmptySince == nil {
		t.Fatalf("emptied block keeps its affinity with emptySince set: %+v", blocks)
	}

	// Bad input gets a clear error.
	if _, err := a.Allocate(ctx, ipam.Request{}); err == nil || !strings.Contains(err.Error(), "invalid handle") {
		t.Errorf("empty handle: %v", err)
	}
	if _, err := a.Allocate(ctx, ipam.Request{Handle: "x.eth0", Families: []int{5}}); err == nil || !strings.Contains(err.Error(), "unknown address family 5") {
		t.Errorf("family 5: %v", err)
	}
}

func addrs(r ipam.Result) []string {
	var out []string
	for _, a := range r.Addresses {
		out = append(out, a.Addr.String())
	}
	return out
}

// TestNoPoolForNode checks the error for a node that no pool selects, and
// that disabling a pool stops new allocations but keeps existing ones.
func TestNoPoolAndDisabledPool(t *testing.T) {
	e := newEnv(t)
	e.pool("disable-v4", "10.111.0.0/24", 26)
	node := e.node("disable-n1")
	a := e.start(node)
	ctx := ctxFor(t, time.Minute)
	if _, err := a.Allocate(ctx, ipam.Request{Handle: "kept.eth0", Families: []int{4}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Allocate(ctx, ipam.Request{Handle: "x.eth0", Families: []int{6}}); !errors.Is(err, ipam.ErrNoPool) ||
		!strings.Contains(err.Error(), "no enabled IPv6 pool selects node "+node) {
		t.Fatalf("IPv6 without a pool: %v", err)
	}
	// A node the pool's nodeSelector does not match gets no address.
	other := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "disable-unlabelled", Labels: map[string]string{suiteLabel: "someone-else"}}}
	if _, err := e.kube.CoreV1().Nodes().Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.kube.CoreV1().Nodes().Delete(context.Background(), other.Name, metav1.DeleteOptions{}) })
	if _, err := e.start(other.Name).Allocate(ctx, ipam.Request{Handle: "x.eth0"}); !errors.Is(err, ipam.ErrNoPool) ||
		!strings.Contains(err.Error(), "no enabled IP pool selects node disable-unlabelled") {
		t.Fatalf("node outside the nodeSelector: %v", err)
	}
	p, err := e.rz.RhizomeV1alpha1().IPPools().Get(ctx, "disable-v4", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Spec.Disabled = true
	if _, err := e.rz.RhizomeV1alpha1().IPPools().Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the allocator to see the pool disabled", func() bool {
		s := a.Snapshot()
		return len(s.Pools) > 0 && !poolNamed(s, "disable-v4").Allocatable
	})
	if _, err := a.Allocate(ctx, ipam.Request{Handle: "new.eth0"}); !errors.Is(err, ipam.ErrNoPool) {
		t.Fatalf("allocating from a disabled pool: %v", err)
	}
	// The existing allocation stays, and asking for it again still works.
	if got := e.allocations("10.111.0.0/24"); len(got) != 1 {
		t.Fatalf("allocations after disabling = %+v", got)
	}
	if r, err := a.Allocate(ctx, ipam.Request{Handle: "kept.eth0"}); err != nil || len(r.Addresses) != 1 {
		t.Fatalf("existing handle after disabling = %+v, %v", r, err)
	}
	if s := a.Snapshot(); len(s.Affine) != 1 || s.Affine[0].CIDR != netip.MustParsePrefix("10.111.0.0/26") {
		t.Fatalf("the block stays advertised: %+v", s.Affine)
	}
}

func poolNamed(s ipam.Snapshot, name string) ipam.Pool {
	for _, p := range s.Pools {
		if p.Name == name {
			return p
		}
	}
	return ipam.Pool{}
}

// TestBorrowing fills a pool of two blocks from one node, then makes a
// second node borrow an address from the first node's block: the borrower
// sees it as Borrowed (to advertise a /32), the owner as Lent (never to
// blackhole). With strictAffinity the second node gets "pool … exhausted".
func TestBorrowing(t *testing.T) {
	e := newEnv(t)
	e.pool("borrow", "10.103.0.0/26", 27)
	n1, n2 := e.node("borrow-n1"), e.node("borrow-n2")
	a1, a2 := e.start(n1), e.start(n2)
	ctx := ctxFor(t, 2*time.Minute)
	for i := range 40 { // block 0 full, 8 addresses of block 1
		if _, err := a1.Allocate(ctx, ipam.Request{Handle: fmt.Sprintf("n1-%d.eth0", i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, time.Minute, "n2 to see both blocks claimed", func() bool { return len(a2.Snapshot().Blocks) == 2 })

	r, err := a2.Allocate(ctx, ipam.Request{Handle: "n2-0.eth0", Namespace: "default", Pod: "borrower"})
	if err != nil {
		t.Fatal(err)
	}
	got := r.Addresses[0]
	if !got.Borrowed || got.Addr != netip.MustParseAddr("10.103.0.40") || got.Block != netip.MustParsePrefix("10.103.0.32/27") {
		t.Fatalf("borrowed address = %+v, want 10.103.0.40 from 10.103.0.32/27", got)
	}
	if s := a2.Snapshot(); len(s.Affine) != 0 || fmt.Sprint(s.Borrowed) != "[10.103.0.40]" {
		t.Fatalf("borrower's snapshot: affine %v borrowed %v", s.Affine, s.Borrowed)
	}
	waitFor(t, time.Minute, "the owner to see the loan", func() bool { return fmt.Sprint(a1.Snapshot().Lent) == "[10.103.0.40]" })
	if to := a1.Snapshot().LentTo[netip.MustParseAddr("10.103.0.40")]; to != n2 {
		t.Fatalf("lent to %q, want %s", to, n2)
	}
	if s := a1.Snapshot(); len(s.Affine) != 2 || len(s.Borrowed) != 0 {
		t.Fatalf("owner's snapshot: %+v", s)
	}
	b := e.blocks("10.103.0.32/27")
	if len(b) != 1 || b[0].Status.Borrowed != 1 || b[0].Spec.Affinity != n1 {
		t.Fatalf("block status: %+v", b)
	}
	// The owner allocating on does not take the lent address.
	r1, err := a1.Allocate(ctx, ipam.Request{Handle: "n1-40.eth0"})
	if err != nil || r1.Addresses[0].Addr != netip.MustParseAddr("10.103.0.41") {
		t.Fatalf("owner's next address = %+v, %v", r1, err)
	}

	// strictAffinity: no borrowing, a clear error.
	e.ipamConfig(v1alpha1.IPAMConfigurationSpec{StrictAffinity: true})
	probe := 0
	waitFor(t, time.Minute, "n2 to see strictAffinity", func() bool {
		probe++
		h := fmt.Sprintf("probe-%d.eth0", probe)
		if _, err := a2.Allocate(ctx, ipam.Request{Handle: h}); err != nil {
			return true
		}
		return a2.Release(ctx, h) != nil
	})
	_, err = a2.Allocate(ctx, ipam.Request{Handle: "n2-1.eth0"})
	if !errors.Is(err, ipam.ErrExhausted) || !strings.Contains(err.Error(), "pool borrow (10.103.0.0/26) exhausted") ||
		!strings.Contains(err.Error(), "strictAffinity") {
		t.Fatalf("strict affinity error = %v", err)
	}
	// The borrowed address is released like any other.
	if err := a2.Release(ctx, "n2-0.eth0"); err != nil {
		t.Fatal(err)
	}
	if _, held := e.allocations("10.103.0.0/26")[netip.MustParseAddr("10.103.0.40")]; held {
		t.Fatalf("borrowed address still allocated after release")
	}
	waitFor(t, time.Minute, "the loan to end", func() bool { return len(a1.Snapshot().Lent) == 0 })
}

// TestExhausted fills a pool completely from two nodes and checks the
// error of the next allocation.
func TestExhausted(t *testing.T) {
	e := newEnv(t)
	e.pool("full", "10.112.0.0/28", 28)
	n1 := e.node("full-n1")
	a := e.start(n1)
	ctx := ctxFor(t, time.Minute)
	for i := range 16 {
		if _, err := a.Allocate(ctx, ipam.Request{Handle: fmt.Sprintf("h%d.eth0", i)}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := a.Allocate(ctx, ipam.Request{Handle: "one-too-many.eth0"})
	if !errors.Is(err, ipam.ErrExhausted) || !strings.Contains(err.Error(), "pool full (10.112.0.0/28) exhausted: no free address left") {
		t.Fatalf("error = %v", err)
	}
	if s := a.Stats(); s.AllocationErrors != 1 || s.Allocations != 16 {
		t.Errorf("stats = %+v", s)
	}
}
