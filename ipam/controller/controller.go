// Package controller runs the cluster-wide IPAM controllers: the garbage
// collector of orphaned addresses, the cleanup of blocks whose node is gone,
// IPPool status (use, Exhausted, Valid), the events when a pool fills up, and
// the IPPool finalizer that holds back the deletion of a pool in use.
//
// They must have a single writer, so they run in one agent at a time: the
// holder of a coordination.k8s.io Lease (internal/lease, client-go's algorithm). Each
// pass recomputes everything from the informer caches; every write is a
// compare-and-swap, so a pass cut short by a lost Lease leaves nothing half
// done. The garbage collector is conservative: an address is released only
// after it was seen orphaned (its pod gone, or for an address without a pod,
// its node gone) in two passes a grace period apart, and after a live read
// from the API server confirms it. Its memory of first sightings is per
// leadership term, so a new leader waits a full grace period again.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	listers "github.com/rhizome-net/rhizome/crds/client/listers/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/internal/informers"
	"github.com/rhizome-net/rhizome/internal/kubecore"
	"github.com/rhizome-net/rhizome/internal/lease"
	"github.com/rhizome-net/rhizome/ipam/store"
)

// LeaseName is the name of the election Lease.
const LeaseName = "rhizome-ipam-controller"

// Config configures a Controller.
type Config struct {
	// Identity names this candidate in the Lease (the node name).
	Identity string
	Client   kubecore.Rhizome
	Kube     kubecore.Interface
	// Metadata is a metadata-only client: pods are watched without their
	// specs, which keeps the leader's memory small.
	Metadata metadata.Interface
	// Informers is the shared factory of rhizome.dev informers (the
	// allocator's, so that pools and blocks are cached once); nil creates
	// one.
	Informers  *informers.Rhizome
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Clock      clock.WithTicker
	// LeaseNamespace defaults to kube-system.
	LeaseNamespace string
	// Interval between passes when nothing changes; default 1m. Changes to
	// pools, blocks, nodes or pods trigger a pass sooner, at most one per
	// MinInterval (default 5s).
	Interval, MinInterval time.Duration
	// Lease timings; defaults 15s, 10s, 2s.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// Controller is the cluster-wide IPAM controller.
type Controller struct {
	cfg      Config
	log      *slog.Logger
	clock    clock.WithTicker
	store    *store.Store
	recorder *kubecore.Recorder
	m        metrics

	pools    listers.IPPoolLister
	blocks   listers.IPAMBlockLister
	settings listers.IPAMConfigurationLister
	synced   []cache.InformerSynced

	// Per leadership term: caches of nodes and pods, and first sightings.
	nodes   corelisters.NodeLister
	pods    cache.GenericLister
	orphans map[string]time.Time
	trigger chan struct{}
	// written holds the pools as this controller last wrote them, so that
	// a cache lagging behind its own write does not repeat the write and
	// its events.
	written map[string]*v1alpha1.IPPool
	// blocksWritten is the same for blocks: a block released in one pass
	// must not look orphaned again in the next because the cache lags.
	blocksWritten map[string]*v1alpha1.IPAMBlock
	// reported holds the invalid blocks already given an Event this term.
	reported map[types.UID]bool
}

// New creates a Controller; Run starts it.
func New(cfg Config) (*Controller, error) {
	if cfg.Identity == "" || cfg.Client == nil || cfg.Kube == nil || cfg.Metadata == nil {
		return nil, errors.New("controller: Config needs Identity, Client, Kube and Metadata")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Informers == nil {
		cfg.Informers = informers.NewRhizome(cfg.Client, 0)
	}
	cfg.LeaseNamespace = cmpOr(cfg.LeaseNamespace, metav1.NamespaceSystem)
	cfg.Interval = cmpOr(cfg.Interval, time.Minute)
	cfg.MinInterval = cmpOr(cfg.MinInterval, 5*time.Second)
	cfg.LeaseDuration = cmpOr(cfg.LeaseDuration, 15*time.Second)
	cfg.RenewDeadline = cmpOr(cfg.RenewDeadline, 10*time.Second)
	cfg.RetryPeriod = cmpOr(cfg.RetryPeriod, 2*time.Second)

	c := &Controller{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "ipam-controller", "node", cfg.Identity),
		clock:   cfg.Clock,
		orphans: map[string]time.Time{},
		trigger: make(chan struct{}, 1),
		written: map[string]*v1alpha1.IPPool{},

		blocksWritten: map[string]*v1alpha1.IPAMBlock{},
		reported:      map[types.UID]bool{},
	}
	c.store = &store.Store{Blocks: cfg.Client.IPAMBlocks()}
	if cfg.Registerer != nil {
		if err := c.m.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("controller: registering metrics: %w", err)
		}
	}
	f := cfg.Informers
	c.pools, c.blocks, c.settings = f.IPPoolLister(), f.IPAMBlockLister(), f.IPAMConfigurationLister()
	for _, inf := range []cache.SharedIndexInformer{f.IPPools(), f.IPAMBlocks(), f.IPAMConfigurations()} {
		if _, err := inf.AddEventHandler(c.poke()); err != nil {
			return nil, fmt.Errorf("controller: adding event handler: %w", err)
		}
		c.synced = append(c.synced, inf.HasSynced)
	}

	c.recorder = &kubecore.Recorder{Events: cfg.Kube.Events, Component: "rhizome-ipam", Host: cfg.Identity, Logger: c.log}
	return c, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// poke returns event handlers that ask for a pass.
func (c *Controller) poke() cache.ResourceEventHandlerFuncs {
	f := func() {
		select {
		case c.trigger <- struct{}{}:
		default:
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { f() },
		UpdateFunc: func(any, any) { f() },
		DeleteFunc: func(any) { f() },
	}
}

// Run takes part in the election until ctx ends, running passes while it
// holds the Lease. A lost Lease ends the term; Run then stands again.
func (c *Controller) Run(ctx context.Context) {
	le, err := lease.New(lease.Config{
		Leases:   c.cfg.Kube.Leases(c.cfg.LeaseNamespace),
		Name:     LeaseName,
		Identity: c.cfg.Identity,
		Duration: c.cfg.LeaseDuration,
		Deadline: c.cfg.RenewDeadline,
		Retry:    c.cfg.RetryPeriod,
		Logger:   c.log,
	})
	if err != nil {
		c.log.Error("leader election", "op", "elect", "error", err)
		return
	}
	for ctx.Err() == nil {
		le.Run(ctx, c.lead)
	}
}

// lead runs one leadership term.
func (c *Controller) lead(ctx context.Context) {
	c.log.Info("leading the cluster-wide IPAM controllers", "op", "elect")
	defer c.log.Info("stopped leading", "op", "elect")
	c.m.leader.Store(1)
	defer c.m.leader.Store(0)
	if err := c.Start(ctx); err != nil {
		c.log.Error("starting caches", "op", "elect", "error", err)
		return
	}
	t := c.clock.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		if err := c.Reconcile(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("IPAM controller pass", "op", "reconcile", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-c.clock.After(c.cfg.MinInterval):
		}
		select {
		case <-ctx.Done():
			return
		case <-c.trigger:
		case <-t.C():
		}
	}
}

// Start begins a term: it starts the caches of nodes and pods (bound to
// ctx) and of pools and blocks if nobody has, forgets earlier sightings and
// waits for the caches to fill. Run calls it on election; tests call it
// before calling Reconcile directly.
func (c *Controller) Start(ctx context.Context) error {
	kf := informers.NewCore(c.cfg.Kube, 0)
	nodes := kf.Nodes()
	// Pods without their specs (metadata only) keep the leader's memory small.
	pods := informers.New[*metav1.PartialObjectMetadataList](c.cfg.Metadata.Resource(podsGVR).Namespace(metav1.NamespaceAll),
		&metav1.PartialObjectMetadata{}, 0, nil)
	for _, inf := range []cache.SharedIndexInformer{nodes, pods} {
		if _, err := inf.AddEventHandler(c.poke()); err != nil {
			return fmt.Errorf("controller: adding event handler: %w", err)
		}
	}
	c.nodes, c.pods = kf.NodeLister(), cache.NewGenericLister(pods.GetIndexer(), podsGVR.GroupResource())
	c.orphans = map[string]time.Time{}
	c.written = map[string]*v1alpha1.IPPool{}
	c.blocksWritten = map[string]*v1alpha1.IPAMBlock{}
	c.reported = map[types.UID]bool{}
	kf.Start(ctx.Done())
	go pods.RunWithContext(ctx)
	c.cfg.Informers.Start(ctx.Done())
	synced := append([]cache.InformerSynced{nodes.HasSynced, pods.HasSynced}, c.synced...)
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return fmt.Errorf("controller: caches did not sync: %w", ctx.Err())
	}
	return nil
}

// Stats are the garbage collector's counters since the Controller was made.
type Stats struct {
	Candidates         int64  // allocations now seen orphaned, waiting for their grace period
	CandidatesSeen     uint64 // allocations seen orphaned for the first time
	Releases           uint64 // orphaned allocations released
	AffinitiesReleased uint64 // blocks whose affinity was removed because their node is gone
	Leader             bool   // a term is running
}

// Stats returns the counters.
func (c *Controller) Stats() Stats {
	return Stats{
		Candidates: c.m.candidates.Load(), CandidatesSeen: c.m.candidatesSeen.Load(), Releases: c.m.releases.Load(),
		AffinitiesReleased: c.m.affinities.Load(), Leader: c.m.leader.Load() == 1,
	}
}

type metrics struct {
	candidates, leader                   atomic.Int64
	candidatesSeen, releases, affinities atomic.Uint64
}

func (m *metrics) register(r prometheus.Registerer) error {
	opts := func(name, help string) prometheus.GaugeOpts {
		return prometheus.GaugeOpts{Namespace: "rhizome", Subsystem: "ipam", Name: name, Help: help}
	}
	counter := func(name, help string, v *atomic.Uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts(opts(name, help)), func() float64 { return float64(v.Load()) })
	}
	gauge := func(name, help string, v *atomic.Int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(opts(name, help), func() float64 { return float64(v.Load()) })
	}
	for _, col := range []prometheus.Collector{
		gauge("gc_candidates", "Allocations now seen orphaned (pod or node gone), waiting for their grace period.", &m.candidates),
		gauge("controller_leader", "1 while this agent runs the cluster-wide IPAM controllers.", &m.leader),
		counter("gc_candidates_seen_total", "Allocations seen orphaned for the first time.", &m.candidatesSeen),
		counter("gc_releases_total", "Orphaned allocations released by the garbage collector.", &m.releases),
		counter("gc_affinities_released_total", "Blocks whose affinity was removed because their node is gone.", &m.affinities),
	} {
		if err := r.Register(col); err != nil {
			return err
		}
	}
	return nil
}
