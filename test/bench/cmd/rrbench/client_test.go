package main

import (
	"testing"
)

// The client agent waits for every feeder's block and borrowed /32.
func TestWantRoutes(t *testing.T) {
	for _, tc := range []struct{ n, want int }{{2, 3}, {20, 21}, {21, 23}, {1000, 1050}, {5000, 5250}} {
		if got := wantRoutes(tc.n); got != tc.want {
			t.Errorf("wantRoutes(%d) = %d, want %d", tc.n, got, tc.want)
		}
	}
	// The client agent's block is nobody's among the feeders'.
	if b := block(agentBlock); b.String() != "10.15.255.192/26" || block(maxClients-1).Overlaps(b) {
		t.Errorf("client agent's block %s", b)
	}
}

// Only routes through a gateway count: not the agent's own block's
// blackhole, nor a link route.
func TestLearned(t *testing.T) {
	const out = `blackhole 10.15.255.192/26 proto 80
10.0.0.0/26 via 172.20.0.1 dev ag0 proto 80
10.0.0.64/26 via 172.20.0.2 dev ag0 proto 80
10.0.0.127 via 172.20.0.1 dev ag0 proto 80
10.1.0.0/24 dev ag0 proto kernel scope link src 10.1.0.1
`
	for _, tc := range []struct {
		out  string
		want int
	}{{out, 3}, {"", 0}, {"blackhole 10.15.255.192/26 proto 80\n", 0}} {
		if got := learned(tc.out); got != tc.want {
			t.Errorf("learned(%q) = %d, want %d", tc.out, got, tc.want)
		}
	}
}
