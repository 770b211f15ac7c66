// Package bfd is Rhizome's Bidirectional Forwarding Detection: single-hop
// asynchronous mode (RFC 5880, over UDP per RFC 5881) for the BGP
// sessions of a node, so that a dead link or a frozen peer is noticed in
// a fraction of a second instead of a BGP hold time.
//
// What it implements: the Control packet and its checks, the state
// machine (AdminDown, Down, Init, Up) with diagnostics, timer negotiation
// with Poll/Final Sequences for every change of the advertised intervals,
// the detection multiplier, transmit jitter, the slow (one second)
// interval while a session is not Up, the peer's Demand mode (we stop
// sending when it asks), UDP port 3784 with a source port of 49152–65535
// per session, and TTL 255 sent and required. What it does not: Demand
// mode of our own, the Echo function, authentication (packets with the A
// bit are discarded; RFC 5881 requires TTL 255 instead, which keeps
// off-link senders out), multi-hop sessions (RFC 5883).
//
// The C bit is always clear: the sessions run in the agent's process and
// share its fate, so a peer must not read their failure as a broken
// forwarding plane while we restart (RFC 5882 4.3).
//
// Layout: packet.go (wire format), session.go (the pure state machine:
// time in, no I/O), manager.go (sessions, timers, I/O and events behind
// the Sessions seam), udp_linux.go (the sockets), fake.go (a stateful
// fake of Sessions for other packages' tests). See docs/design/0017.
package bfd

import (
	"context"
	"fmt"
	"net/netip"
	"time"
)

// Peer configures one session.
type Peer struct {
	// Remote is the peer's address. An IPv6 link-local address needs its
	// zone (the interface).
	Remote netip.Addr
	// Local is our address for the session; the zero value lets the
	// kernel choose. Single-hop BFD expects the address of the link, the
	// one the BGP session uses.
	Local netip.Addr
	Timers
}

// Validate reports a peer the Manager would refuse.
func (p Peer) Validate() error {
	switch {
	case !p.Remote.IsValid() || p.Remote.IsUnspecified() || p.Remote.IsMulticast():
		return fmt.Errorf("bfd peer %s: not a unicast address", p.Remote)
	case p.Local.IsValid() && p.Local.Unmap().Is4() != p.Remote.Unmap().Is4():
		return fmt.Errorf("bfd peer %s: local address %s is of another family", p.Remote, p.Local)
	}
	if err := p.Timers.Validate(); err != nil {
		return fmt.Errorf("bfd peer %s: %w", p.Remote, err)
	}
	return nil
}

// Event is a change of a session's state.
type Event struct {
	Peer     netip.Addr
	From, To State
	// Diag is our diagnostic: why the session changed (for a change to
	// Down: DiagTimeExpired when the peer went silent, DiagNeighborDown
	// when it said so).
	Diag Diag
	// RemoteAdminDown: the session went Down because the peer took it
	// administratively down. RFC 5882 4.2: that is no failure of the path,
	// and clients must not act on it.
	RemoteAdminDown bool
	// RemoteControlPlaneIndependent is the peer's last C bit: its BFD
	// survives a restart of its control plane (RFC 5882 4.3.1), so a
	// failure means its forwarding stopped.
	RemoteControlPlaneIndependent bool
	Time                          time.Time
}

// Failed reports whether the event is a failure that clients act on: a
// session that was Up went Down, and not because the peer took it
// administratively down (RFC 5882 4.2).
func (e Event) Failed() bool { return e.From == Up && e.To == Down && !e.RemoteAdminDown }

// Status is the observed state of one session.
type Status struct {
	Peer  Peer
	State State
	// Diag is our last diagnostic; RemoteState and RemoteDiag what the peer
	// last said.
	Diag, RemoteDiag Diag
	RemoteState      State
	// LocalDiscr and RemoteDiscr are the discriminators (0: peer unknown).
	LocalDiscr, RemoteDiscr uint32
	// TxInterval is the negotiated transmit interval (before jitter);
	// DetectionTime how long the peer may stay silent (0 before its first
	// packet).
	TxInterval, DetectionTime time.Duration
	// RemoteControlPlaneIndependent is the peer's C bit.
	RemoteControlPlaneIndependent bool
	// Since is when the session entered State.
	Since time.Time
	// Downs counts failures (Up to Down); Sent and Received packets.
	Downs, Sent, Received uint64
}

// Sessions is the seam the BGP side uses: one BFD session per BGP peer
// that has BFD on.
//
// Every method is safe from any goroutine and returns at once: sessions
// run on their own timers and nothing the caller does (or fails to do)
// delays a packet. An error means the request was refused (invalid peer,
// no socket, closed); it never means the path is down — that is what
// events and Sessions report.
type Sessions interface {
	// Set starts a session to p.Remote, or reconfigures the one running:
	// new timers are negotiated with a Poll Sequence without leaving Up; a
	// new local address restarts the session (Down).
	Set(p Peer) error
	// Remove ends the session to a peer: it goes AdminDown (its peer is
	// told, RFC 5882 4.2, and keeps its client sessions) and is deleted
	// after one detection time. Removing an unknown peer is a no-op.
	Remove(peer netip.Addr) error
	// Watch calls f for every state change from now until ctx ends, in
	// order, from one goroutine of its own. A slow f delays later events
	// to it but never a session, and no event is lost.
	Watch(ctx context.Context, f func(Event))
	// Sessions returns the state of every session, sorted by peer.
	Sessions() []Status
}
