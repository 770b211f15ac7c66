//go:build !integration

package ipam_test

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	rzfake "github.com/rhizome-net/rhizome/crds/client/clientset/versioned/fake"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/internal/kubecore/fromclientset"
	"github.com/rhizome-net/rhizome/ipam"
)

func pool26(name, cidr string) *v1alpha1.IPPool {
	bs := int32(26)
	return &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(time.Unix(10, 0))},
		Spec:       v1alpha1.IPPoolSpec{CIDR: cidr, BlockSize: &bs},
	}
}

// TestReleaseFreesOnlyThisNodesAllocations: node-b's pod holds an address
// borrowed from node-a's block under a handle (a container ID and an
// interface) that a caller on node-a also names, by accident or on purpose.
// A Release on node-a frees node-a's allocation of that handle and never
// node-b's.
func TestReleaseFreesOnlyThisNodesAllocations(t *testing.T) {
	blk := hostileBlock("", "10.3.0.0/26", "node-a")
	blk.Spec.Allocations = []v1alpha1.IPAMAllocation{
		{Address: "10.3.0.1", Handle: "shared.eth0", Node: "node-a"},
		{Address: "10.3.0.2", Handle: "shared.eth0", Node: "node-b", Namespace: "default", Pod: "web"},
	}
	cs := rzfake.NewSimpleClientset(pool26("p", "10.3.0.0/16"), blk)
	a := runFakeOn(t, "node-a", cs)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Release(ctx, "shared.eth0"); err != nil {
		t.Fatal(err)
	}
	got, err := cs.RhizomeV1alpha1().IPAMBlocks().Get(ctx, blk.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Spec.Allocations) != 1 || got.Spec.Allocations[0].Node != "node-b" {
		t.Fatalf("allocations after node-a's release: %+v, want node-b's alone", got.Spec.Allocations)
	}
}

// TestReleaseRacingAllocate: a runtime whose ADD timed out sends DEL while
// the ADD's allocation is being written. The DEL's Release must free what
// the allocation writes (the Allocate fails), not return with the address
// left allocated until the garbage collector finds it.
func TestReleaseRacingAllocate(t *testing.T) {
	cs := rzfake.NewSimpleClientset(pool26("p", "10.4.0.0/16"))
	gate := make(chan struct{})
	var held atomic.Bool
	// Hold the first block write (the claim with the allocation) until
	// the Release has started.
	cs.PrependReactor("create", "ipamblocks", func(k8stesting.Action) (bool, runtime.Object, error) {
		if held.CompareAndSwap(false, true) {
			<-gate
		}
		return false, nil, nil
	})
	cs.PrependReactor("update", "ipamblocks", func(k8stesting.Action) (bool, runtime.Object, error) {
		if held.CompareAndSwap(false, true) {
			<-gate
		}
		return false, nil, nil
	})
	a := runFakeOn(t, "node-a", cs)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	allocErr := make(chan error, 1)
	go func() {
		_, err := a.Allocate(ctx, ipam.Request{Handle: "racy.eth0", Families: []int{4}})
		allocErr <- err
	}()
	for !held.Load() {
		time.Sleep(time.Millisecond)
	}
	relErr := make(chan error, 1)
	go func() { relErr <- a.Release(ctx, "racy.eth0") }()
	time.Sleep(50 * time.Millisecond) // the Release is now waiting on the write
	close(gate)
	if err := <-relErr; err != nil {
		t.Fatalf("Release: %v", err)
	}
	err := <-allocErr
	if err == nil {
		// The Allocate may have completed first; then the Release must
		// have freed its address.
		t.Logf("Allocate completed before the Release settled it")
	} else if !errors.Is(err, ipam.ErrReleased) {
		t.Fatalf("Allocate: %v, want ErrReleased or success", err)
	}
	list, err := cs.RhizomeV1alpha1().IPAMBlocks().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range list.Items {
		for _, al := range b.Spec.Allocations {
			if al.Handle == "racy.eth0" {
				t.Fatalf("address %s still allocated to the released handle in %s", al.Address, b.Name)
			}
		}
	}
	if got := a.HandleAddresses("racy.eth0"); len(got) != 0 {
		t.Fatalf("allocator still shows %v for the released handle", got)
	}
}

// TestTunnelAddressNotReleasableWhileTheNodeExists: an operator's
// `rhizomectl ipam release` of a node's tunnel (VTEP) address is refused
// without --force while the node exists; the node's pod-less address is in
// use though no pod holds it.
func TestTunnelAddressNotReleasableWhileTheNodeExists(t *testing.T) {
	blk := hostileBlock("", "10.5.0.0/26", "node-a")
	blk.Spec.Allocations = []v1alpha1.IPAMAllocation{{Address: "10.5.0.0", Handle: ipam.TunnelHandlePrefix + "vxlan.node-a", Node: "node-a"}}
	rz := fromclientset.Rhizome(rzfake.NewSimpleClientset(pool26("p", "10.5.0.0/16"), blk).RhizomeV1alpha1())
	kube := kubefake.NewSimpleClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}})
	ctx := context.Background()
	addr := netip.MustParseAddr("10.5.0.0")
	if _, err := ipam.ReleaseAddress(ctx, rz, fromclientset.Wrap(kube), addr, ipam.ReleaseOptions{}); !errors.Is(err, ipam.ErrInUse) {
		t.Fatalf("release of a live node's tunnel address: %v, want ErrInUse", err)
	}
	if err := kube.CoreV1().Nodes().Delete(ctx, "node-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := ipam.ReleaseAddress(ctx, rz, fromclientset.Wrap(kube), addr, ipam.ReleaseOptions{}); err != nil {
		t.Fatalf("release of a deleted node's tunnel address: %v", err)
	}
}
