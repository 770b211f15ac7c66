package agent

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/rhizome-net/rhizome/agent/agentapi"
	"github.com/rhizome-net/rhizome/agent/localapi"
	"github.com/rhizome-net/rhizome/agent/ribsink"
	"github.com/rhizome-net/rhizome/bfd"
	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/bgp/policy"
	"github.com/rhizome-net/rhizome/bgp/reconcile"
	"github.com/rhizome-net/rhizome/bgp/topology"
	rzlisters "github.com/rhizome-net/rhizome/crds/client/listers/crds/v1alpha1"
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

// agent is one running agent: its caches and parts (see parts). Its loop
// (pass) is the only writer of the parts' desired state.
type agent struct {
	cfg   Config
	log   *slog.Logger
	local *localNode
	ready *readiness
	sig   *signaler

	caches  reconcile.Listers
	rzNodes kubecore.RhizomeNodes
	ipam    nodeIPAM
	routes  routeProgrammer
	// routeProtocol and routeTable are what the route programmer was
	// started with (a change needs a restart).
	routeProtocol, routeTable int
	bgp                       bgpReconciler

	// tunnel holds the tunnel addresses (VXLAN, IPIP), from our blocks
	// (tunnel.go).
	tunnelMu sync.Mutex
	tunnel   tunnelState

	// routesRefused is why the route programmer refused the last desired
	// state ("" = accepted); only the loop's goroutine touches it.
	routesRefused string
	// lastVTEP is each other node's last complete VTEP (see peerNodes);
	// only the loop's goroutine touches it.
	lastVTEP map[string]peerNode

	// ownersIndex is what every node may originate (BGP's import
	// policy), built from the IPAM snapshot of generation ownersGen; only
	// the loop's goroutine touches them.
	ownersIndex *policy.Owners
	ownersGen   uint64

	lastPass atomic.Int64
	// attached is set once attach gave the agent its parts: /status
	// (served from the start) reads them only after.
	attached  atomic.Bool
	published v1alpha1.RhizomeNodeSpec
	// events reports session changes and route failures on the
	// RhizomeNode (nil in tests without them); routeErrs is the last
	// set of failing routes it reported (loop goroutine only).
	events    *nodeEvents
	routeErrs routeErrorState
	// rejected is what the last RoutesRejected events reported.
	rejected rejectedState
	// allocDuration observes the local API's allocations (nil: none).
	allocDuration *prometheus.HistogramVec
	status        *nodeStatusWriter
}

// Run runs the agent until ctx ends. Stopping leaves kernel routes in place
// and lets BGP peers keep this node's routes for the graceful-restart time,
// so a restarted agent picks up where this one stopped.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	// BFD is closed last, just before the process exits and the kernel
	// closes the BGP connections: peers must see those close first
	// (graceful restart) and BFD time out after (RFC 5882 4.3.2), never
	// BFD silent while BGP still looks up.
	var bfdManager *bfd.Manager
	defer func() {
		if bfdManager != nil {
			bfdManager.Close()
		}
	}()
	hookClientMetrics()
	c, err := newClients(cfg)
	if err != nil {
		return err
	}
	a := newAgent(cfg, log)
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
	goRun("health server", func() error { return serveHealth(ctx, cfg.HealthAddress, a.ready, a.alive, reg, a.statusView, log) })
	if cfg.PprofAddress != "" {
		goRun("pprof server", func() error { return servePprof(ctx, cfg.PprofAddress, log) })
	}

	caches, err := startCaches(ctx, c, cfg, a.sig.Signal, log)
	if err != nil {
		return err
	}
	a.ready.Set("caches", "")
	node, err := a.waitNode(ctx, caches.Nodes)
	if err != nil {
		return err
	}
	local, err := detectLocalNode(node, cfg)
	if err != nil {
		return err
	}
	a.ready.Set("node", "")
	log.Info("node detected", "address", local.IPv4.String(), "interface", local.Interface, "mtu", local.MTU)

	// The route programmer first: it adopts the routes a previous run left
	// and keeps them until BGP has converged.
	bgpCfg := mergedBGPConfig(caches.Configs, cfg.NodeName)
	rt, err := routes.New(routes.Config{
		Protocol: bgpCfg.RouteProtocol, Table: bgpCfg.RouteTable,
		Interface: local.Interface, Address: local.IPv4, Address6: local.IPv6,
		SysctlRoot: cfg.SysctlRoot, Logger: log, Registerer: reg,
	})
	if err != nil {
		return fmt.Errorf("starting the route programmer: %w", err)
	}
	defer rt.Close()
	// Routes of ours already in the kernel were left by a previous run:
	// this is an agent restart with the forwarding state kept, and BGP
	// opens its sessions as a restarting speaker (peers keep our routes
	// until we re-send them).
	inherited, err := rt.Inherited()
	if err != nil {
		log.Warn("listing the routes of a previous run", "op", "start", "error", err)
	}
	if inherited > 0 {
		log.Info("routes of a previous run found: restarting with the forwarding state kept", "op", "start", "routes", inherited)
	}
	goRun("route programmer", func() error { return rt.Run(ctx) })

	alloc, err := ipam.New(ipam.Config{
		Node: cfg.NodeName, Client: c.rz, Kube: c.kube, Logger: log, Registerer: reg,
		Controller: &ipam.ControllerOptions{Metadata: c.meta, LeaseNamespace: cfg.Namespace},
	})
	if err != nil {
		return err
	}
	goRun("ipam", func() error { return alloc.Run(ctx) })
	ipamChanged := alloc.Subscribe()

	a.allocDuration = metrics.allocDuration
	a.events = newNodeEvents(&kubecore.Recorder{Events: c.kube.Events, Component: "rhizome-agent", Host: cfg.NodeName, Logger: log},
		func() kubecore.Object {
			n, err := caches.RhizomeNodes.Get(cfg.NodeName)
			if err != nil {
				return nil
			}
			return n
		})
	gcTuner := burstgc.New(burstgc.Config{Percent: cfg.BurstGOGC, HeapCap: uint64(cfg.BurstHeapCapMiB) << 20, Logger: log})
	defer gcTuner.Close()
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "rhizome_gc_bursts_total",
		Help: "Route bursts during which the agent raised its Go GC target (--burst-gogc).",
	}, func() float64 { return float64(gcTuner.Bursts()) }))
	// BFD for the sessions that turn it on (docs/design/0017). Without it
	// (UDP 3784 taken) BGP runs on, and those sessions' status says why.
	var bfdSessions bfd.Sessions
	bfdUnavailable := ""
	if m, err := bfd.NewManager(bfd.Config{Transport: &bfd.UDP{}, Logger: log}); err != nil {
		bfdUnavailable = err.Error()
		log.Warn("BFD is unavailable; BGP sessions run without it", "op", "bfd", "error", err)
	} else {
		bfdManager, bfdSessions = m, m
		// Sessions the agent before us handed over for its restart.
		if sus, err := bfd.ReadSuspended(bfd.SuspendedFile(filepath.Dir(cfg.AgentSocket))); err != nil {
			log.Warn("reading the BFD sessions of the agent before", "op", "bfd", "error", err)
		} else if len(sus) > 0 {
			m.Resume(sus)
		}
	}
	bgpRec := reconcile.New(reconcile.Config{
		NewSpeaker: func() bgp.Speaker { return bgp.NewGoBGP(bgp.GoBGPOptions{Logger: log}) },
		Sink:       ribsink.New(rt, gcTuner, log),
		Logger:     log,
		Registerer: reg,
		APIAddress: cfg.GoBGPAPIAddress,
		// Session changes become Events (rate-limited, events.go).
		OnSessionChange: a.events.sessionChanged,
		Restarting:      inherited > 0,
		BFD:             bfdSessions,
		BFDUnavailable:  bfdUnavailable,
	})
	goRun("bgp", func() error { bgpRec.Run(ctx); return nil })
	statusWriter := reconcile.NewStatusWriter(c.rz, cfg.NodeName, cfg.StatusInterval, log)
	goRun("bgp status", func() error { statusWriter.Run(ctx, bgpRec); return nil })

	a.attach(parts{
		Local: local, Caches: caches, RhizomeNodes: c.rz.RhizomeNodes(),
		IPAM: alloc, Routes: rt, BGP: bgpRec,
		RouteProtocol: bgpCfg.RouteProtocol, RouteTable: bgpCfg.RouteTable,
	})
	reg.MustRegister(newIPAMUsage(caches.Pools, alloc))

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
	if bfdManager != nil {
		// A planned restart: peers keep BFD Up for the graceful-restart
		// time while the next agent takes the sessions over (design 0017).
		sctx, scancel := context.WithTimeout(stopCtx, 2*time.Second)
		sus := bfdManager.CloseForRestart(sctx, bgpRec.BFDRestartHold)
		scancel()
		// Nothing to hand over, no file: a node without BFD sessions keeps
		// no state of them (the uninstall checks that none is left).
		if len(sus) > 0 {
			if err := bfd.WriteSuspended(bfd.SuspendedFile(filepath.Dir(cfg.AgentSocket)), sus); err != nil {
				log.Warn("handing the BFD sessions to the next agent", "op", "bfd", "error", err)
			}
		}
	}
	if err := bgpRec.Stop(stopCtx); err != nil {
		log.Warn("stopping BGP", "error", err)
	}
	cancel()
	wg.Wait()
	return loopErr
}

// statusView is /status: the local API's answer, nil before attach.
func (a *agent) statusView() *agentapi.StatusResponse {
	if !a.attached.Load() {
		return nil
	}
	return (&nodeState{a: a}).Status()
}

// alive is /healthz: the loop must have turned recently.
func (a *agent) alive() error {
	if since := time.Since(time.Unix(0, a.lastPass.Load())); since > 3*a.cfg.ResyncPeriod+time.Minute {
		return fmt.Errorf("no reconcile pass for %s", since.Round(time.Second))
	}
	return nil
}

// startCaches starts the informers the agent's loop reads, waits for them
// and returns their listers. Every change only calls signal.
func startCaches(ctx context.Context, c *clients, cfg Config, signal func(), log *slog.Logger) (reconcile.Listers, error) {
	core := informers.NewCore(c.kube, cfg.ResyncPeriod) // Nodes, and Secrets of the agent's namespace
	core.SecretsNamespace = cfg.Namespace
	rz := informers.NewRhizome(c.rz, cfg.ResyncPeriod)
	onChange := cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { signal() },
		UpdateFunc: func(old, cur any) {
			if passReads(old, cur) {
				signal()
			}
		},
		DeleteFunc: func(any) { signal() },
	}
	for _, inf := range []cache.SharedIndexInformer{
		core.Nodes(), core.Secrets(),
		rz.IPPools(), rz.BGPConfigurations(), rz.BGPPeers(), rz.RhizomeNodes(),
	} {
		if _, err := inf.AddEventHandler(onChange); err != nil {
			return reconcile.Listers{}, err
		}
	}
	core.Start(ctx.Done())
	rz.Start(ctx.Done())
	log.Info("waiting for the API server caches")
	for typ, ok := range core.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return reconcile.Listers{}, fmt.Errorf("syncing the %v cache: %w", typ, ctx.Err())
		}
	}
	for typ, ok := range rz.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return reconcile.Listers{}, fmt.Errorf("syncing the %v cache: %w", typ, ctx.Err())
		}
	}
	return reconcile.Listers{
		Nodes:        core.NodeLister(),
		RhizomeNodes: rz.RhizomeNodeLister(),
		Configs:      rz.BGPConfigurationLister(),
		Peers:        rz.BGPPeerLister(),
		Pools:        rz.IPPoolLister(),
		Secrets:      core.SecretLister().Secrets(cfg.Namespace),
	}, nil
}

// passReads reports whether an update changes anything a pass reads. Every
// other node's kubelet and agent update their Node and RhizomeNode now and
// then (heartbeats, conditions, the agent's own status); in a large cluster
// a pass over everything on each of those would keep the agent busy for
// nothing. Of a Node the pass reads its labels (selectors) and addresses,
// of a RhizomeNode its spec; other kinds change rarely and always count.
// An informer's periodic resync hands every cached object over again as
// both old and new (the same pointer, from its store): no change either;
// the loop's own resync ticker makes the periodic full pass. The two
// informer factories resyncing on their own woke two more full passes
// per period (at 5,000 nodes ~50-130 ms each, design 0018).
func passReads(old, cur any) bool {
	if old == cur {
		return false
	}
	switch o := old.(type) {
	case *corev1.Node:
		c, ok := cur.(*corev1.Node)
		return !ok || o.UID != c.UID || !maps.Equal(o.Labels, c.Labels) || !slices.Equal(o.Status.Addresses, c.Status.Addresses)
	case *v1alpha1.RhizomeNode:
		c, ok := cur.(*v1alpha1.RhizomeNode)
		return !ok || o.UID != c.UID || o.Spec != c.Spec
	}
	return true
}

// waitNode waits until this node's Node object exists.
func (a *agent) waitNode(ctx context.Context, nodes corelisters.NodeLister) (*corev1.Node, error) {
	var node *corev1.Node
	err := wait.PollUntilContextCancel(ctx, time.Second, true, func(context.Context) (bool, error) {
		n, err := nodes.Get(a.cfg.NodeName)
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

// mergedBGPConfig is the node's BGP configuration from the caches.
func mergedBGPConfig(l rzlisters.BGPConfigurationLister, nodeName string) topology.Config {
	var def, own *v1alpha1.BGPConfigurationSpec
	if c, err := l.Get(v1alpha1.DefaultBGPConfigurationName); err == nil {
		def = &c.Spec
	}
	if c, err := l.Get(v1alpha1.NodeBGPConfigurationPrefix + nodeName); err == nil {
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
