//go:build integration

package informers_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"

	rzv1 "github.com/rhizome-net/rhizome/crds/client/clientset/versioned/typed/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/internal/informers"
	"github.com/rhizome-net/rhizome/internal/kubecore"
	"github.com/rhizome-net/rhizome/test/controlplane"
)

func TestMain(m *testing.M) { controlplane.Main(m) }

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFactories runs both factories against the API server: the caches fill,
// follow changes, honour the Node field selector, and stop on Shutdown.
func TestFactories(t *testing.T) {
	cp := controlplane.ForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rz, err := rzv1.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	kc, err := kubecore.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"informer-a", "informer-b"} {
		if _, err := kc.Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = kc.Nodes().Delete(context.Background(), n, metav1.DeleteOptions{}) })
	}
	pool := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "informer-pool"}, Spec: v1alpha1.IPPoolSpec{CIDR: "10.99.0.0/16"}}
	if _, err := rz.IPPools().Create(ctx, pool, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	rf := informers.NewRhizome(kc, 0)
	core := informers.NewCore(kc, 0)
	core.NodeTweak = func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", "informer-a").String()
	}
	if rf.IPPools() != rf.IPPools() {
		t.Fatal("two informers for one kind")
	}
	_ = core.Nodes()
	rf.Start(ctx.Done())
	core.Start(ctx.Done())
	for typ, ok := range rf.WaitForCacheSync(ctx.Done()) {
		if !ok {
			t.Fatalf("%v did not sync", typ)
		}
	}
	for typ, ok := range core.WaitForCacheSync(ctx.Done()) {
		if !ok {
			t.Fatalf("%v did not sync", typ)
		}
	}
	if got, err := rf.IPPoolLister().Get("informer-pool"); err != nil || got.Spec.CIDR != "10.99.0.0/16" {
		t.Fatalf("pool from the cache: %v, %v", got, err)
	}
	nodes, err := core.NodeLister().List(labels.Everything())
	if err != nil || len(nodes) != 1 || nodes[0].Name != "informer-a" {
		t.Fatalf("nodes through the field selector: %v, %v", nodes, err)
	}
	if err := rz.IPPools().Delete(ctx, "informer-pool", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deleted pool leaves the cache", func() bool {
		_, err := rf.IPPoolLister().Get("informer-pool")
		return apierrors.IsNotFound(err)
	})

	rf.Shutdown()
	core.Shutdown()
	if rf.IPPools().IsStopped() != true {
		t.Fatal("informer still running after Shutdown")
	}
}
