//go:build integration

package ipam_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	"github.com/rhizome-net/rhizome/crds/client/clientset/versioned"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/internal/kubecore"
	"github.com/rhizome-net/rhizome/ipam"
	"github.com/rhizome-net/rhizome/test/controlplane"
)

func TestMain(m *testing.M) { controlplane.Main(m) }

// env is one test's view of the shared control plane. Tests isolate
// themselves by a label: their pools select only their own nodes, so the
// allocators of one test never touch another test's pools.
type env struct {
	t     testing.TB
	cp    *controlplane.ControlPlane
	rc    *rest.Config
	rz    versioned.Interface
	kube  kubernetes.Interface // for the tests' own setup
	core  kubecore.Interface   // what the allocator and controller get, as in the agent
	rzc   kubecore.Rhizome     // the same for rhizome.dev, its writes counted too
	meta  metadata.Interface
	label string // value of the suite label on this test's nodes and pools
	log   *slog.Logger
	// writes counts IPAMBlock writes sent through rz (POST, PUT, DELETE).
	writes atomic.Int64
}

const suiteLabel = "test.rhizome.dev/suite"

func newEnv(t testing.TB) *env {
	t.Helper()
	cp := controlplane.ForTest(t)
	e := &env{t: t, cp: cp, label: strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))}
	if len(e.label) > 63 {
		e.label = e.label[:63]
	}
	e.rc = cp.RESTConfig()
	e.rc.QPS, e.rc.Burst = -1, 0 // no client-side throttling: measure the server
	counted := rest.CopyConfig(e.rc)
	counted.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return countWrites{rt: rt, n: &e.writes}
	})
	var err error
	if e.rz, err = versioned.NewForConfig(counted); err != nil {
		t.Fatal(err)
	}
	if e.kube, err = kubernetes.NewForConfig(e.rc); err != nil {
		t.Fatal(err)
	}
	if e.core, err = kubecore.NewForConfig(e.rc); err != nil {
		t.Fatal(err)
	}
	if e.rzc, err = kubecore.NewForConfig(counted); err != nil {
		t.Fatal(err)
	}
	if e.meta, err = metadata.NewForConfig(e.rc); err != nil {
		t.Fatal(err)
	}
	level := slog.LevelWarn
	if os.Getenv("IPAM_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	e.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	return e
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// pool creates an IPPool selecting this test's nodes and removes it, with
// its blocks, at the end of the test.
func (e *env) pool(name, cidr string, blockSize int32, mod ...func(*v1alpha1.IPPool)) *v1alpha1.IPPool {
	e.t.Helper()
	p := &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.IPPoolSpec{
			CIDR:         cidr,
			BlockSize:    &blockSize,
			NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{suiteLabel: e.label}},
		},
	}
	for _, m := range mod {
		m(p)
	}
	ctx := ctxFor(e.t, time.Minute)
	out, err := e.rz.RhizomeV1alpha1().IPPools().Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatalf("creating pool %s: %v", name, err)
	}
	e.t.Cleanup(func() { e.removePool(name, netip.MustParsePrefix(cidr)) })
	return out
}

// removePool deletes a pool's blocks and the pool, finalizer or not.
func (e *env) removePool(name string, cidr netip.Prefix) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	blocks, err := e.rz.RhizomeV1alpha1().IPAMBlocks().List(ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Errorf("cleanup: listing blocks: %v", err)
		return
	}
	for _, b := range blocks.Items {
		if p, err := netip.ParsePrefix(b.Spec.CIDR); err == nil && cidr.Contains(p.Addr()) {
			if err := e.rz.RhizomeV1alpha1().IPAMBlocks().Delete(ctx, b.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				e.t.Errorf("cleanup: deleting block %s: %v", b.Name, err)
			}
		}
	}
	// The blocks are gone: say so in status too, in case the deletion
	// policy is installed.
	_, err = e.rz.RhizomeV1alpha1().IPPools().Patch(ctx, name, types.MergePatchType, []byte(`{"status":{"addressesInUse":0}}`), metav1.PatchOptions{}, "status")
	if err != nil && !apierrors.IsNotFound(err) {
		e.t.Errorf("cleanup: zeroing the status of pool %s: %v", name, err)
	}
	_, err = e.rz.RhizomeV1alpha1().IPPools().Patch(ctx, name, types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		e.t.Errorf("cleanup: clearing finalizers of pool %s: %v", name, err)
	}
	if err := e.rz.RhizomeV1alpha1().IPPools().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		e.t.Errorf("cleanup: deleting pool %s: %v", name, err)
	}
}

// node creates a core/v1 Node carrying this test's label.
func (e *env) node(name string) string {
	e.t.Helper()
	ctx := ctxFor(e.t, time.Minute)
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{suiteLabel: e.label}}}
	if _, err := e.kube.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
		e.t.Fatalf("creating node %s: %v", name, err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := e.kube.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			e.t.Errorf("cleanup: deleting node %s: %v", name, err)
		}
	})
	return name
}

// pod creates a Pod object (there is no scheduler or kubelet: it only
// exists, which is all the garbage collector looks at).
func (e *env) pod(name string) *corev1.Pod {
	e.t.Helper()
	ctx := ctxFor(e.t, time.Minute)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceDefault},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/pause"}}},
	}
	out, err := e.kube.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatalf("creating pod %s: %v", name, err)
	}
	e.t.Cleanup(func() { e.deletePod(name) })
	return out
}

func (e *env) deletePod(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	zero := int64(0)
	err := e.kube.CoreV1().Pods(metav1.NamespaceDefault).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	if err != nil && !apierrors.IsNotFound(err) {
		e.t.Errorf("deleting pod %s: %v", name, err)
	}
}

// ipamConfig sets the cluster's IPAMConfiguration for this test.
func (e *env) ipamConfig(spec v1alpha1.IPAMConfigurationSpec) {
	e.t.Helper()
	ctx := ctxFor(e.t, time.Minute)
	c := e.rz.RhizomeV1alpha1().IPAMConfigurations()
	_ = c.Delete(ctx, v1alpha1.IPAMConfigurationName, metav1.DeleteOptions{})
	obj := &v1alpha1.IPAMConfiguration{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.IPAMConfigurationName}, Spec: spec}
	if _, err := c.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		e.t.Fatalf("creating IPAMConfiguration: %v", err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.Delete(ctx, v1alpha1.IPAMConfigurationName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			e.t.Errorf("cleanup: deleting IPAMConfiguration: %v", err)
		}
	})
}

// running is an allocator started by start.
type running struct {
	*ipam.NodeAllocator
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned, with its error in err
	err    error
}

// stop stops the allocator and waits for Run to return.
func (r *running) stop(t testing.TB) {
	r.cancel()
	select {
	case <-r.done:
		if r.err != nil {
			t.Errorf("Run: %v", r.err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("Run did not return")
	}
}

// start runs an allocator for node until the test ends (or stop).
func (e *env) start(node string, mod ...func(*ipam.Config)) *running {
	e.t.Helper()
	cfg := ipam.Config{Node: node, Client: e.rzc, Kube: e.core, Logger: e.log}
	for _, m := range mod {
		m(&cfg)
	}
	a, err := ipam.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{NodeAllocator: a, cancel: cancel, done: make(chan struct{})}
	go func() {
		r.err = a.Run(ctx)
		close(r.done)
	}()
	e.t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(2 * time.Minute):
			e.t.Errorf("allocator of %s did not stop", node)
		}
	})
	waitFor(e.t, time.Minute, "allocator of "+node+" ready", func() bool { return a.Snapshot().Ready })
	return r
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// allocations returns every allocation inside cidr, live from the API
// server, keyed by address.
func (e *env) allocations(cidr string) map[netip.Addr]v1alpha1.IPAMAllocation {
	e.t.Helper()
	ctx := ctxFor(e.t, time.Minute)
	pfx := netip.MustParsePrefix(cidr)
	blocks, err := e.rz.RhizomeV1alpha1().IPAMBlocks().List(ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[netip.Addr]v1alpha1.IPAMAllocation{}
	for _, b := range blocks.Items {
		bp := netip.MustParsePrefix(b.Spec.CIDR)
		if !pfx.Contains(bp.Addr()) {
			continue
		}
		if int(b.Status.Allocated) != len(b.Spec.Allocations) {
			e.t.Errorf("block %s: status.allocated %d, %d allocations", b.Name, b.Status.Allocated, len(b.Spec.Allocations))
		}
		for _, al := range b.Spec.Allocations {
			addr := netip.MustParseAddr(al.Address)
			if !bp.Contains(addr) {
				e.t.Errorf("block %s holds %v outside its cidr", b.Name, addr)
			}
			if prev, dup := out[addr]; dup {
				e.t.Errorf("address %v allocated twice: %+v and %+v", addr, prev, al)
			}
			out[addr] = al
		}
	}
	return out
}

// blocks returns the blocks inside cidr, live.
func (e *env) blocks(cidr string) []v1alpha1.IPAMBlock {
	e.t.Helper()
	ctx := ctxFor(e.t, time.Minute)
	pfx := netip.MustParsePrefix(cidr)
	list, err := e.rz.RhizomeV1alpha1().IPAMBlocks().List(ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []v1alpha1.IPAMBlock
	for _, b := range list.Items {
		if pfx.Contains(netip.MustParsePrefix(b.Spec.CIDR).Addr()) {
			out = append(out, b)
		}
	}
	return out
}

// countWrites counts the IPAMBlock writes that reach the API server.
type countWrites struct {
	rt http.RoundTripper
	n  *atomic.Int64
}

func (c countWrites) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method != http.MethodGet && strings.Contains(r.URL.Path, "/ipamblocks") {
		c.n.Add(1)
	}
	return c.rt.RoundTrip(r)
}
