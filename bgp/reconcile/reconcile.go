// Package reconcile applies a node's desired BGP state to its speaker: it
// is what the agent calls. Each Reconcile computes the whole desired state
// from the cluster state (bgp/topology) and applies only the difference to
// what it applied before — sessions added, updated or removed, routes
// advertised or withdrawn, the export policy and the receive-side RIB's
// settings — so a change to one BGPPeer touches one session and the speaker
// is never restarted for a configuration change (only a new router ID or
// listen port, which BGP cannot change live, start a new speaker).
//
// Order matters and is fixed: the RIB learns the new import policy first
// (routes arriving on a new session are judged right), then the export
// policy (a new route is never sent where it must not go), then routes,
// then sessions (a new session's first UPDATEs already carry every route,
// before its End-of-RIB).
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rhizome-net/rhizome/bfd"
	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/bgp/policy"
	"github.com/rhizome-net/rhizome/bgp/rib"
	"github.com/rhizome-net/rhizome/bgp/topology"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// Config configures a Reconciler.
type Config struct {
	// NewSpeaker makes a speaker (bgp.NewGoBGP in the agent, bgp.NewFake in
	// tests). It is called at the first Reconcile and again only if the
	// router ID or listen port changes.
	NewSpeaker func() bgp.Speaker
	// Sink receives learned routes (the agent's route programmer).
	Sink rib.Sink
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Registerer, if set, gets the BGP metrics.
	Registerer prometheus.Registerer
	// APIAddress serves GoBGP's gRPC API ("" = off); see bgp.Global.
	APIAddress string
	// ListenPort, if non-zero, overrides the configured listen port (-1:
	// do not listen; tests).
	ListenPort int32
	// ConvergeTimeout and StaleRecheck configure the RIB (rib.Config).
	ConvergeTimeout time.Duration
	StaleRecheck    time.Duration
	// TCPStats reads the kernel's TCP MD5 counters for status hints; nil
	// reads /proc/net/netstat of the agent's network namespace.
	TCPStats func() (MD5Stats, error)
	// BFD runs the BFD sessions of sessions that have BFD on (the agent's
	// bfd.Manager). Nil: the agent runs without BFD, and BFDUnavailable
	// says why (it is shown in those sessions' status).
	BFD            bfd.Sessions
	BFDUnavailable string
	// OnSessionChange, if set, is told every session state change (the
	// agent's Events). It is called on the speaker's event goroutine and
	// must not block.
	OnSessionChange func(SessionChange)
	// Restarting says that the node kept its forwarding state from a
	// previous run (the agent restarted; the kernel still holds our
	// routes): the speaker starts as a restarting speaker
	// (bgp.Global.Restarting), so that peers keep our routes until we have
	// sent them again.
	Restarting bool
	// BFDSettle: a BFD failure within this time of the BGP session coming
	// up counts only if BFD is not Up again by then. 0 means
	// DefaultBFDSettle; negative, no settling (tests).
	BFDSettle time.Duration
}

// State is the cluster state one Reconcile applies.
type State struct {
	topology.Input
	// Pools are all IPPools.
	Pools []*v1alpha1.IPPool
	// Local is what this node's IPAM holds.
	Local topology.Local
}

// Reconciler owns the speaker and the RIB of one node. Its methods are safe
// for concurrent use; Reconcile calls are serialised.
type Reconciler struct {
	cfg Config
	log *slog.Logger
	rib *rib.RIB

	mu       sync.Mutex // serialises Reconcile and guards the fields below
	sp       bgp.Speaker
	stopSp   context.CancelFunc
	global   bgp.Global
	desired  topology.Desired
	sessions map[netip.Addr]bgp.Peer // as applied to the speaker
	ads      map[netip.Prefix]bgp.Advertisement
	export   *bgp.ExportPolicy // as applied; nil before the first
	// checked is the import policy the speaker's import check applies;
	// nil before the first.
	checked  *policy.Import
	errs     map[netip.Addr]string // per session: why applying it failed
	problems []string
	// BFD sessions as applied, why applying one failed, and failures
	// (Up to Down) by session kind since the start.
	bfdApplied  map[netip.Addr]bfd.Peer
	bfdErrs     map[netip.Addr]string
	bfdFailures map[v1alpha1.SessionKind]uint64
	// stopBFDWatch ends the watch of BFD events.
	stopBFDWatch context.CancelFunc
	computed     bool
	stopped      bool

	status *statusCache
	// kinds is the kind of each desired session, for the speaker's event
	// handler (which may not take mu); flaps counts sessions going down.
	kinds atomic.Pointer[sessionKinds]
	flaps flapCounters
	// limits are the default prefix limits of sessions between nodes
	// (IPv4, IPv6) of the last Reconcile, for the metrics.
	limits [2]atomic.Uint32
	// current is the running speaker for the RIB's read-backs. It is not
	// guarded by mu: the RIB reads back while handling an event, and a
	// Reconcile holding mu may be waiting for the RIB.
	current atomic.Pointer[speakerRef]
}

type speakerRef struct{ bgp.Speaker }

// New returns a Reconciler; nothing runs until Reconcile and Run.
func New(cfg Config) *Reconciler {
	l := cfg.Logger
	if l == nil {
		l = slog.Default()
	}
	if cfg.TCPStats == nil {
		cfg.TCPStats = ReadMD5Stats
	}
	r := &Reconciler{
		cfg:      cfg,
		log:      l.With("component", "bgp"),
		sessions: make(map[netip.Addr]bgp.Peer),
		ads:      make(map[netip.Prefix]bgp.Advertisement),
		errs:     make(map[netip.Addr]string),

		bfdApplied:  make(map[netip.Addr]bfd.Peer),
		bfdErrs:     make(map[netip.Addr]string),
		bfdFailures: make(map[v1alpha1.SessionKind]uint64),
		flaps:       flapCounters{byKind: map[v1alpha1.SessionKind]uint64{}, byPeer: map[netip.Addr]uint64{}, limits: map[v1alpha1.SessionKind]uint64{}},
	}
	r.rib = rib.New(rib.Config{
		Speaker:         receiver{r},
		Sink:            cfg.Sink,
		Logger:          l,
		ConvergeTimeout: cfg.ConvergeTimeout,
		StaleRecheck:    cfg.StaleRecheck,
	})
	r.status = &statusCache{r: r, busy: make(chan struct{}, 1)}
	// BFD state changes are acted on from now until Stop or Shutdown.
	bctx, cancel := context.WithCancel(context.Background())
	r.stopBFDWatch = cancel
	if cfg.BFD != nil {
		cfg.BFD.Watch(bctx, r.onBFD)
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(newCollector(r), newBFDCollector(r))
	}
	return r
}

// receiver lets the RIB read back from whichever speaker is current.
type receiver struct{ r *Reconciler }

func (rc receiver) Received(ctx context.Context, peer netip.Addr) ([]bgp.ReceivedPath, error) {
	sp := rc.r.current.Load()
	if sp == nil {
		return nil, bgp.ErrNotRunning
	}
	return sp.Received(ctx, peer)
}

// RIB returns the receive-side RIB (for its counters and routes).
func (r *Reconciler) RIB() *rib.RIB { return r.rib }

// Run drives the RIB's timers until ctx ends.
func (r *Reconciler) Run(ctx context.Context) { r.rib.Run(ctx) }

// Stop prepares the agent's exit for a restart: the RIB stops receiving
// events, and the speaker keeps its sessions open until the process exits.
// The kernel then closes the connections without a BGP notification, so
// graceful-restart peers keep this node's routes for the restart time
// while the new agent comes up; GoBGP's own stop would send every peer a
// Cease, which makes them drop our routes at once (a "hard reset" even
// under RFC 8538). The process must exit soon after Stop. Reconcile fails
// after Stop.
func (r *Reconciler) Stop(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	r.stopBFDWatch()
	if r.sp != nil {
		r.stopSp()
	}
	return nil
}

// Shutdown closes every session with a Cease notification and stops the
// speaker: peers drop this node's routes at once. It is for a node that
// leaves for good (and for tests); an agent that restarts calls Stop.
func (r *Reconciler) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	r.stopBFDWatch()
	if r.sp == nil {
		return nil
	}
	r.stopSp()
	err := r.sp.Stop(ctx)
	r.sp = nil
	r.current.Store(nil)
	return err
}

// Reconcile applies the desired state for st. It returns the errors of the
// steps that failed (each naming its object) after trying every step; a
// later Reconcile retries what failed. An error from computing the state
// (this node unknown, no router ID) changes nothing.
func (r *Reconciler) Reconcile(ctx context.Context, st State) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return errors.New("reconciling BGP: stopped")
	}
	d, err := topology.Compute(st.Input)
	if err != nil {
		r.problems = []string{err.Error()}
		return fmt.Errorf("computing BGP sessions: %w", err)
	}
	if r.cfg.ListenPort != 0 {
		d.Global.ListenPort = r.cfg.ListenPort
	}
	d.Global.APIAddress = r.cfg.APIAddress
	d.Global.Restarting = r.cfg.Restarting
	pools, poolProblems := topology.Pools(st.Pools)
	d.Problems = append(d.Problems, poolProblems...)
	limits := topology.NodePrefixLimits(pools, st.Local.Owners, topology.ServiceRanges(st.Configs))
	topology.ApplyNodePrefixLimits(&d, limits)
	r.limits[0].Store(limits[0])
	r.limits[1].Store(limits[1])
	ads := topology.Advertisements(&d, pools, st.Local)
	im := topology.ImportPolicy(&d, pools, st.Local)
	ex := topology.ExportPolicy(&d, pools, ads)

	if err := r.ensureSpeaker(ctx, d.Global); err != nil {
		r.problems = append(d.Problems, err.Error())
		return err
	}
	r.desired, r.problems, r.computed = d, d.Problems, true

	started := make(map[netip.Addr]topology.Session, len(d.Sessions))
	infos := make(map[netip.Addr]rib.PeerInfo, len(d.Sessions))
	kinds := make([]sessionKind, 0, len(d.Sessions))
	for _, s := range d.Sessions {
		kinds = append(kinds, sessionKind{s.Peer.Address, s.Kind})
		if s.NotStarted == "" {
			started[s.Peer.Address] = s
			infos[s.Peer.Address] = rib.PeerInfo{EBGP: s.Peer.ASN != s.Peer.LocalASN}
		}
	}
	r.publishKinds(kinds)
	if len(ex.Reflect) > 0 {
		// Sessions about to be removed get nothing reflected in the
		// meantime: the export policy is applied before they go.
		for a := range r.sessions {
			if _, ok := started[a]; !ok {
				ex.NoReflect = append(ex.NoReflect, a)
			}
		}
	}
	originated := make([]netip.Prefix, len(ads))
	for i, a := range ads {
		originated[i] = a.Prefix
	}
	r.rib.Set(rib.Settings{Policy: im, Peers: infos, Originated: originated})

	var errs []error
	if err := r.applyImportCheck(ctx, im); err != nil {
		errs = append(errs, err)
	}
	if r.export == nil || !reflect.DeepEqual(*r.export, ex) {
		if err := r.sp.SetExportPolicy(ctx, ex); err != nil {
			errs = append(errs, err)
		} else {
			r.export = &ex
		}
	}
	errs = append(errs, r.applyAdvertisements(ctx, ads)...)
	errs = append(errs, r.applySessions(ctx, started)...)
	errs = append(errs, r.applyBFD(started)...)
	return errors.Join(errs...)
}

// ensureSpeaker starts the speaker, or replaces it when the router ID or
// listen port changed.
func (r *Reconciler) ensureSpeaker(ctx context.Context, g bgp.Global) error {
	if r.sp != nil && r.global.RouterID == g.RouterID && r.global.ListenPort == g.ListenPort {
		return nil
	}
	if r.sp != nil {
		r.log.Warn("restarting the BGP speaker: the router ID or listen port changed", "op", "reconcile",
			"routerID", g.RouterID, "oldRouterID", r.global.RouterID, "port", g.ListenPort, "oldPort", r.global.ListenPort)
		r.stopSp()
		// As an agent restart does: the old sessions close without a
		// NOTIFICATION (peers keep our routes), the routes learned over
		// them stay until the new sessions have sent theirs (the kernel
		// keeps them meanwhile), and the new speaker opens its sessions
		// as a restarting one (peers do not flush ours when it comes).
		// Before, the Cease made peers drop our routes and the RIB
		// dropped theirs at once, and the kernel with it.
		r.rib.HoldAll()
		if err := r.sp.StopGracefully(ctx); err != nil {
			r.log.Warn("stopping the old speaker", "op", "reconcile", "error", err)
		}
		r.sp = nil
		r.current.Store(nil)
		clear(r.sessions)
		clear(r.ads)
		clear(r.errs)
		r.export, r.checked = nil, nil
		g.Restarting = true
	}
	sp := r.cfg.NewSpeaker()
	r.current.Store(&speakerRef{sp})
	if err := sp.Start(ctx, g); err != nil {
		r.current.Store(nil)
		return fmt.Errorf("starting the BGP speaker: %w", err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	if err := sp.Watch(wctx, holdTimerGuard{rib: r.rib, r: r}); err != nil {
		cancel()
		_ = sp.Stop(ctx)
		r.current.Store(nil)
		return fmt.Errorf("watching the BGP speaker: %w", err)
	}
	r.sp, r.stopSp, r.global = sp, cancel, g
	r.log.Info("BGP speaker started", "op", "reconcile", "asn", g.ASN, "routerID", g.RouterID, "port", g.ListenPort)
	return nil
}

// SetOwners hands the receive path what IPAM now says each node may
// originate, on its own, ahead of the next Reconcile: the RIB judges again
// only the paths whose prefixes' owners changed (rib.RIB.SetOwners), so a
// route held until its block's IPAMBlock arrived is installed at once,
// then the speaker's import check does the same for what a reflector
// passes on. The rest of the policy stays the one the last Reconcile
// applied; that Reconcile, given the same owners, judges nothing again.
// Before the first Reconcile it does nothing. The agent calls it first on
// every IPAM change (docs/design/0014: a new block's route would otherwise
// wait for the whole desired state to be recomputed at every receiver).
func (r *Reconciler) SetOwners(ctx context.Context, o *policy.Owners) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped || r.sp == nil {
		return nil
	}
	im := r.rib.SetOwners(o)
	if im == nil {
		return nil
	}
	return r.applyImportCheck(ctx, im)
}

// applyImportCheck gives the speaker the import policy as its import
// check, so that a route reflector passes on only what the policy accepts,
// and has it judge again what may have changed: every path when anything
// but the owners changed, else only the prefixes whose owner changed (the
// common case: a block claimed or a pod borrowing an address). With
// nothing changed the speaker keeps the check it has, which judges alike.
func (r *Reconciler) applyImportCheck(ctx context.Context, im *policy.Import) error {
	var recheck []netip.Prefix
	all := r.checked == nil || !r.checked.SameBesidesOwners(im)
	if !all {
		recheck = r.checked.Input().Owners.Changed(im.Input().Owners)
		if len(recheck) == 0 {
			return nil
		}
	}
	if err := r.sp.SetImportCheck(ctx, im.Check, recheck, all); err != nil {
		return err
	}
	r.checked = im
	return nil
}

func (r *Reconciler) applyAdvertisements(ctx context.Context, ads []bgp.Advertisement) []error {
	var errs []error
	want := make(map[netip.Prefix]bool, len(ads))
	for _, a := range ads {
		want[a.Prefix] = true
		if old, ok := r.ads[a.Prefix]; ok && old.Equal(a) {
			continue
		}
		if err := r.sp.Advertise(ctx, a); err != nil {
			errs = append(errs, err)
			continue
		}
		r.ads[a.Prefix] = a
		r.log.Debug("advertised", "op", "advertise", "prefix", a.Prefix)
	}
	for _, p := range slices.SortedFunc(maps.Keys(r.ads), comparePrefix) {
		if want[p] {
			continue
		}
		if err := r.sp.Withdraw(ctx, p); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(r.ads, p)
		r.log.Debug("withdrawn", "op", "withdraw", "prefix", p)
	}
	return errs
}

func (r *Reconciler) applySessions(ctx context.Context, started map[netip.Addr]topology.Session) []error {
	var errs []error
	for _, a := range slices.SortedFunc(maps.Keys(r.sessions), netip.Addr.Compare) {
		if _, ok := started[a]; ok {
			continue
		}
		if err := r.sp.DeletePeer(ctx, a); err != nil && !errors.Is(err, bgp.ErrPeerNotFound) {
			errs = append(errs, err)
			r.errs[a] = "removing the session failed: " + err.Error()
			continue
		}
		delete(r.sessions, a)
		delete(r.errs, a)
		r.log.Info("BGP session removed", "op", "delete-peer", "peer", a)
	}
	for _, a := range slices.SortedFunc(maps.Keys(started), netip.Addr.Compare) {
		s := started[a]
		old, ok := r.sessions[a]
		var err error
		switch {
		case !ok:
			err = r.sp.AddPeer(ctx, s.Peer)
			if err == nil {
				r.log.Info("BGP session added", "op", "add-peer", "peer", a, "kind", s.Kind, "source", s.Source, "asn", s.Peer.ASN)
			}
		case old != s.Peer:
			err = r.sp.UpdatePeer(ctx, s.Peer)
			if err == nil {
				r.log.Info("BGP session updated", "op", "update-peer", "peer", a, "kind", s.Kind, "source", s.Source)
			}
		default:
			continue
		}
		if err != nil {
			errs = append(errs, err)
			r.errs[a] = "configuring the session failed: " + err.Error()
			continue
		}
		r.sessions[a] = s.Peer
		delete(r.errs, a)
	}
	return errs
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
