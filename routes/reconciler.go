package routes

import (
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/routes/datapath"
)

// Defaults of Config.
const (
	DefaultVXLANDevice    = "vxlan.rhizome"
	DefaultVXLANVNI       = 4096
	DefaultVXLANPort      = 4789
	DefaultResyncInterval = 60 * time.Second
	// IPIPDevice is the kernel's IPIP fallback device; IPIP routes use it.
	IPIPDevice = "tunl0"
)

// Config is what the agent decides for the route programmer.
type Config struct {
	// Protocol is the rtm_protocol on every route we own (default
	// v1alpha1.DefaultRouteProtocol, 114). It is how ownership is told
	// apart: routes of any other protocol are never touched.
	Protocol int
	// Table is the kernel routing table (default 254, main).
	Table int
	// Interface is the node's underlay interface; empty = the one holding
	// Address.
	Interface string
	// Address is the node's IPv4 underlay address with its subnet's prefix
	// length (e.g. 192.168.1.10/24): next hops inside that subnet are
	// reached without encapsulation under CrossSubnet. Address6 likewise.
	Address, Address6 netip.Prefix
	// MTU, if set, is used for the tunnel devices and reported as the pod
	// MTU instead of the underlay MTU minus encapsulation overhead.
	MTU int
	// VXLANDevice, VXLANVNI and VXLANPort: defaults vxlan.rhizome, 4096, 4789.
	VXLANDevice string
	VXLANVNI    int
	VXLANPort   int
	// VXLANMAC is the VXLAN device's MAC; default derived from Address so
	// that it survives restarts and reboots (the agent publishes it).
	VXLANMAC net.HardwareAddr
	// ResyncInterval is the period of the full resync (default 60 s).
	ResyncInterval time.Duration
	// NetNS is the network namespace (path of a bind mount) to program;
	// empty = the agent's own. Tests use it.
	NetNS string
	// SysctlRoot is where the network sysctls are read and written:
	// default /proc/sys. In a container /proc/sys is read-only, so the
	// DaemonSet mounts the host's /proc/sys/net at /host/proc/sys/net and
	// the agent passes /host/proc/sys.
	SysctlRoot string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the metrics; nil = no metrics.
	Registerer prometheus.Registerer
}

func (c *Config) defaults() error {
	if c.Protocol == 0 {
		c.Protocol = v1alpha1.DefaultRouteProtocol
	}
	if c.Protocol < 5 || c.Protocol > 255 {
		return fmt.Errorf("route protocol %d: must be 5-255 (0-4 are the kernel's own)", c.Protocol)
	}
	if c.Table == 0 {
		c.Table = v1alpha1.DefaultRouteTable
	}
	if c.Table < 1 || c.Table > 0xFFFFFFFF || c.Table == 255 {
		return fmt.Errorf("route table %d: must be 1-4294967295 and not 255 (local)", c.Table)
	}
	if c.Interface == "" && !c.Address.IsValid() {
		return errors.New("either the underlay interface or the node address is needed")
	}
	if c.Address.IsValid() && !c.Address.Addr().Is4() {
		return fmt.Errorf("address %s is not IPv4 (use Address6)", c.Address)
	}
	if c.Address6.IsValid() && c.Address6.Addr().Is4() {
		return fmt.Errorf("address6 %s is not IPv6", c.Address6)
	}
	if c.VXLANDevice == "" {
		c.VXLANDevice = DefaultVXLANDevice
	}
	if c.VXLANVNI == 0 {
		c.VXLANVNI = DefaultVXLANVNI
	}
	if c.VXLANPort == 0 {
		c.VXLANPort = DefaultVXLANPort
	}
	if c.VXLANMAC == nil {
		c.VXLANMAC = deriveMAC(c.Address.Addr().String() + "/" + c.Interface)
	}
	if len(c.VXLANMAC) != 6 {
		return fmt.Errorf("VXLAN MAC %s is not 6 bytes", c.VXLANMAC)
	}
	if c.ResyncInterval == 0 {
		c.ResyncInterval = DefaultResyncInterval
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// deriveMAC makes a stable, locally administered unicast MAC from seed.
func deriveMAC(seed string) net.HardwareAddr {
	h := fnv.New64a()
	h.Write([]byte("rhizome-vxlan/" + seed))
	s := h.Sum(nil)
	return net.HardwareAddr{(s[0] | 0x02) &^ 0x01, s[1], s[2], s[3], s[4], s[5]}
}

// Reconciler keeps the kernel's routes, tunnel devices, VXLAN neighbours,
// sysctls and NAT rules equal to the desired state the agent gives it.
//
// All methods are safe for concurrent use. SetState and Apply only record
// and (once Run has made its first pass) write; Run makes the full passes.
type Reconciler struct {
	cfg Config
	k   Kernel
	log *slog.Logger
	m   *metrics

	trigger chan struct{}
	// retrySoon asks Run for a retry pass with backoff after a write
	// outside a pass failed.
	retrySoon chan struct{}

	mu        sync.Mutex
	state     State
	stateSet  bool
	ready     bool // first pass done after SetState: Apply writes at once
	converged bool
	want      desiredSet
	comp      *compiler
	dev       DeviceStatus
	// owned is our routes in the kernel, as last listed and written.
	owned map[netip.Prefix]Route
	// conflicts are keys held by a route of another protocol that we never
	// owned: left alone, retried every pass.
	conflicts map[netip.Prefix]struct{}
	// routeErrs are routes we cannot compute (no VTEP, no device...) or
	// that the kernel refused.
	routeErrs map[netip.Prefix]error
	// failedWrites counts the routes the kernel refused since the last
	// pass began (conflicts aside): Run retries them with backoff.
	failedWrites int
	// evq holds kernel events waiting to be judged (see onEvents); evMu
	// guards it, evSpare is its recycled buffer (under mu).
	evMu    sync.Mutex
	evq     []Event
	evSpare []Event
	// The write queue (see enqueue), guarded by wqMu.
	wqMu     sync.Mutex
	wqCond   *sync.Cond
	wq       []*plan
	writing  bool
	writerUp bool
	closed   bool
	// sysChanged are the sysctls this Reconciler has written.
	sysChanged map[string]bool
	status     Status
}

// New opens the kernel (in cfg.NetNS) and returns a Reconciler over it.
func New(cfg Config) (*Reconciler, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	k, err := OpenKernel(cfg.NetNS, uint32(cfg.Table), uint8(cfg.Protocol), cfg.VXLANDevice)
	if err != nil {
		return nil, err
	}
	if cfg.SysctlRoot != "" {
		k.Sysctls = procSysctls{nsPath: cfg.NetNS, root: cfg.SysctlRoot}
	}
	return newReconciler(cfg, *k), nil
}

// NewWithKernel returns a Reconciler over the given kernel seams (fakes in
// tests). Kernel.Table, Devices, NAT and Sysctls must be set.
func NewWithKernel(cfg Config, k Kernel) (*Reconciler, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if k.Table == nil || k.Devices == nil || k.NAT == nil || k.Sysctls == nil {
		return nil, errors.New("kernel: Table, Devices, NAT and Sysctls are required")
	}
	return newReconciler(cfg, k), nil
}

func newReconciler(cfg Config, k Kernel) *Reconciler {
	r := &Reconciler{
		cfg:        cfg,
		k:          k,
		log:        cfg.Logger.With("component", "routes"),
		trigger:    make(chan struct{}, 1),
		retrySoon:  make(chan struct{}, 1),
		owned:      map[netip.Prefix]Route{},
		conflicts:  map[netip.Prefix]struct{}{},
		routeErrs:  map[netip.Prefix]error{},
		sysChanged: map[string]bool{},
		want: desiredSet{
			blocks: map[netip.Prefix]*OwnBlock{},
			lent:   map[netip.Prefix]netip.Addr{},
			remote: map[netip.Prefix]RemoteRoute{},
		},
	}
	r.wqCond = sync.NewCond(&r.wqMu)
	r.m = newMetrics(cfg.Registerer)
	r.comp = r.newCompiler()
	return r
}

// Close waits for queued writes, stops the writer and releases the kernel
// sockets. Routes, devices and rules stay.
func (r *Reconciler) Close() error {
	r.WaitWritten()
	r.wqMu.Lock()
	r.closed = true
	r.wqCond.Broadcast()
	r.wqMu.Unlock()
	if r.k.Close != nil {
		return r.k.Close()
	}
	return nil
}

// Inherited counts the routes of ours the kernel holds right now. Called
// before Run, they are the routes a previous run of the agent left (it
// keeps them when it stops): the node kept its forwarding state across an
// agent restart, which BGP tells its peers (graceful restart's Forwarding
// State bit).
func (r *Reconciler) Inherited() (int, error) {
	l, err := r.k.Table.List()
	return len(l), err
}

// VXLANMAC is the MAC of this node's VXLAN device, known from the start;
// the agent publishes it as RhizomeNode spec.vxlanTunnelMACAddr.
func (r *Reconciler) VXLANMAC() net.HardwareAddr { return slices.Clone(r.cfg.VXLANMAC) }

// PodMTU is the MTU pods should use: Config.MTU if set, else the underlay
// MTU minus the overhead of the encapsulation in use. 0 until the first
// pass has found the underlay.
func (r *Reconciler) PodMTU() int {
	r.mu.Lock()
	defer r.unlock()
	return r.podMTU()
}

func (r *Reconciler) podMTU() int {
	if r.cfg.MTU > 0 {
		return r.cfg.MTU
	}
	if r.dev.UnderlayMTU == 0 {
		return 0
	}
	vx, ipip := r.encapsInUse()
	switch {
	case vx:
		return r.dev.UnderlayMTU - datapath.OverheadVXLAN
	case ipip:
		return r.dev.UnderlayMTU - datapath.OverheadIPIP
	}
	return r.dev.UnderlayMTU
}

// encapsInUse says which tunnel devices the pools need.
func (r *Reconciler) encapsInUse() (vxlan, ipip bool) {
	for _, p := range r.state.Pools {
		if p.VXLANMode == v1alpha1.EncapAlways || p.VXLANMode == v1alpha1.EncapCrossSubnet {
			vxlan = true
		}
		if p.IPIPMode == v1alpha1.EncapAlways || p.IPIPMode == v1alpha1.EncapCrossSubnet {
			ipip = true
		}
	}
	return vxlan, ipip
}

// SetState replaces the node-local desired state and triggers a pass. An
// invalid state is refused whole with an error naming the problem; the
// previous state stays in force.
func (r *Reconciler) SetState(s State) error {
	if err := s.validate(); err != nil {
		return fmt.Errorf("desired state: %w", err)
	}
	r.mu.Lock()
	r.state = s
	r.stateSet = true
	r.want.blocks = make(map[netip.Prefix]*OwnBlock, len(s.Blocks))
	r.want.lent = map[netip.Prefix]netip.Addr{}
	for i := range s.Blocks {
		b := &s.Blocks[i]
		r.want.blocks[b.Prefix] = b
		for a, borrower := range b.Lent {
			r.want.lent[netip.PrefixFrom(a, a.BitLen())] = borrower
		}
	}
	r.comp = r.newCompiler()
	r.mu.Unlock()
	r.Trigger()
	return nil
}

// SetConverged tells the Reconciler that BGP has converged (or graceful
// restart ended): from now on, routes of ours that nobody wants any more,
// including those adopted at start, are deleted. Before, they are kept, so
// that a restarting agent does not blackhole traffic while BGP relearns.
func (r *Reconciler) SetConverged() {
	r.mu.Lock()
	already := r.converged
	r.converged = true
	// Only a pass can delete stale routes; Apply keeps the rest current,
	// so without stale routes at the last pass none is needed (a pass
	// lists every route: 0.1-0.2 s of CPU at 100k).
	n := r.status.StaleRoutes
	stale := n > 0 || r.status.Passes == 0
	r.mu.Unlock()
	if !already {
		r.log.Info("BGP converged: stale routes will be removed", "op", "converged", "stale", n)
		if stale {
			r.Trigger()
		}
	}
}

// Trigger asks Run for a full pass soon; calls coalesce.
func (r *Reconciler) Trigger() {
	select {
	case r.trigger <- struct{}{}:
	default:
	}
}

// newCompiler snapshots what compiling needs. Called with mu held.
func (r *Reconciler) newCompiler() *compiler {
	c := &compiler{links: r.dev.Links, pools: slices.Clone(r.state.Pools), vteps: map[netip.Addr]VTEP{},
		resolve: r.k.Devices.Resolve}
	if r.cfg.Address.IsValid() {
		c.links.Subnet4 = r.cfg.Address
	}
	if r.cfg.Address6.IsValid() {
		c.links.Subnet6 = r.cfg.Address6
	}
	for _, v := range r.state.VTEPs {
		c.vteps[v.NodeIP] = v
	}
	return c
}

// Apply changes the remote routes and, once the Reconciler is running,
// queues the writes of the affected kernel routes at once, batched; a
// writer goroutine sends them in order (WaitWritten waits for it). This is the fast
// path for BGP: it touches only the prefixes in the batch. Invalid entries
// are skipped and reported in the error; the rest is applied. Routes that
// cannot be built (e.g. no VTEP for a next hop) are reported in Status and
// retried by every pass.
func (r *Reconciler) Apply(b Batch) error {
	var bad []error
	// Remote routes are kept by value: one map entry each, no per-route
	// allocation (a 100k-route burst allocated 23 MB of copies here).
	upserts := make([]int, 0, len(b.Upserts))
	for i := range b.Upserts {
		if err := b.Upserts[i].validate(); err != nil {
			bad = append(bad, err)
			continue
		}
		upserts = append(upserts, i)
	}
	defer r.backpressure()
	r.mu.Lock()
	defer r.unlock()
	touched := make([]netip.Prefix, 0, len(upserts)+len(b.Withdrawals))
	if b.Full {
		keep := make(map[netip.Prefix]bool, len(upserts))
		for _, i := range upserts {
			keep[b.Upserts[i].Prefix] = true
		}
		for p := range r.want.remote {
			if !keep[p] {
				delete(r.want.remote, p)
				touched = append(touched, p)
			}
		}
	}
	for _, p := range b.Withdrawals {
		if _, ok := r.want.remote[p]; ok {
			delete(r.want.remote, p)
			touched = append(touched, p)
		}
	}
	for _, i := range upserts {
		u := &b.Upserts[i]
		if len(u.NextHops) == 0 {
			delete(r.want.remote, u.Prefix)
		} else {
			r.want.remote[u.Prefix] = *u
		}
		touched = append(touched, u.Prefix)
	}
	if r.ready {
		r.syncPrefixes(touched)
	}
	if len(bad) > 0 {
		return fmt.Errorf("batch: %d invalid route(s) skipped: %w", len(bad), errors.Join(bad...))
	}
	return nil
}

// plan collects the writes of a pass or an Apply.
type plan struct {
	create, replace, del []Route
	prev                 []Route // the route each replace overwrites (for rollback)
}

// syncPrefixes queues the writes the given prefixes need, trusting r.owned
// as the kernel's state. Called with mu held.
func (r *Reconciler) syncPrefixes(ps []netip.Prefix) {
	var pl plan
	for i, p := range ps {
		want, ok, err := r.want.route(r.comp, p)
		r.noteRouteErr(p, err)
		have, owned := r.owned[p]
		switch {
		case ok && owned && !have.Equal(want):
			pl.replace = append(pl.replace, want)
			pl.prev = append(pl.prev, have)
			r.owned[p] = want
		case ok && !owned:
			if pl.create == nil {
				pl.create = make([]Route, 0, len(ps)-i) // bursts are mostly one kind
			}
			pl.create = append(pl.create, want)
			r.owned[p] = want
		case !ok && owned && keepUnbuildable(err):
			// Still announced, not buildable now: keep what works.
		case !ok && owned:
			if pl.del == nil {
				pl.del = make([]Route, 0, len(ps)-i)
			}
			pl.del = append(pl.del, have)
			delete(r.owned, p)
		}
	}
	if len(pl.create)+len(pl.replace)+len(pl.del) > 0 {
		r.enqueue(&pl)
	}
}

func (r *Reconciler) noteRouteErr(p netip.Prefix, err error) {
	if err != nil && !errors.Is(err, errNoPath) {
		r.routeErrs[p] = err
	} else if len(r.routeErrs) > 0 {
		delete(r.routeErrs, p)
	}
}
