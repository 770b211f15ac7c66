package agent

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/rhizome-net/rhizome/bgp/policy"
	"github.com/rhizome-net/rhizome/bgp/reconcile"
	"github.com/rhizome-net/rhizome/internal/kubecore"
	"github.com/rhizome-net/rhizome/ipam"
	"github.com/rhizome-net/rhizome/routes"
)

// The agent's pass is the junction of the parts: it reads the caches and
// the IPAM view and hands each part its desired state. It holds them
// through the small interfaces below, so that its tests drive it with
// stateful fakes (ipam.Fake, routes' kernel fakes under a real
// routes.Reconciler, bgp.Fake under a real bgp/reconcile.Reconciler);
// Run gives it the real ones.

// nodeIPAM is the node's IPAM as the agent uses it: the view its pass
// reads, the allocator of its tunnel addresses, and the backend of the
// local API. *ipam.NodeAllocator implements it, and so does *ipam.Fake.
// Safe for concurrent use; errors are the allocator's (see ipam.Allocator).
type nodeIPAM interface {
	ipam.View
	// Allocate and Release are ipam.Allocator's.
	Allocate(ctx context.Context, req ipam.Request) (ipam.Result, error)
	Release(ctx context.Context, handle string) error
	// Handles lists, sorted, the handles holding addresses this node
	// allocated; HandleAddresses the addresses of one (none if unknown).
	Handles() []string
	HandleAddresses(handle string) []netip.Addr
}

// routeProgrammer is the kernel route programmer as the agent drives it.
// *routes.Reconciler implements it. Safe for concurrent use.
type routeProgrammer interface {
	// SetState replaces the node-local desired state; an invalid one is
	// refused whole with an error naming the culprit, and the previous
	// one stays in force. It never blocks on the kernel.
	SetState(routes.State) error
	// VXLANMAC is this node's VTEP MAC, known from the start.
	VXLANMAC() net.HardwareAddr
	// PodMTU is the pod MTU, 0 until the first pass found the underlay.
	PodMTU() int
	// Status and Routes are snapshots for status and rhizomectl.
	Status() routes.Status
	Routes() []routes.Route
}

// bgpReconciler is the BGP side as the agent drives it.
// *reconcile.Reconciler implements it. Safe for concurrent use.
type bgpReconciler interface {
	// Reconcile applies the desired BGP state: sessions, advertisements,
	// policies. Every step is tried; the error joins those that failed,
	// each naming its object, and the next call retries them.
	Reconcile(ctx context.Context, st reconcile.State) error
	// SetOwners gives the import policy in force new Owners (what IPAM
	// lets each node originate) and re-judges only what they change,
	// without the rest of a Reconcile; an error is the speaker's import
	// check failing, which the next Reconcile retries.
	SetOwners(ctx context.Context, o *policy.Owners) error
	// Status is the speaker's and the RIB's state. It may wait for the
	// speaker (GoBGP's API answers from its busy server loop), so the
	// agent's loop never calls it.
	Status(ctx context.Context) (reconcile.Status, error)
	// Readiness is what readiness and Events need, without waiting for
	// the speaker: the sessions are the last Status snapshot's.
	Readiness() reconcile.Readiness
}

// parts are what an agent's pass reads and drives. Run builds the real
// ones; tests build fakes.
type parts struct {
	// Local is the node the agent runs on.
	Local *localNode
	// Caches are the informer caches the pass reads (Nodes, RhizomeNodes,
	// BGPConfigurations, BGPPeers, IPPools, Secrets of the namespace).
	Caches reconcile.Listers
	// RhizomeNodes is the API client the pass publishes this node's
	// RhizomeNode with (spec, then status).
	RhizomeNodes kubecore.RhizomeNodes
	IPAM         nodeIPAM
	Routes       routeProgrammer
	BGP          bgpReconciler
	// RouteProtocol and RouteTable are what the route programmer was
	// started with (a change needs a restart); reported in the status.
	RouteProtocol, RouteTable int
}

// newAgent returns an agent without parts: its health and readiness work,
// its pass waits for attach.
func newAgent(cfg Config, log *slog.Logger) *agent {
	a := &agent{cfg: cfg, log: log, sig: newSignaler(),
		ready: newReadiness("caches", "node", "ipam", "routes", "bgp")}
	a.lastPass.Store(time.Now().UnixNano())
	return a
}

// attach gives the agent its parts; call it once, before the first pass
// and before the local API serves.
func (a *agent) attach(p parts) {
	a.local = p.Local
	a.caches = p.Caches
	a.ipam = p.IPAM
	a.routes = p.Routes
	a.bgp = p.BGP
	a.routeProtocol, a.routeTable = p.RouteProtocol, p.RouteTable
	a.status = newNodeStatusWriter(p.RhizomeNodes, a.cfg.NodeName, a.log)
	a.rzNodes = p.RhizomeNodes
	a.attached.Store(true)
}
