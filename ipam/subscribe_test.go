//go:build !integration

package ipam_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kubefake "k8s.io/client-go/kubernetes/fake"

	rzfake "github.com/rhizome-net/rhizome/crds/client/clientset/versioned/fake"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/internal/kubecore/fromclientset"
	"github.com/rhizome-net/rhizome/ipam"
)

// TestSubscribeQuietUntilReady: while the caches fill at start, every
// block of the cluster arrives one by one; a subscriber (the agent's loop,
// which makes a pass on each signal) hears of the view once it is ready,
// not once per block before it is. With 5,000 nodes the agent made some
// 400 passes that could only find the view not ready (design 0018).
func TestSubscribeQuietUntilReady(t *testing.T) {
	const node, blocks = "node-a", 2000
	bs := int32(26)
	objs := []runtime.Object{&v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Name: "pool"},
		Spec:       v1alpha1.IPPoolSpec{CIDR: "10.128.0.0/12", BlockSize: &bs},
	}}
	for i := range blocks {
		cidr := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 128 + byte(i>>10), byte(i >> 2), byte(i&3) << 6}), 26)
		objs = append(objs, hostileBlock("", cidr.String(), fmt.Sprintf("node-%d", i)))
	}
	a, err := ipam.New(ipam.Config{
		Node:       node,
		Client:     fromclientset.Rhizome(rzfake.NewSimpleClientset(objs...).RhizomeV1alpha1()),
		Kube:       fromclientset.Wrap(kubefake.NewSimpleClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}})),
		Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ch := a.Subscribe()
	<-ch // the first computation, at start, as promised
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	notReady := 0
	for {
		select {
		case err := <-done:
			t.Fatalf("Run returned: %v", err)
		case <-ch:
			if s := a.Snapshot(); !s.Ready {
				notReady++
				continue
			}
		}
		break
	}
	if s := a.Snapshot(); len(s.Blocks) != blocks {
		t.Errorf("the first signal while ready shows %d blocks, want %d", len(s.Blocks), blocks)
	}
	if notReady > 0 {
		t.Errorf("%d signals before the view was ready, want none", notReady)
	}
	cancel()
	<-done
}
