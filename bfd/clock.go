package bfd

import (
	"net/netip"
	"time"
)

// Clock is the Manager's source of time and timers, so that tests can
// drive sessions through the RFC's timeouts without sleeping. The real
// clock is the time package.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine after d, like time.AfterFunc.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a timer from a Clock.
type Timer interface {
	// Reset makes the timer fire after d (again), whether or not it fired
	// or was stopped.
	Reset(d time.Duration) bool
	Stop() bool
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// Port is the UDP destination port of single-hop BFD Control packets (RFC
// 5881 4).
const Port = 3784

// Source ports of Control packets (RFC 5881 4): one per session, unique on
// the system, from this range.
const (
	SourcePortMin = 49152
	SourcePortMax = 65535
)

// TTL is the IPv4 TTL and IPv6 hop limit of every Control packet we send,
// and the only one we accept (RFC 5881 5, without authentication: a packet
// that crossed a router cannot arrive with 255).
const TTL = 255

// Transport carries Control packets. The real one is UDP (NewUDP); tests
// use an in-memory one.
type Transport interface {
	// Open returns the sending side of one session: packets from local
	// (the kernel's choice when invalid) and a source port of its own in
	// 49152–65535, to remote port 3784, with TTL (hop limit) 255.
	Open(local, remote netip.Addr) (Sender, error)
	// Serve calls h for every datagram that arrives on port 3784, with its
	// source and destination address and the TTL or hop limit it arrived
	// with (-1 when unknown), until Close. h must not keep b. Serve
	// returns once the listening sockets are open; delivery continues in
	// the background.
	Serve(h func(b []byte, src, dst netip.Addr, ttl int)) error
	// Close stops Serve; senders are closed by their owners.
	Close() error
}

// Sender sends one session's packets.
type Sender interface {
	Send(b []byte) error
	Close() error
}
