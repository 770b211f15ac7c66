package ipam

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/internal/informers"
	"github.com/rhizome-net/rhizome/internal/kubecore"
	"github.com/rhizome-net/rhizome/ipam/blockmath"
	"github.com/rhizome-net/rhizome/ipam/controller"
	"github.com/rhizome-net/rhizome/ipam/pools"
	"github.com/rhizome-net/rhizome/ipam/store"
)

// Config configures a NodeAllocator.
type Config struct {
	// Node is the name of this node (its core/v1 Node object); required.
	Node string
	// Client is the rhizome.dev client and Kube the core one; required.
	// (Tests adapt client-go's fake clientset with fromclientset.)
	Client kubecore.Rhizome
	Kube   kubecore.Interface
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the metrics; nil keeps them unregistered.
	Registerer prometheus.Registerer
	// Clock defaults to the real clock. Grace periods are measured on it.
	Clock clock.WithTicker
	// MaintenanceInterval is how often the node looks for empty blocks to
	// release; default 30s.
	MaintenanceInterval time.Duration
	// Controller, if set, makes Run take part in the election of the one
	// agent that runs the cluster-wide IPAM controllers.
	Controller *ControllerOptions
}

// ControllerOptions are what the cluster-wide controllers need beyond Config.
type ControllerOptions struct {
	// Metadata is a metadata-only client, used to watch pods cheaply.
	Metadata metadata.Interface
	// LeaseNamespace holds the election Lease; default kube-system.
	LeaseNamespace string
	// Interval between full passes; default 1m. MinInterval between passes
	// triggered by changes; default 5s.
	Interval, MinInterval time.Duration
}

// NodeAllocator is the Allocator and View of one node, backed by the API
// server. Create it with New, start it with Run.
type NodeAllocator struct {
	node  string
	cfg   Config
	log   *slog.Logger
	clock clock.WithTicker
	c     counters
	store *store.Store

	factory     *informers.Rhizome
	kubeFactory *informers.Core
	ctl         *controller.Controller

	ready  chan struct{}
	runCtx context.Context
	wg     sync.WaitGroup // block writers

	mu       sync.Mutex
	running  bool
	stopped  bool                    // Run is returning: no new writers
	blocks   map[string]*entry       // every block known, by name
	order    []*entry                // blocks in address order; nil = rebuild
	handles  map[string][]loc        // handle -> where its addresses are
	inflight map[string]*op          // handle/family -> queued allocation
	taken    map[string]netip.Prefix // lost claims not yet seen in the cache
	// claimLosses counts claims lost in a row; it widens the window of
	// free blocks the next claim picks from (see claim).
	claimLosses int
	pools       pools.Set
	settings    pools.Settings
	labels      labels.Set
	subs        []chan struct{}
	gen         uint64 // Snapshot.Generation: signals so far
	// invalid holds the blocks that failed store.Check, by name, with why:
	// they get no entry (no allocations, no routes).
	invalid map[string]error
	// releasing counts the releases of each handle in progress: they
	// settle its allocations in flight, and refuse new ones.
	releasing map[string]int
	// shadowed counts the entries that overlap an older block (set when
	// order is rebuilt).
	shadowed int
}

// loc is one address held by a handle.
type loc struct {
	block string
	addr  netip.Addr
}

// entry is the allocator's state of one block.
type entry struct {
	name   string
	prefix netip.Prefix
	// obj is the newest version seen (from the cache or our own writes);
	// nil while our claim (create) is in flight. Never modified in place.
	obj      *v1alpha1.IPAMBlock
	used     []bool      // offsets allocated in obj
	reserved map[int]*op // offsets promised to queued allocations
	queue    []*op       // operations waiting for the writer
	writing  bool        // a writer goroutine owns the queue
	creating bool        // claimed by us; the create is not confirmed yet
	deleting bool        // our delete is in flight
	// shadowedBy names an older block that this one overlaps: the
	// addresses are that block's, so this one is neither allocated from
	// nor routed (store.Overlaps). Set when order is rebuilt.
	shadowedBy string
	// lastBatch is how many operations the last write carried.
	lastBatch int
}

var _ Allocator = (*NodeAllocator)(nil)
var _ View = (*NodeAllocator)(nil)

// New creates a NodeAllocator. It does not contact the API server.
func New(cfg Config) (*NodeAllocator, error) {
	if cfg.Node == "" || cfg.Client == nil || cfg.Kube == nil {
		return nil, errors.New("ipam: Config needs Node, Client and Kube")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.MaintenanceInterval <= 0 {
		cfg.MaintenanceInterval = 30 * time.Second
	}
	a := &NodeAllocator{
		node:      cfg.Node,
		cfg:       cfg,
		log:       cfg.Logger.With("component", "ipam", "node", cfg.Node),
		clock:     cfg.Clock,
		ready:     make(chan struct{}),
		blocks:    map[string]*entry{},
		handles:   map[string][]loc{},
		inflight:  map[string]*op{},
		taken:     map[string]netip.Prefix{},
		invalid:   map[string]error{},
		releasing: map[string]int{},
		settings:  pools.SettingsFrom(nil),
	}
	a.store = &store.Store{
		Blocks:     cfg.Client.IPAMBlocks(),
		OnWrite:    a.c.wrote,
		OnConflict: func() { a.c.conflicts.Add(1) },
	}
	if cfg.Registerer != nil {
		if err := a.c.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("ipam: registering metrics: %w", err)
		}
		if err := a.registerInvalid(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("ipam: registering metrics: %w", err)
		}
	}
	a.factory = informers.NewRhizome(cfg.Client, 0)
	a.kubeFactory = informers.NewCore(cfg.Kube, 0)
	// Only this node's Node object: its labels decide which pools apply.
	a.kubeFactory.NodeTweak = func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", cfg.Node).String()
	}
	reload := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.reload() },
		UpdateFunc: func(any, any) { a.reload() },
		DeleteFunc: func(any) { a.reload() },
	}
	for _, inf := range []cache.SharedIndexInformer{
		a.factory.IPPools(), a.factory.IPAMConfigurations(), a.kubeFactory.Nodes(),
	} {
		if _, err := inf.AddEventHandler(reload); err != nil {
			return nil, fmt.Errorf("ipam: adding event handler: %w", err)
		}
	}
	_, err := cache.NewTypedSharedIndexInformer[*v1alpha1.IPAMBlock](a.factory.IPAMBlocks()).AddTypedEventHandler(cache.TypedResourceEventHandlerFuncs[*v1alpha1.IPAMBlock]{
		AddFunc:    a.onBlock,
		UpdateFunc: func(_, b *v1alpha1.IPAMBlock) { a.onBlock(b) },
		DeleteFunc: a.onBlockDeleted,
	})
	if err != nil {
		return nil, fmt.Errorf("ipam: adding event handler: %w", err)
	}
	if o := cfg.Controller; o != nil {
		a.ctl, err = controller.New(controller.Config{
			Identity:       cfg.Node,
			Client:         cfg.Client,
			Kube:           cfg.Kube,
			Metadata:       o.Metadata,
			Informers:      a.factory,
			Logger:         cfg.Logger,
			Registerer:     cfg.Registerer,
			Clock:          cfg.Clock,
			LeaseNamespace: o.LeaseNamespace,
			Interval:       o.Interval,
			MinInterval:    o.MinInterval,
		})
		if err != nil {
			return nil, fmt.Errorf("ipam: %w", err)
		}
	}
	return a, nil
}

// Run fills the caches, serves allocations until ctx ends, releases empty
// blocks after their grace period and, if configured, runs the cluster-wide
// controllers while this agent holds the Lease. It returns after the
// in-flight writes have finished.
func (a *NodeAllocator) Run(ctx context.Context) error {
	a.mu.Lock()
	if a.running {
		a.mu.Unlock()
		return errors.New("ipam: Run called twice")
	}
	a.running = true
	a.runCtx = ctx
	a.mu.Unlock()

	a.factory.Start(ctx.Done())
	a.kubeFactory.Start(ctx.Done())
	defer a.factory.Shutdown()
	defer a.kubeFactory.Shutdown()
	defer func() {
		a.mu.Lock()
		a.stopped = true
		a.mu.Unlock()
		a.wg.Wait()
	}()
	for typ, ok := range a.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("ipam: cache of %v did not sync: %w", typ, ctx.Err())
		}
	}
	for typ, ok := range a.kubeFactory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("ipam: cache of %v did not sync: %w", typ, ctx.Err())
		}
	}
	a.reload()
	a.mu.Lock()
	close(a.ready)
	a.signal()
	a.mu.Unlock()
	a.log.Info("ipam ready", "op", "run", "blocks", len(a.Snapshot().Affine))

	var ctlDone chan struct{}
	if a.ctl != nil {
		ctlDone = make(chan struct{})
		go func() {
			defer close(ctlDone)
			a.ctl.Run(ctx)
		}()
	}
	t := a.clock.NewTicker(a.cfg.MaintenanceInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if ctlDone != nil {
				<-ctlDone
			}
			return nil // the deferred stop waits for the writers
		case <-t.C():
			if _, err := a.ReleaseEmptyBlocks(ctx); err != nil && ctx.Err() == nil {
				a.log.Warn("releasing empty blocks", "op", "maintain", "error", err)
			}
		}
	}
}

// Stats returns the allocator's counters.
func (a *NodeAllocator) Stats() Stats { return a.c.stats() }

// ControllerStats returns the cluster-wide controller's counters, and false
// if this allocator does not take part in the election.
func (a *NodeAllocator) ControllerStats() (controller.Stats, bool) {
	if a.ctl == nil {
		return controller.Stats{}, false
	}
	return a.ctl.Stats(), true
}

func (a *NodeAllocator) waitReady(ctx context.Context) error {
	select {
	case <-a.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("ipam: waiting for the caches to sync: %w", ctx.Err())
	}
}

// reload re-reads pools, settings and this node's labels from the caches.
func (a *NodeAllocator) reload() {
	list, err := a.factory.IPPoolLister().List(labels.Everything())
	if err != nil {
		a.log.Error("listing pools from the cache", "op", "reload", "error", err)
		return
	}
	set := pools.From(list)
	cfg, err := a.factory.IPAMConfigurationLister().Get(v1alpha1.IPAMConfigurationName)
	if err != nil && !apierrors.IsNotFound(err) {
		a.log.Error("reading the IPAMConfiguration from the cache", "op", "reload", "error", err)
		return
	}
	settings := pools.SettingsFrom(cfg)
	var nodeLabels labels.Set
	if n, err := a.kubeFactory.NodeLister().Get(a.node); err == nil {
		nodeLabels = labels.Set(n.Labels)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pools, a.settings, a.labels = set, settings, nodeLabels
	a.signal()
}

func (a *NodeAllocator) onBlock(b *v1alpha1.IPAMBlock) {
	prefix, err := store.Check(b)
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		// The cidr is immutable, so a block never turns valid or invalid;
		// log once per name.
		if _, seen := a.invalid[b.Name]; !seen {
			a.log.Warn("ignoring invalid block", "op", "watch", "block", b.Name, "cidr", b.Spec.CIDR, "affinity", b.Spec.Affinity, "error", err)
		}
		a.invalid[b.Name] = err
		return
	}
	delete(a.taken, b.Name)
	e := a.blocks[b.Name]
	if e == nil {
		e = a.addEntry(prefix)
	}
	a.setObj(e, b)
}

func (a *NodeAllocator) onBlockDeleted(d cache.DeletedObject[*v1alpha1.IPAMBlock]) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.invalid, d.GetObjectName().Name)
	e := a.blocks[d.GetObjectName().Name]
	// A writer in flight finds out from its own write; a different UID is
	// a newer incarnation that we already hold.
	if e == nil || e.writing || e.creating ||
		(d.OptionalObj != nil && e.obj != nil && e.obj.UID != d.OptionalObj.UID) {
		return
	}
	a.removeEntry(e)
}

func (a *NodeAllocator) addEntry(prefix netip.Prefix) *entry {
	e := &entry{
		name:     blockmath.Name(prefix),
		prefix:   prefix,
		used:     make([]bool, 1<<(prefix.Addr().BitLen()-prefix.Bits())),
		reserved: map[int]*op{},
	}
	a.blocks[e.name] = e
	a.order = nil
	return e
}

func (a *NodeAllocator) removeEntry(e *entry) {
	if a.blocks[e.name] != e {
		return
	}
	a.indexHandles(e.obj, nil, e.name)
	delete(a.blocks, e.name)
	a.order = nil
	for _, o := range e.queue {
		a.finish(o, result{retry: true})
	}
	e.queue = nil
	if e.obj != nil {
		a.signal()
	}
}

// setObj records a newer version of a block. Versions older than the one
// held (a watch event that lags our own write) are ignored.
func (a *NodeAllocator) setObj(e *entry, b *v1alpha1.IPAMBlock) {
	// resourceVersions are comparable across incarnations of a name, so a
	// lagging event of a deleted incarnation never replaces a newer one.
	if e.obj != nil && !newer(b, e.obj) {
		return
	}
	old := e.obj
	if old == nil {
		a.order = nil // its creation time takes part in the overlap order
	}
	a.indexHandles(old, b, e.name)
	e.obj = b
	clear(e.used)
	for _, al := range b.Spec.Allocations {
		if addr, err := netip.ParseAddr(al.Address); err == nil {
			if off, ok := blockmath.Offset(e.prefix, addr); ok {
				e.used[off] = true
			}
		}
	}
	if routingChanged(old, b) {
		a.signal()
	}
}

func newer(x, y *v1alpha1.IPAMBlock) bool {
	c, err := resourceversion.CompareResourceVersion(x.ResourceVersion, y.ResourceVersion)
	return err != nil || c > 0
}

// indexHandles moves a block's entries in the handle index from old to new.
func (a *NodeAllocator) indexHandles(old, new *v1alpha1.IPAMBlock, name string) {
	if old != nil {
		for _, al := range old.Spec.Allocations {
			locs := slices.DeleteFunc(a.handles[al.Handle], func(l loc) bool { return l.block == name })
			if len(locs) == 0 {
				delete(a.handles, al.Handle)
			} else {
				a.handles[al.Handle] = locs
			}
		}
	}
	if new != nil {
		for _, al := range new.Spec.Allocations {
			if addr, err := netip.ParseAddr(al.Address); err == nil {
				a.handles[al.Handle] = append(a.handles[al.Handle], loc{block: name, addr: addr})
			}
		}
	}
}

// sorted returns the blocks in address order (IPv4 first; of blocks that
// start at one address, the larger first). Rebuilding the order, which
// happens only when a block appears or goes, also decides which blocks
// overlap an older one.
func (a *NodeAllocator) sorted() []*entry {
	if a.order == nil {
		a.order = make([]*entry, 0, len(a.blocks))
		placed := make([]store.Placed, 0, len(a.blocks))
		for _, e := range a.blocks {
			a.order = append(a.order, e)
			p := store.Placed{Name: e.name, Prefix: e.prefix}
			if e.obj != nil {
				p.Created = e.obj.CreationTimestamp.Time
			}
			placed = append(placed, p)
		}
		slices.SortFunc(a.order, func(x, y *entry) int {
			return cmp.Or(x.prefix.Addr().Compare(y.prefix.Addr()), cmp.Compare(x.prefix.Bits(), y.prefix.Bits()))
		})
		over := store.Overlaps(placed)
		a.shadowed = len(over)
		for _, e := range a.order {
			if by := over[e.name]; by != e.shadowedBy {
				if by != "" {
					a.log.Warn("ignoring block that overlaps an older block", "op", "watch", "block", e.name, "older", by)
				}
				e.shadowedBy = by
			}
		}
	}
	return a.order
}

// mine reports whether a block is (or is being claimed as) this node's.
func (a *NodeAllocator) mine(e *entry) bool {
	return e.creating || (e.obj != nil && e.obj.Spec.Affinity == a.node)
}
