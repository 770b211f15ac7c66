//go:build privileged

package interop

import (
	"context"
	"testing"
	"time"
)

// TestTTLSecurityMeansDirectlyConnected plays a peer one router away that
// claims to be the ToR: BIRD sends with GTSM (TTL 255), and an nftables rule
// in its namespace lowers the TTL of its BGP segments to 254, exactly what
// one router between it and the node would do. `ttlSecurity: 1` means what
// RFC 5082 and Calico mean, a directly connected peer only (minimum TTL
// 255): the session must never come up. `ttlSecurity: 2` allows one router
// between, and then it does.
func TestTTLSecurityMeansDirectlyConnected(t *testing.T) {
	l := newLab(t)
	for _, cmd := range [][]string{
		{"nft", "add", "table", "ip", "hop"},
		{"nft", "add", "chain", "ip", "hop", "out", "{ type filter hook output priority 0 ; }"},
		{"nft", "add", "rule", "ip", "hop", "out", "tcp", "dport", "179", "ip", "ttl", "set", "254"},
		{"nft", "add", "rule", "ip", "hop", "out", "tcp", "sport", "179", "ip", "ttl", "set", "254"},
	} {
		if out, err := l.tor.Exec(context.Background(), cmd[0], cmd[1:]...); err != nil {
			t.Fatalf("%v: %v\n%s", cmd, err, out)
		}
	}
	// While ttlSecurity is 1 BIRD's half-open sessions time out ("Hold
	// timer expired"), after which BIRD waits its error wait time (60 s
	// by default) before it connects or accepts again: as long as the
	// test's wait for ttlSecurity 2, so whether it passed depended on
	// when that error fell.
	l.startBIRDWith("s3cret", torRoutes, "ttl security on;\n  error wait time 1, 10;")
	one, two := int32(1), int32(2)
	peer := torPeer(acceptDefaultAndOffice...)
	peer.Spec.TTLSecurity = &one
	st := nodeState(peer)
	st.Secrets["bgp-passwords/tor"] = "s3cret"
	h := l.startHelper(st)
	// Several connect retries of both sides (2 s each).
	for end := time.Now().Add(12 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if s := h.session(torIP); s.State == "Established" {
			t.Fatalf("ttlSecurity 1 accepted a peer one hop away (TTL 254): %+v", s)
		}
	}
	h.reload(func(s *helperState) { s.Peers[0].Spec.TTLSecurity = &two })
	waitState(t, h, "Established")
}
