// Package bgp is Rhizome's BGP speaker seam: the Speaker interface, in
// Rhizome's own types, and its two implementations — the embedded GoBGP
// server (gobgp*.go, the only files in the repository that import GoBGP) and
// a stateful fake for tests (fake.go).
//
// The interface is deliberately small and dumb: it configures sessions,
// originates and withdraws routes, sets the export policy and reports what
// it receives, before any import policy. Which sessions exist, what is
// advertised and what is accepted is decided by the packages around it
// (bgp/topology computes sessions, bgp/rib applies import policy and picks
// paths, bgp/reconcile applies desired state as a diff). Keeping GoBGP behind
// this seam means its v3→v4 API change touches only this package, and lets
// every other package be tested against the fake.
//
// Concurrency: every Speaker method may be called from any goroutine.
// Methods block until GoBGP has applied the change (or failed to). An error
// means the request was refused or the speaker is not running: it never
// means a session is down — session state is reported through Peers and the
// Watch handler.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// ErrNotRunning is returned by calls made before Start or after Stop.
var ErrNotRunning = errors.New("bgp speaker is not running")

// ErrPeerNotFound is returned when a call names a peer that is not configured.
var ErrPeerNotFound = errors.New("bgp peer not configured")

// Speaker is a BGP speaker: sessions, locally originated routes, an export
// policy, and a stream of what peers send.
type Speaker interface {
	// Start starts the speaker with the global settings. It is called once;
	// a second call fails. An error leaves the speaker stopped.
	Start(ctx context.Context, g Global) error
	// Stop closes every session (with a Cease notification) and stops the
	// speaker. Graceful-restart peers keep our routes for the restart time.
	// Stop on a stopped speaker is a no-op.
	Stop(ctx context.Context) error
	// StopGracefully stops the speaker like Stop, but closes the sessions
	// without a NOTIFICATION: graceful-restart peers keep our routes for
	// the restart time, as when the process exits. For a speaker replaced
	// by another on the same node (a new router ID or listen port), which
	// keeps forwarding meanwhile.
	StopGracefully(ctx context.Context) error

	// AddPeer configures a session. It fails if the address is configured.
	AddPeer(ctx context.Context, p Peer) error
	// UpdatePeer changes a configured session; other sessions are never
	// touched. The description, the prefix limit and TTLs change in place.
	// Timers, the password, the peer's port and the route-reflector role
	// and cluster ID need a new session: it is closed without a
	// NOTIFICATION and opened again as a restarting one, so that with
	// graceful restart in effect both sides keep each other's routes
	// through it (without, it is reset with a Cease). Other changes (AS,
	// families, graceful-restart settings, local address, passive mode)
	// reset it with a Cease.
	UpdatePeer(ctx context.Context, p Peer) error
	// DeletePeer closes and removes a session; routes learned from it are
	// withdrawn at once (no graceful restart: we removed it on purpose).
	// ErrPeerNotFound if it is not configured.
	DeletePeer(ctx context.Context, addr netip.Addr) error

	// Advertise originates a route, or replaces the attributes of a route
	// already originated for the same prefix.
	Advertise(ctx context.Context, a Advertisement) error
	// Withdraw stops originating a prefix. Withdrawing a prefix that is not
	// advertised is a no-op.
	Withdraw(ctx context.Context, prefix netip.Prefix) error

	// SetExportPolicy replaces the export policy. Set it before advertising a
	// prefix that it must hold back from a peer: the policy is evaluated when
	// a route is sent.
	SetExportPolicy(ctx context.Context, p ExportPolicy) error

	// SetImportCheck replaces the check every path a peer sends must pass
	// to enter the speaker's own table, and so to be passed on to other
	// peers by route reflection (what reaches the kernel is the RIB's
	// judgement, with the same policy: the RIB sees every path before any
	// check). It then judges again the paths already received for the
	// prefixes in recheck (every path if all), so that a path refused
	// before and accepted now is passed on, and one accepted before and
	// refused now is withdrawn from the peers it went to. nil accepts
	// everything. Until the first call every path is accepted.
	SetImportCheck(ctx context.Context, check ImportCheck, recheck []netip.Prefix, all bool) error

	// Peers returns the state of every configured session. Advertised is
	// counted only for the sessions countAdvertised reports true for (nil:
	// none, 0 for the others): the speaker keeps no Adj-RIB-Out, so
	// counting what a session was sent walks the whole table through the
	// export policy, for each session (docs/design/0018).
	Peers(ctx context.Context, countAdvertised func(netip.Addr) bool) ([]PeerStatus, error)
	// Received returns every path the peer has sent us and we still hold,
	// before import policy, including paths kept as stale during a graceful
	// restart. The returned slice belongs to the caller.
	Received(ctx context.Context, peer netip.Addr) ([]ReceivedPath, error)

	// Watch registers the one handler of received updates and session
	// changes. Events are delivered in order from a single goroutine until
	// ctx ends; a slow handler delays later events but never loses them. It
	// must be called after Start, at most once.
	Watch(ctx context.Context, h Handler) error
}

// ImportCheck decides whether a received path may enter the speaker's
// table. originator is the path's ORIGINATOR_ID (invalid when it has
// none). It runs on the speaker's own goroutine for every received path:
// it must be fast and must not block or call the speaker.
type ImportCheck func(peer netip.Addr, prefix netip.Prefix, nextHop, originator netip.Addr) bool

// Handler receives what peers send and how sessions change, in the order
// the speaker saw it. Calls are serialised; a handler may call the Speaker
// (for example Received) from inside a call.
type Handler interface {
	// HandleUpdate receives the paths of one UPDATE message (or a few
	// merged), before any import policy. The update and its slices belong
	// to the handler.
	HandleUpdate(u *Update)
	// HandleEndOfRIB reports that the peer has sent its whole table for the
	// family (RFC 4724 End-of-RIB).
	HandleEndOfRIB(peer netip.Addr, f Family)
	// HandlePeerState reports a session state change. When a session leaves
	// Established the speaker has already dropped (or, for a graceful
	// restart, marked stale) the peer's paths: ask Received for what is left.
	HandlePeerState(e PeerEvent)
}

// Family is an address family (AFI) of unicast routes.
type Family uint8

const (
	// IPv4 unicast.
	IPv4 Family = 4
	// IPv6 unicast.
	IPv6 Family = 6
)

func (f Family) String() string {
	switch f {
	case IPv4:
		return "ipv4-unicast"
	case IPv6:
		return "ipv6-unicast"
	}
	return fmt.Sprintf("family(%d)", uint8(f))
}

// FamilyOf returns the family of an address.
func FamilyOf(a netip.Addr) Family {
	if a.Is4() || a.Is4In6() {
		return IPv4
	}
	return IPv6
}

// Global holds the speaker-wide settings.
type Global struct {
	// ASN is our AS number.
	ASN uint32
	// RouterID is the BGP identifier, an IPv4 address.
	RouterID netip.Addr
	// ListenPort is the TCP port for incoming sessions: 0 means 179, -1
	// means do not listen (tests; sessions are then only opened by us).
	ListenPort int32
	// ListenAddresses restricts the listener; empty means all addresses.
	ListenAddresses []netip.Addr
	// APIAddress is where GoBGP's own gRPC API is served so that the stock
	// `gobgp` CLI can inspect the speaker: "unix:///path/to.sock" (its
	// directory is made mode 0700, so only root reaches it; `gobgp --target
	// unix:///path/to.sock`) or host:port on TCP. Empty: off.
	// If the address is taken the speaker runs without the API (see
	// GoBGP.APIError) rather than exiting the process.
	APIAddress string
	// Restarting says that this speaker replaces one that ran before with
	// the node's forwarding state kept (the kernel still holds its routes):
	// an agent restart. As RFC 4724 4.1 asks of a restarting speaker, its
	// graceful-restart sessions then open with the Restart State bit and
	// the Forwarding State bit of each family set, so that peers keep our
	// routes as stale until we have sent them again (without the F bit
	// BIRD and FRR flush them the moment the session is up), and it sends
	// no route to a restarting session until every peer has sent
	// End-of-RIB (or RestartDeferral has passed for that session), so that
	// our End-of-RIB follows a complete table. This holds for the sessions
	// configured within the restart time they advertise; after it no peer
	// keeps our routes any more.
	Restarting bool
}

// RestartDeferral bounds how long a restarting speaker waits for its peers'
// End-of-RIB before it sends its routes to a session anyway (RFC 4724's
// selection deferral timer). Peers send a whole table in about a second
// (100k routes); a peer that never sends End-of-RIB must not hold our
// routes back for long, and BIRD and FRR keep stale routes well beyond
// this (restart time 120 s, FRR's stale-path time 360 s).
const RestartDeferral = 30 * time.Second

// SessionState is the BGP finite-state-machine state of a session.
type SessionState uint8

// Session states (RFC 4271 8.2.2).
const (
	StateUnknown SessionState = iota
	StateIdle
	StateConnect
	StateActive
	StateOpenSent
	StateOpenConfirm
	StateEstablished
)

var stateNames = [...]string{"Unknown", "Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established"}

func (s SessionState) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Timers are a session's BGP timers; zero fields take the defaults below.
type Timers struct {
	// Keepalive between KEEPALIVE messages. Default 30s.
	Keepalive time.Duration
	// Hold time; a peer silent this long is considered down. Default 90s.
	// Use HoldTimeDisabled to turn it off.
	Hold time.Duration
	// ConnectRetry is the wait between connection attempts. Default 30s.
	ConnectRetry time.Duration
}

// HoldTimeDisabled as Timers.Hold turns the hold timer off (hold time 0).
const HoldTimeDisabled = time.Duration(-1)

// Timer defaults.
const (
	DefaultKeepalive    = 30 * time.Second
	DefaultHold         = 90 * time.Second
	DefaultConnectRetry = 30 * time.Second
	DefaultRestartTime  = 120 * time.Second
)

// GracefulRestart configures RFC 4724 graceful restart (and RFC 9494
// long-lived graceful restart) for one session, in both roles: our peers
// keep our routes while we restart, and we keep theirs.
type GracefulRestart struct {
	Enabled bool
	// RestartTime we advertise: how long peers keep our routes. Default 120s.
	RestartTime time.Duration
	// LongLivedStaleTime, if non-zero, turns on long-lived graceful restart:
	// after the restart time routes are kept, least preferred, this long.
	LongLivedStaleTime time.Duration
}

// Peer is the configuration of one session. It is comparable: two equal
// values configure the same session.
type Peer struct {
	// Address of the peer; it also chooses the family carried (an IPv4
	// session carries IPv4 unicast, an IPv6 session IPv6 unicast).
	Address netip.Addr
	// Port of the peer; 0 means 179.
	Port uint16
	// ASN of the peer: equal to ours means iBGP.
	ASN uint32
	// LocalASN is our AS on this session; 0 means Global.ASN. The node's AS
	// can change this way without restarting the speaker (sessions reset).
	LocalASN uint32
	// Description is free text (shown by the gobgp CLI).
	Description string
	// Password sets TCP MD5 (RFC 2385); empty means none.
	Password string
	// LocalAddress binds the session to one of our addresses; the zero
	// value lets the kernel choose.
	LocalAddress netip.Addr
	// EBGPMultihop allows an eBGP peer up to this many hops away (TTL);
	// 0 means directly connected only (TTL 1).
	EBGPMultihop uint8
	// TTLSecurityHops turns on GTSM (RFC 5082): we send with TTL 255 and
	// accept only packets that arrive with a TTL of at least 256 - hops,
	// so 1 means directly connected only (TTL 255). 0 means off.
	TTLSecurityHops uint8
	// Passive waits for the peer to connect.
	Passive bool
	// Timers of the session.
	Timers Timers
	// MaxPrefixes closes the session when the peer sends more prefixes;
	// 0 means no limit.
	MaxPrefixes uint32
	// MaxPrefixRestart: a session closed for exceeding MaxPrefixes is
	// enabled again after this long (and again closed if the peer still
	// sends too many). 0: it stays down until its configuration changes.
	MaxPrefixRestart time.Duration
	// RouteReflectorClient makes us the route reflector of this peer, with
	// RouteReflectorClusterID as the cluster ID.
	RouteReflectorClient    bool
	RouteReflectorClusterID netip.Addr
	// GracefulRestart settings.
	GracefulRestart GracefulRestart
}

// Family returns the family the session carries.
func (p Peer) Family() Family { return FamilyOf(p.Address) }

// Validate reports configuration that the speaker would refuse or
// misapply, naming the peer.
func (p Peer) Validate() error {
	var errs []error
	if !p.Address.IsValid() {
		errs = append(errs, errors.New("no address"))
	}
	if p.ASN == 0 {
		errs = append(errs, errors.New("AS number 0"))
	}
	if p.LocalAddress.IsValid() && p.Address.IsValid() && FamilyOf(p.LocalAddress) != FamilyOf(p.Address) {
		errs = append(errs, fmt.Errorf("local address %s is not of the peer's family", p.LocalAddress))
	}
	if p.EBGPMultihop != 0 && p.TTLSecurityHops != 0 {
		errs = append(errs, errors.New("eBGP multihop and TTL security cannot both be set"))
	}
	if p.RouteReflectorClient && !p.RouteReflectorClusterID.Is4() {
		errs = append(errs, errors.New("route-reflector client without an IPv4 cluster ID"))
	}
	if t := p.Timers; t.Hold > 0 && t.Keepalive > 0 && t.Keepalive >= t.Hold {
		errs = append(errs, fmt.Errorf("keepalive %s is not shorter than hold time %s", t.Keepalive, t.Hold))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("peer %s: %w", p.Address, err)
	}
	return nil
}

// LargeCommunity is an RFC 8092 large community.
type LargeCommunity struct{ Global, Local1, Local2 uint32 }

func (c LargeCommunity) String() string { return fmt.Sprintf("%d:%d:%d", c.Global, c.Local1, c.Local2) }

// Well-known communities this package looks at.
const (
	// CommunityLLGRStale marks a path kept by long-lived graceful restart.
	CommunityLLGRStale uint32 = 0xFFFF0006
	// CommunityNoLLGR asks peers not to keep the path under LLGR.
	CommunityNoLLGR uint32 = 0xFFFF0007
)

// Advertisement is a route we originate.
type Advertisement struct {
	Prefix netip.Prefix
	// NextHop; the zero value means ourselves (the session's local address).
	NextHop          netip.Addr
	Communities      []uint32
	LargeCommunities []LargeCommunity
}

// Equal reports whether two advertisements would send the same route.
func (a Advertisement) Equal(b Advertisement) bool {
	return a.Prefix == b.Prefix && a.NextHop == b.NextHop &&
		slices.Equal(a.Communities, b.Communities) && slices.Equal(a.LargeCommunities, b.LargeCommunities)
}

// ExportPolicy decides what leaves the speaker. Nothing is sent unless a
// rule below lets it out (GoBGP alone would export everything and make a
// node a transit router between its ToR and the mesh).
type ExportPolicy struct {
	// Locally originated routes (Advertise) are sent to every peer except
	// the prefixes listed here for that peer (its export filters).
	Deny map[netip.Addr][]netip.Prefix
	// Reflect, on a route reflector, lets routes learned over iBGP pass to
	// every peer except those in NoReflect when their prefix lies inside
	// one of these prefixes (pools and Service ranges). BGP's own
	// reflection rules still decide which of those peers get them. Empty:
	// nothing learned is passed on.
	Reflect []netip.Prefix
	// NoReflect are the peers that never get reflected routes: the
	// sessions to routers outside the cluster. They are named rather than
	// the node sessions that do get them because there are few of them: a
	// reflector of N nodes would otherwise match every route it passes on
	// against N addresses, for each of the N peers (GoBGP scans a neighbor
	// set linearly), N^3 work per convergence (docs/design/0018).
	NoReflect []netip.Addr
}

// Attrs are the path attributes that Rhizome uses. One value is shared by
// all the paths of an UPDATE and is never modified after delivery.
type Attrs struct {
	Origin uint8
	// ASPath flattened in order; ASPathLen is its length for path
	// selection (an AS_SET counts one, confederation segments zero).
	ASPath    []uint32
	ASPathLen int
	// LocalPref, when HasLocalPref.
	LocalPref    uint32
	HasLocalPref bool
	// MED, when HasMED.
	MED              uint32
	HasMED           bool
	Communities      []uint32
	LargeCommunities []LargeCommunity
	// OriginatorID and ClusterListLen are set on reflected routes.
	OriginatorID   netip.Addr
	ClusterListLen int
}

// HasCommunity reports whether the standard community is attached.
func (a *Attrs) HasCommunity(c uint32) bool { return slices.Contains(a.Communities, c) }

// NeighborAS is the AS the path was learned from (first AS of the path), or
// 0 for a path from our own AS.
func (a *Attrs) NeighborAS() uint32 {
	if len(a.ASPath) == 0 {
		return 0
	}
	return a.ASPath[0]
}

// ReceivedPath is a path as a peer sent it, before import policy.
type ReceivedPath struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
	Attrs   *Attrs
	// Stale marks a path kept during the peer's graceful restart.
	Stale bool
}

// Update is what one UPDATE message (or a few merged) changed: announced
// paths (each replaces the peer's previous path for the prefix) and
// withdrawn prefixes.
type Update struct {
	Peer      netip.Addr
	Announced []ReceivedPath
	Withdrawn []netip.Prefix
}

// PeerEvent is a session state change.
type PeerEvent struct {
	Peer     netip.Addr
	State    SessionState
	Previous SessionState
	// Reason is why the session left Established, when known.
	Reason string
	// PrefixLimit: the session left Established because the peer sent
	// more prefixes than MaxPrefixes.
	PrefixLimit bool
	Time        time.Time
}

// PeerStatus is the observed state of a configured session.
type PeerStatus struct {
	Address netip.Addr
	ASN     uint32
	State   SessionState
	// Since is when the session entered State (zero if never changed).
	Since time.Time
	// Received counts the peer's prefixes as the speaker holds them (before
	// Rhizome's import policy); Advertised counts what we sent.
	Received   uint64
	Advertised uint64
	// LastError is the last reason the session went down or failed, as the
	// speaker reported it (notification, hold timer, prefix limit...).
	LastError string
	// RemoteRouterID of an established session.
	RemoteRouterID netip.Addr
	// HoldTime is the hold time negotiated on an established session (the
	// smaller of ours and the peer's): it shows that a timer change took
	// effect.
	HoldTime time.Duration
	// GracefulRestart is what the peer advertised, valid once established.
	PeerRestartTime   time.Duration
	PeerLLGRStaleTime time.Duration
	// AdminDown is set when the speaker shut the session down itself, e.g.
	// after the prefix limit was exceeded.
	AdminDown bool
}
