package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	rzclient "github.com/rhizome-net/rhizome/crds/client/clientset/versioned"
	rzinformers "github.com/rhizome-net/rhizome/crds/client/informers/externalversions"
)

// clients are the agent's API clients.
type clients struct {
	kube kubernetes.Interface
	rz   rzclient.Interface
}

func newClients(cfg Config) (*clients, *rest.Config, error) {
	var rc *rest.Config
	var err error
	if cfg.Kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("loading the API server configuration: %w", err)
	}
	rc.UserAgent = "rhizome-agent/" + cfg.NodeName
	rc.QPS, rc.Burst = 50, 100
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, err
	}
	rz, err := rzclient.NewForConfig(rc)
	if err != nil {
		return nil, nil, err
	}
	return &clients{kube: kube, rz: rz}, rc, nil
}

// Run runs the agent until ctx ends. Stopping leaves kernel routes and BGP
// graceful-restart state in place, so a restarted agent picks up where this
// one stopped.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	c, _, err := newClients(cfg)
	if err != nil {
		return err
	}
	kubeInf := informers.NewSharedInformerFactory(c.kube, cfg.ResyncPeriod)
	rzInf := rzinformers.NewSharedInformerFactory(c.rz, cfg.ResyncPeriod)
	nodes := kubeInf.Core().V1().Nodes()
	sig := newSignaler()
	onChange := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { sig.Signal() },
		UpdateFunc: func(any, any) { sig.Signal() },
		DeleteFunc: func(any) { sig.Signal() },
	}
	for _, inf := range []cache.SharedIndexInformer{
		nodes.Informer(),
		rzInf.Rhizome().V1alpha1().IPPools().Informer(),
		rzInf.Rhizome().V1alpha1().BGPConfigurations().Informer(),
		rzInf.Rhizome().V1alpha1().BGPPeers().Informer(),
	} {
		if _, err := inf.AddEventHandler(onChange); err != nil {
			return err
		}
	}
	reg := newRegistry()
	ready := newReadiness("caches", "node")
	var lastPass atomic.Int64
	lastPass.Store(time.Now().UnixNano())
	alive := func() error {
		// The loop runs at least every resync period; three missed passes
		// mean it is stuck.
		if since := time.Since(time.Unix(0, lastPass.Load())); since > 3*cfg.ResyncPeriod+time.Minute {
			return fmt.Errorf("no reconcile pass for %s", since.Round(time.Second))
		}
		return nil
	}
	errc := make(chan error, 4)
	go func() { errc <- serveHealth(ctx, cfg.HealthAddress, ready, alive, reg, log) }()

	kubeInf.Start(ctx.Done())
	rzInf.Start(ctx.Done())
	log.Info("waiting for the API server caches")
	for typ, ok := range kubeInf.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("syncing the %v cache: %w", typ, ctx.Err())
		}
	}
	for typ, ok := range rzInf.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("syncing the %v cache: %w", typ, ctx.Err())
		}
	}
	ready.Set("caches", "")

	var node *corev1.Node
	err = wait.PollUntilContextCancel(ctx, time.Second, true, func(context.Context) (bool, error) {
		n, err := nodes.Lister().Get(cfg.NodeName)
		if apierrors.IsNotFound(err) {
			ready.Set("node", "Node "+cfg.NodeName+" does not exist")
			return false, nil
		}
		node = n
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("waiting for Node %s: %w", cfg.NodeName, err)
	}
	local, err := detectLocalNode(node, cfg)
	if err != nil {
		return err
	}
	ready.Set("node", "")
	log.Info("node detected", "address", local.IPv4.String(), "interface", local.Interface, "mtu", local.MTU, "routerID", local.routerID(cfg).String())
	if err := publishNode(ctx, c, node, local); err != nil {
		return err
	}

	ticker := time.NewTicker(cfg.ResyncPeriod)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			log.Info("stopping; kernel routes stay in place")
			return nil
		case err := <-errc:
			if err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
		case <-sig.C:
		case <-ticker.C:
		}
		lastPass.Store(time.Now().UnixNano())
	}
}

// publishNode creates or updates this node's RhizomeNode spec with what the
// other agents need to know about it. The object is owned by the Node, so
// it goes away with it.
func publishNode(ctx context.Context, c *clients, node *corev1.Node, ln *localNode) error {
	rzn := c.rz.RhizomeV1alpha1().RhizomeNodes()
	want := func(spec *specFields) {
		spec.IPv4Address = ln.IPv4.String()
		if ln.IPv6.IsValid() {
			spec.IPv6Address = ln.IPv6.String()
		}
	}
	return retryConflict(ctx, func() error {
		cur, err := rzn.Get(ctx, node.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			obj := newRhizomeNode(node)
			want(&obj.Spec)
			_, err = rzn.Create(ctx, obj, metav1.CreateOptions{})
			return err
		}
		if err != nil {
			return err
		}
		upd := cur.DeepCopy()
		want(&upd.Spec)
		if upd.Spec == cur.Spec {
			return nil
		}
		_, err = rzn.Update(ctx, upd, metav1.UpdateOptions{})
		return err
	})
}

// retryConflict retries fn on resourceVersion conflicts.
func retryConflict(ctx context.Context, fn func() error) error {
	backoff := wait.Backoff{Duration: 50 * time.Millisecond, Factor: 2, Jitter: 0.5, Steps: 8, Cap: 5 * time.Second}
	var last error
	err := wait.ExponentialBackoffWithContext(ctx, backoff, func(context.Context) (bool, error) {
		last = fn()
		if apierrors.IsConflict(last) || apierrors.IsAlreadyExists(last) {
			return false, nil
		}
		return true, last
	})
	if wait.Interrupted(err) {
		return fmt.Errorf("giving up after repeated conflicts: %w", last)
	}
	return err
}
