package agent

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/rhizome-net/rhizome/agent/localapi"
	"github.com/rhizome-net/rhizome/agent/ribsink"
	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/bgp/reconcile"
	"github.com/rhizome-net/rhizome/bgp/topology"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/internal/burstgc"
	"github.com/rhizome-net/rhizome/internal/informers"
	"github.com/rhizome-net/rhizome/internal/kubecore"
	"github.com/rhizome-net/rhizome/ipam"
	"github.com/rhizome-net/rhizome/routes"
)

// clients are the agent's API clients.
type clients struct {
	kube kubecore.Interface
	rz   kubecore.Rhizome
	meta metadata.Interface
}

func newClients(cfg Config) (*clients, error) {
	var rc *rest.Config
	var err error
	if cfg.Kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("loading the API server configuration: %w", err)
	}
	rc.UserAgent = "rhizome-agent/" + cfg.NodeName
	rc.QPS, rc.Burst = 50, 100
	c := &clients{}
	kc, err := kubecore.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	c.kube, c.rz = kc, kc
	if c.meta, err = metadata.NewForConfig(rc); err != nil {
		return nil, err
	}
	return c, nil
}

// agent is one running agent: its caches and components. Its loop (pass)
// is the only writer of the components' desired state.
type agent struct {
	cfg   Config
	log   *slog.Logger
	c     *clients
	local *localNode
	ready *readiness
	sig   *signaler

	nodes *informers.Core // Nodes, and Secrets of the agent's namespace
	rz    *informers.Rhizome

	ipam   *ipam.NodeAllocator
	routes *routes.Reconciler
	// routeProtocol and routeTable are what the route programmer was
	// started with (a change needs a restart).
	routeProtocol, routeTable int
	bgp                       *reconcile.Reconciler

	// tunnel is the VXLAN tunnel address, allocated once from our blocks.
	tunnelMu sync.Mutex
	tunnel   tunnelState

	lastPass  atomic.Int64
	published v1alpha1.RhizomeNodeSpec
	status    *nodeStatusWriter
}

// Run runs the agent until ctx ends. Stopping leaves kernel routes in place
// and lets BGP peers keep this node's routes for the graceful-restart time,
// so a restarted agent picks up where this one stopped.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	hookClientMetrics()
	c, err := newClients(cfg)
	if err != nil {
		return err
	}
	a := &agent{cfg: cfg, log: log, c: c, sig: newSignaler(),
		ready: newReadiness("caches", "node", "ipam", "routes", "bgp")}
	a.lastPass.Store(time.Now().UnixNano())
	reg := newRegistry()
	metrics := newAgentMetrics(reg, a.ready)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	goRun := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	goRun("health server", func() error { return serveHealth(ctx, cfg.HealthAddress, a.ready, a.alive, reg, log) })

	if err := a.startCaches(ctx); err != nil {
		return err
	}
	node, err := a.waitNode(ctx)
	if err != nil {
		return err
	}
	if a.local, err = detectLocalNode(node, cfg); err != nil {
		return err
	}
	a.ready.Set("node", "")
	log.Info("node detected", "address", a.local.IPv4.String(), "interface", a.local.Interface, "mtu", a.local.MTU)

	// The route programmer first: it adopts the routes a previous run left
	// and keeps them until BGP has converged.
	bgpCfg := a.mergedBGPConfig()
	a.routes, err = routes.New(routes.Config{
		Protocol: bgpCfg.RouteProtocol, Table: bgpCfg.RouteTable,
		Interface: a.local.Interface, Address: a.local.IPv4, Address6: a.local.IPv6,
		SysctlRoot: cfg.SysctlRoot, Logger: log, Registerer: reg,
	})
	if err != nil {
		return fmt.Errorf("starting the route programmer: %w", err)
	}
	a.routeProtocol, a.routeTable = bgpCfg.RouteProtocol, bgpCfg.RouteTable
	defer a.routes.Close()
	goRun("route programmer", func() error { return a.routes.Run(ctx) })

	a.ipam, err = ipam.New(ipam.Config{
		Node: cfg.NodeName, Client: c.rz, Kube: c.kube, Logger: log, Registerer: reg,
		Controller: &ipam.ControllerOptions{Metadata: c.meta, LeaseNamespace: cfg.Namespace},
	})
	if err != nil {
		return err
	}
	goRun("ipam", func() error { return a.ipam.Run(ctx) })
	reg.MustRegister(newIPAMUsage(a)) // reads a.rz and a.ipam, set by now
	ipamChanged := a.ipam.Subscribe()

	gcTuner := burstgc.New(burstgc.Config{Percent: cfg.BurstGOGC, HeapCap: uint64(cfg.BurstHeapCapMiB) << 20, Logger: log})
	defer gcTuner.Close()
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "rhizome_gc_bursts_total",
		Help: "Route bursts during which the agent raised its Go GC target (--burst-gogc).",
	}, func() float64 { return float64(gcTuner.Bursts()) }))
	a.bgp = reconcile.New(reconcile.Config{
		NewSpeaker: func() bgp.Speaker { return bgp.NewGoBGP(bgp.GoBGPOptions{Logger: log}) },
		Sink:       ribsink.New(a.routes, gcTuner, log),
		Logger:     log,
		Registerer: reg,
		APIAddress: cfg.GoBGPAPIAddress,
	})
	goRun("bgp", func() error { a.bgp.Run(ctx); return nil })
	statusWriter := reconcile.NewStatusWriter(c.rz, cfg.NodeName, cfg.StatusInterval, log)
	goRun("bgp status", func() error { statusWriter.Run(ctx, a.bgp); return nil })
	a.status = newNodeStatusWriter(c.rz, cfg.NodeName, cfg.StatusInterval, log)

	api := localapi.New(&ipamAllocator{a: a}, &nodeState{a: a}, log)
	goRun("local API", func() error { return api.Serve(ctx, cfg.AgentSocket) })

	ticker := time.NewTicker(cfg.ResyncPeriod)
	defer ticker.Stop()
	statusTick := time.NewTicker(cfg.StatusInterval)
	defer statusTick.Stop()
	var loopErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-errc:
			loopErr = err
			break loop
		case <-a.sig.C:
		case <-ipamChanged:
		case <-ticker.C:
		case <-statusTick.C:
			a.writeStatus(ctx)
			continue
		}
		start := time.Now()
		a.pass(ctx)
		metrics.passDuration.Observe(time.Since(start).Seconds())
		a.lastPass.Store(time.Now().UnixNano())
	}
	log.Info("stopping; kernel routes stay in place, BGP peers keep ours for the graceful-restart time")
	stopCtx, stopCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer stopCancel()
	if err := a.bgp.Stop(stopCtx); err != nil {
		log.Warn("stopping BGP", "error", err)
	}
	cancel()
	wg.Wait()
	return loopErr
}

// alive is /healthz: the loop must have turned recently.
func (a *agent) alive() error {
	if since := time.Since(time.Unix(0, a.lastPass.Load())); since > 3*a.cfg.ResyncPeriod+time.Minute {
		return fmt.Errorf("no reconcile pass for %s", since.Round(time.Second))
	}
	return nil
}

// startCaches starts the informers the agent's loop reads and waits for
// them. Every change only signals the loop.
func (a *agent) startCaches(ctx context.Context) error {
	a.nodes = informers.NewCore(a.c.kube, a.cfg.ResyncPeriod)
	a.nodes.SecretsNamespace = a.cfg.Namespace
	a.rz = informers.NewRhizome(a.c.rz, a.cfg.ResyncPeriod)
	onChange := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.sig.Signal() },
		UpdateFunc: func(any, any) { a.sig.Signal() },
		DeleteFunc: func(any) { a.sig.Signal() },
	}
	for _, inf := range []cache.SharedIndexInformer{
		a.nodes.Nodes(), a.nodes.Secrets(),
		a.rz.IPPools(), a.rz.BGPConfigurations(), a.rz.BGPPeers(), a.rz.RhizomeNodes(),
	} {
		if _, err := inf.AddEventHandler(onChange); err != nil {
			return err
		}
	}
	a.nodes.Start(ctx.Done())
	a.rz.Start(ctx.Done())
	a.log.Info("waiting for the API server caches")
	for typ, ok := range a.nodes.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("syncing the %v cache: %w", typ, ctx.Err())
		}
	}
	for typ, ok := range a.rz.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("syncing the %v cache: %w", typ, ctx.Err())
		}
	}
	a.ready.Set("caches", "")
	return nil
}

// waitNode waits until this node's Node object exists.
func (a *agent) waitNode(ctx context.Context) (*corev1.Node, error) {
	var node *corev1.Node
	err := wait.PollUntilContextCancel(ctx, time.Second, true, func(context.Context) (bool, error) {
		n, err := a.nodes.NodeLister().Get(a.cfg.NodeName)
		if apierrors.IsNotFound(err) {
			a.ready.Set("node", "Node "+a.cfg.NodeName+" does not exist")
			return false, nil
		}
		node = n
		return err == nil, err
	})
	if err != nil {
		return nil, fmt.Errorf("waiting for Node %s: %w", a.cfg.NodeName, err)
	}
	return node, nil
}

// mergedBGPConfig is this node's BGP configuration from the caches.
func (a *agent) mergedBGPConfig() topology.Config {
	l := a.rz.BGPConfigurationLister()
	var def, own *v1alpha1.BGPConfigurationSpec
	if c, err := l.Get(v1alpha1.DefaultBGPConfigurationName); err == nil {
		def = &c.Spec
	}
	if c, err := l.Get(v1alpha1.NodeBGPConfigurationPrefix + a.cfg.NodeName); err == nil {
		own = &c.Spec
	}
	cfg, _ := topology.MergeConfig(def, own)
	return cfg
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
