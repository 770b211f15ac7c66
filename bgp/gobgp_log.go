package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
)

// gobgpLogger adapts GoBGP's logger interface to slog.
//
// Two reasons it exists. GoBGP's default logger builds a logrus entry (a
// map copy and a clone) on every Debug call even when debug is off, about a
// fifth of GoBGP's CPU on a large table: here every level returns at once
// when it is disabled. And GoBGP calls Fatal — which exits the process —
// when its gRPC API cannot listen: here Fatal logs and reports the failure
// instead, so a taken debug port never takes the node's routing down.
//
// It also picks per-peer failure reasons out of the messages GoBGP logs
// (notifications, hold timer, prefix limit, MD5 setup), because GoBGP's API
// does not expose them; they end up in PeerStatus.LastError.
type gobgpLogger struct {
	log   *slog.Logger
	level atomic.Uint32 // a gobgplog.LogLevel

	mu        sync.Mutex
	lastError map[netip.Addr]peerError
	fatal     error
}

func newGoBGPLogger(l *slog.Logger, level slog.Level) *gobgpLogger {
	g := &gobgpLogger{log: l, lastError: make(map[netip.Addr]peerError)}
	g.SetLevel(fromSlogLevel(level))
	return g
}

func fromSlogLevel(l slog.Level) gobgplog.LogLevel {
	switch {
	case l <= slog.LevelDebug:
		return gobgplog.DebugLevel
	case l <= slog.LevelInfo:
		return gobgplog.InfoLevel
	case l <= slog.LevelWarn:
		return gobgplog.WarnLevel
	default:
		return gobgplog.ErrorLevel
	}
}

func (g *gobgpLogger) enabled(l gobgplog.LogLevel) bool {
	return l <= gobgplog.LogLevel(g.level.Load())
}

func (g *gobgpLogger) emit(l gobgplog.LogLevel, sl slog.Level, msg string, fields gobgplog.Fields) {
	g.capture(msg, fields)
	if !g.enabled(l) {
		return
	}
	attrs := make([]slog.Attr, 0, len(fields)+1)
	for k, v := range fields {
		attrs = append(attrs, slog.Any(k, v))
	}
	g.log.LogAttrs(context.Background(), sl, msg, attrs...)
}

func (g *gobgpLogger) Panic(msg string, fields gobgplog.Fields) {
	g.emit(gobgplog.PanicLevel, slog.LevelError, msg, fields)
	panic(msg)
}

// Fatal records the failure and returns. GoBGP calls it from a goroutine of
// its own that ends right after (gRPC listen failure), so returning is safe.
func (g *gobgpLogger) Fatal(msg string, fields gobgplog.Fields) {
	g.emit(gobgplog.FatalLevel, slog.LevelError, msg, fields)
	g.mu.Lock()
	g.fatal = fmt.Errorf("gobgp: %s: %v", msg, fields["Err"])
	g.mu.Unlock()
}

func (g *gobgpLogger) Error(msg string, fields gobgplog.Fields) {
	g.emit(gobgplog.ErrorLevel, slog.LevelError, msg, fields)
}

func (g *gobgpLogger) Warn(msg string, fields gobgplog.Fields) {
	g.emit(gobgplog.WarnLevel, slog.LevelWarn, msg, fields)
}

func (g *gobgpLogger) Info(msg string, fields gobgplog.Fields) {
	g.emit(gobgplog.InfoLevel, slog.LevelInfo, msg, fields)
}

// Debug returns at once unless debug logging is on: GoBGP calls it on hot
// paths with fields it has already built.
func (g *gobgpLogger) Debug(msg string, fields gobgplog.Fields) {
	if !g.enabled(gobgplog.DebugLevel) {
		return
	}
	g.emit(gobgplog.DebugLevel, slog.LevelDebug, msg, fields)
}

func (g *gobgpLogger) SetLevel(l gobgplog.LogLevel) { g.level.Store(uint32(l)) }

func (g *gobgpLogger) GetLevel() gobgplog.LogLevel { return gobgplog.LogLevel(g.level.Load()) }

// capture keeps the reason of a peer's failure from the messages that carry
// one. Only Info and above reach it (Debug is filtered first), and those are
// rare, so the map lookups cost nothing on the receive path.
func (g *gobgpLogger) capture(msg string, fields gobgplog.Fields) {
	var reason string
	switch msg {
	case "Peer Down":
		reason = "session down: " + describeDown(fmt.Sprint(fields["Reason"]))
	case "sent notification", "received notification":
		reason = describeNotification(msg, fields)
	case "hold timer expired":
		reason = "hold timer expired: no message from the peer within the hold time"
	case "prefix limit reached":
		if _, pct := fields["Pct"]; pct {
			return // the early warning, not the limit itself
		}
		reason = prefixLimitExceeded + ": session closed"
	case "Administrative shutdown(Prefix limit reached)":
		reason = prefixLimitExceeded + ": session closed"
	case "failed to set md5":
		reason = fmt.Sprintf("cannot set the TCP MD5 password: %v", fields["Error"])
	case "graceful restart timer expired":
		reason = "graceful restart timer expired: the peer did not come back in time"
	default:
		return
	}
	key, _ := fields["Key"].(string)
	addr, err := netip.ParseAddr(key)
	if err != nil {
		return
	}
	notification := msg == "sent notification" || msg == "received notification"
	g.mu.Lock()
	// A notification says more than the "Peer Down" that follows it; keep
	// it once, then let later failures replace it.
	if prev := g.lastError[addr]; msg == "Peer Down" && prev.notification {
		g.lastError[addr] = peerError{reason: prev.reason}
	} else {
		g.lastError[addr] = peerError{reason: reason, notification: notification}
	}
	g.mu.Unlock()
}

// setReason replaces the recorded failure reason of a peer.
func (g *gobgpLogger) setReason(addr netip.Addr, reason string) {
	g.mu.Lock()
	g.lastError[addr] = peerError{reason: reason, notification: true}
	g.mu.Unlock()
}

// peerError is a recorded failure reason.
type peerError struct {
	reason       string
	notification bool
}

func describeNotification(msg string, fields gobgplog.Fields) string {
	code, _ := fields["Code"].(uint8)
	sub, _ := fields["Subcode"].(uint8)
	dir := "sent"
	if msg == "received notification" {
		dir = "received"
	}
	s := fmt.Sprintf("notification %s: %s", dir, bgp.NewNotificationErrorCode(code, sub))
	if hint, ok := notificationHints[[2]uint8{code, sub}]; ok {
		s += " (" + hint + ")"
	}
	if c, ok := fields["Communicated-Reason"].(string); ok && c != "" {
		s += ": " + c
	}
	return s
}

// describeDown turns GoBGP's reason for a session going down into words.
func describeDown(r string) string {
	switch r {
	case "dying":
		return "closed because its configuration changed"
	case "admin-down":
		return "shut down administratively"
	case "read-failed", "write-failed":
		return "the connection was closed or lost (" + r + ")"
	case "hold-timer-expired":
		return "hold timer expired: no message from the peer within the hold time"
	case "graceful-restart":
		return "the connection was lost; graceful restart keeps the peer's routes for its restart time"
	}
	return r
}

// notificationHints explain the notifications an operator can fix.
var notificationHints = map[[2]uint8]string{
	{bgp.BGP_ERROR_OPEN_MESSAGE_ERROR, bgp.BGP_ERROR_SUB_BAD_PEER_AS}:            "AS number mismatch: check the peer's asNumber on both sides",
	{bgp.BGP_ERROR_OPEN_MESSAGE_ERROR, bgp.BGP_ERROR_SUB_BAD_BGP_IDENTIFIER}:     "router ID rejected: two speakers may share one",
	{bgp.BGP_ERROR_OPEN_MESSAGE_ERROR, bgp.BGP_ERROR_SUB_UNACCEPTABLE_HOLD_TIME}: "hold time rejected by the peer",
	{bgp.BGP_ERROR_CEASE, bgp.BGP_ERROR_SUB_MAXIMUM_NUMBER_OF_PREFIXES_REACHED}:  prefixLimitExceeded + ": the session stays down until its configuration changes or it is retried",
	{bgp.BGP_ERROR_CEASE, bgp.BGP_ERROR_SUB_PEER_DECONFIGURED}:                   "the session was removed from the configuration",
	{bgp.BGP_ERROR_CEASE, bgp.BGP_ERROR_SUB_CONNECTION_REJECTED}:                 "connection rejected: the peer does not expect us",
	{bgp.BGP_ERROR_HOLD_TIMER_EXPIRED, 0}:                                        "no message from the peer within the hold time",
}

// lastErrorOf returns the last failure recorded for a peer.
func (g *gobgpLogger) lastErrorOf(addr netip.Addr) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lastError[addr].reason
}

func (g *gobgpLogger) clearPeer(addr netip.Addr) {
	g.mu.Lock()
	delete(g.lastError, addr)
	g.mu.Unlock()
}

func (g *gobgpLogger) fatalError() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.fatal
}
