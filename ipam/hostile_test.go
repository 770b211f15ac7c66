//go:build !integration

package ipam_test

import (
	"context"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kubefake "k8s.io/client-go/kubernetes/fake"

	rzfake "github.com/rhizome-net/rhizome/crds/client/clientset/versioned/fake"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/internal/kubecore/fromclientset"
	"github.com/rhizome-net/rhizome/ipam"
	"github.com/rhizome-net/rhizome/ipam/blockmath"
)

// The fake clientsets answer no watch-list bookmarks and the kubecore
// adapters hide their opt-out, so informers over them use list+watch.
func init() { os.Setenv("KUBE_FEATURE_WatchListClient", "false") }

// hostileBlock is an IPAMBlock as a careless or hostile `kubectl create`
// could write it when the API server's rules are missing (an older CRD,
// validation ratcheting, a restore from backup): the agent must not trust it.
func hostileBlock(name, cidr, affinity string, addrs ...string) *v1alpha1.IPAMBlock {
	if name == "" {
		name = blockmath.Name(netip.MustParsePrefix(cidr))
	}
	b := &v1alpha1.IPAMBlock{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(time.Unix(1000, 0))},
		Spec:       v1alpha1.IPAMBlockSpec{CIDR: cidr, Affinity: affinity},
	}
	for i, a := range addrs {
		b.Spec.Allocations = append(b.Spec.Allocations, v1alpha1.IPAMAllocation{Address: a, Handle: "h" + string(rune('a'+i)) + ".eth0", Node: affinity})
	}
	return b
}

// TestHostileBlocksAreSkipped feeds a real NodeAllocator blocks that no
// agent may act on: the whole IPv4 space, IPv6 /64 and /72 blocks (a
// per-address table of 2^64 or 2^56 entries), a name that does not match the
// cidr, an IPv4-mapped IPv6 block, a block with host bits. The allocator must
// stay up, leave them out of the routing view, count them, and keep serving
// the valid block beside them.
func TestHostileBlocksAreSkipped(t *testing.T) {
	const node = "node-a"
	bs := int32(26)
	objs := []runtime.Object{
		&v1alpha1.IPPool{
			ObjectMeta: metav1.ObjectMeta{Name: "pool", CreationTimestamp: metav1.NewTime(time.Unix(500, 0))},
			Spec:       v1alpha1.IPPoolSpec{CIDR: "10.0.0.0/16", BlockSize: &bs},
		},
		// A pool with a mode the CRD's enum refuses, past it (issue 15):
		// ignored whole, the valid pool beside it served.
		&v1alpha1.IPPool{
			ObjectMeta: metav1.ObjectMeta{Name: "sometimes", CreationTimestamp: metav1.NewTime(time.Unix(500, 0))},
			Spec:       v1alpha1.IPPoolSpec{CIDR: "10.1.0.0/16", BlockSize: &bs, VXLANMode: "Sometimes"},
		},
		hostileBlock("", "10.0.0.0/26", node, "10.0.0.0"),
		hostileBlock("", "0.0.0.0/0", node, "10.0.0.1"),
		hostileBlock("", "fd00::/64", node, "fd00::1"),
		hostileBlock("", "fd00::/72", "node-b", "fd00::2"),
		hostileBlock("10-0-1-0-26", "10.0.9.0/26", node),
		hostileBlock("", "::ffff:10.0.2.0/122", node),
		hostileBlock("10-0-3-1-26", "10.0.3.1/26", node),
	}
	var rz []runtime.Object
	for _, o := range objs {
		rz = append(rz, o)
	}
	kube := kubefake.NewSimpleClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}})
	reg := prometheus.NewRegistry()
	a, err := ipam.New(ipam.Config{
		Node:       node,
		Client:     fromclientset.Rhizome(rzfake.NewSimpleClientset(rz...).RhizomeV1alpha1()),
		Kube:       fromclientset.Wrap(kube),
		Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	for !a.Snapshot().Ready {
		select {
		case err := <-done:
			t.Fatalf("Run returned before ready: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	s := a.Snapshot()
	var got []string
	for _, b := range s.Blocks {
		got = append(got, b.CIDR.String())
	}
	if want := []string{"10.0.0.0/26"}; !slices.Equal(got, want) {
		t.Errorf("routing view has blocks %v, want only %v", got, want)
	}
	if len(s.Affine) != 1 || s.Affine[0].CIDR != netip.MustParsePrefix("10.0.0.0/26") {
		t.Errorf("affine blocks %v, want only 10.0.0.0/26", s.Affine)
	}
	res, err := a.Allocate(ctx, ipam.Request{Handle: "pod1.eth0", Families: []int{4}})
	if err != nil {
		t.Fatalf("Allocate beside hostile blocks: %v", err)
	}
	if got := res.Addresses[0].Addr; got != netip.MustParseAddr("10.0.0.1") {
		t.Errorf("allocated %v, want 10.0.0.1 (the valid block's next free address)", got)
	}
	if n := testutil.ToFloat64(gauge(t, reg, "rhizome_ipam_invalid_blocks")); n != 6 {
		t.Errorf("rhizome_ipam_invalid_blocks = %v, want 6", n)
	}
	if len(s.Pools) != 1 || s.Pools[0].Name != "pool" {
		t.Errorf("routing view has pools %+v, want only pool", s.Pools)
	}
	if n := testutil.ToFloat64(gauge(t, reg, "rhizome_ipam_invalid_pools")); n != 1 {
		t.Errorf("rhizome_ipam_invalid_pools = %v, want 1", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// gauge returns the sum of a metric family's gauges, as one collector.
func gauge(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	found := false
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		found = true
		for _, m := range mf.GetMetric() {
			sum += m.GetGauge().GetValue()
		}
	}
	if !found {
		var names []string
		for _, mf := range mfs {
			names = append(names, mf.GetName())
		}
		t.Fatalf("no metric %s among %s", name, strings.Join(names, ", "))
	}
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name}, func() float64 { return sum })
}

// runFake starts a NodeAllocator for node over fake clientsets holding objs
// and waits until it is ready.
func runFake(t *testing.T, node string, objs ...runtime.Object) *ipam.NodeAllocator {
	t.Helper()
	return runFakeOn(t, node, rzfake.NewSimpleClientset(objs...))
}

// runFakeOn is runFake over a given fake clientset (to add reactors).
func runFakeOn(t *testing.T, node string, cs *rzfake.Clientset) *ipam.NodeAllocator {
	t.Helper()
	kube := kubefake.NewSimpleClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}})
	a, err := ipam.New(ipam.Config{
		Node:   node,
		Client: fromclientset.Rhizome(cs.RhizomeV1alpha1()),
		Kube:   fromclientset.Wrap(kube),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for !a.Snapshot().Ready {
		if time.Now().After(deadline) {
			t.Fatal("allocator not ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return a
}

// TestBlocksOfDifferentSizesNeverOverlap: a /24 block left over from an
// earlier pool (blockSize 24, since deleted; its pod still runs) and a new
// pool over the same range cut into /26 blocks. The new blocks must go
// around the leftover one: no address of it may be handed out again.
func TestBlocksOfDifferentSizesNeverOverlap(t *testing.T) {
	bs := int32(26)
	leftover := hostileBlock("", "10.1.0.0/24", "node-b", "10.1.0.5")
	a := runFake(t, "node-a",
		&v1alpha1.IPPool{
			ObjectMeta: metav1.ObjectMeta{Name: "new", CreationTimestamp: metav1.NewTime(time.Unix(2000, 0))},
			Spec:       v1alpha1.IPPoolSpec{CIDR: "10.1.0.0/16", BlockSize: &bs},
		},
		leftover)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	old := netip.MustParsePrefix("10.1.0.0/24")
	for i := range 8 {
		res, err := a.Allocate(ctx, ipam.Request{Handle: "pod" + string(rune('a'+i)) + ".eth0", Families: []int{4}})
		if err != nil {
			t.Fatalf("Allocate %d: %v", i, err)
		}
		if addr := res.Addresses[0]; old.Contains(addr.Addr) || addr.Block.Overlaps(old) {
			t.Fatalf("allocated %v from block %v, inside the leftover block %v", addr.Addr, addr.Block, old)
		}
	}
	for _, b := range a.Snapshot().Affine {
		if b.CIDR.Overlaps(old) {
			t.Errorf("claimed block %v overlaps the leftover %v", b.CIDR, old)
		}
	}
}

// TestOverlappingBlockIsShadowed: two blocks that overlap already exist
// (written past the API's checks, or by an agent before this fix). The
// older one wins on every agent; the younger is neither allocated from nor
// routed, and counted.
func TestOverlappingBlockIsShadowed(t *testing.T) {
	bs := int32(26)
	older := hostileBlock("", "10.2.0.0/24", "node-a")
	older.CreationTimestamp = metav1.NewTime(time.Unix(100, 0))
	younger := hostileBlock("", "10.2.0.64/26", "node-a", "10.2.0.64")
	younger.CreationTimestamp = metav1.NewTime(time.Unix(200, 0))
	a := runFake(t, "node-a",
		&v1alpha1.IPPool{
			ObjectMeta: metav1.ObjectMeta{Name: "p", CreationTimestamp: metav1.NewTime(time.Unix(50, 0))},
			Spec:       v1alpha1.IPPoolSpec{CIDR: "10.2.0.0/16", BlockSize: &bs},
		},
		older, younger)
	var got []string
	for _, b := range a.Snapshot().Blocks {
		got = append(got, b.CIDR.String())
	}
	if want := []string{"10.2.0.0/24"}; !slices.Equal(got, want) {
		t.Errorf("routing view %v, want %v (the younger, overlapping block left out)", got, want)
	}
}
