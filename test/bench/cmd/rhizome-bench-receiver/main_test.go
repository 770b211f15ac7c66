package main

import (
	"net/netip"
	"testing"
)

// The -from-node policy accepts exactly the feeder's borrowed addresses
// through its own address: the benchmark must measure accepted paths, not
// a policy that rejects early.
func TestFromNodePolicy(t *testing.T) {
	self, feeder := netip.MustParseAddr("172.31.255.2"), netip.MustParseAddr("172.31.255.1")
	im := importPolicy(self, feeder, 1000)
	for _, c := range []struct {
		prefix, nextHop string
		want            bool
	}{
		{"10.0.0.0/32", "172.31.255.1", true},
		{"10.0.3.231/32", "172.31.255.1", true},  // index 999
		{"10.0.3.232/32", "172.31.255.1", false}, // index 1000: in a lender's block, not borrowed
		{"10.0.0.5/32", "172.31.255.9", false},   // not the feeder's address
		{"10.0.0.0/26", "172.31.255.1", false},   // the lender's block
	} {
		if got := im.Check(feeder, netip.MustParsePrefix(c.prefix), netip.MustParseAddr(c.nextHop), netip.Addr{}); got != c.want {
			t.Errorf("%s via %s: %v, want %v", c.prefix, c.nextHop, got, c.want)
		}
	}
	if !importPolicy(self, feeder, 0).Check(feeder, netip.MustParsePrefix("10.0.0.0/32"), feeder, netip.Addr{}) {
		t.Error("the external feeder's route is refused")
	}
}
