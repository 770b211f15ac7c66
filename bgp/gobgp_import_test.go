package bgp_test

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/rhizome-net/rhizome/bgp"
)

// TestGoBGPImportCheck: b reflects between its clients a and c. What its
// import check refuses from a stays out of b's table, so c never gets it;
// a later check that accepts it lets it through without a resending
// anything (the recheck of those prefixes), and an "all" recheck with a
// stricter check withdraws it from c again. Without the check b reflects
// whatever a sends.
func TestGoBGPImportCheck(t *testing.T) {
	a := startNode(t, "a", "127.0.0.35", 64512, "")
	b := startNode(t, "b", "127.0.0.36", 64512, "")
	c := startNode(t, "c", "127.0.0.37", 64512, "")
	ctx := context.Background()
	if err := b.sp.SetExportPolicy(ctx, bgp.ExportPolicy{Reflect: []netip.Prefix{pfx("10.244.0.0/16")}}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	type seen struct {
		peer, nh, orig netip.Addr
		prefix         netip.Prefix
	}
	var calls []seen
	refuse := func(bad ...string) bgp.ImportCheck {
		return func(peer netip.Addr, p netip.Prefix, nh, orig netip.Addr) bool {
			mu.Lock()
			calls = append(calls, seen{peer, nh, orig, p})
			mu.Unlock()
			return !slices.Contains(bad, p.String())
		}
	}
	if err := b.sp.SetImportCheck(ctx, refuse("10.244.2.0/26"), nil, true); err != nil {
		t.Fatal(err)
	}
	rr := func(from, to *node, p *bgp.Peer) {
		if from == b {
			p.RouteReflectorClient, p.RouteReflectorClusterID = true, addr("224.0.0.1")
		}
	}
	connect(t, a, b, rr)
	connect(t, c, b, rr)
	for _, p := range []string{"10.244.1.0/26", "10.244.2.0/26"} {
		if err := a.sp.Advertise(ctx, bgp.Advertisement{Prefix: pfx(p)}); err != nil {
			t.Fatal(err)
		}
	}
	waitPrefixes(t, b, a, "10.244.1.0/26", "10.244.2.0/26") // b's RIB sees both, before any check
	waitPrefixes(t, c, b, "10.244.1.0/26")
	mu.Lock()
	got := slices.Clone(calls)
	mu.Unlock()
	i := slices.IndexFunc(got, func(s seen) bool { return s.prefix == pfx("10.244.2.0/26") })
	if i < 0 || got[i].peer != a.ip || got[i].nh != a.ip || got[i].orig.IsValid() {
		t.Errorf("the check saw %+v, want 10.244.2.0/26 from and via %s without originator", got, a.ip)
	}

	// Accepted now: passed on without a resending it.
	if err := b.sp.SetImportCheck(ctx, refuse(), []netip.Prefix{pfx("10.244.2.0/26")}, false); err != nil {
		t.Fatal(err)
	}
	waitPrefixes(t, c, b, "10.244.1.0/26", "10.244.2.0/26")
	rp, _ := c.rec.path(b.ip, pfx("10.244.2.0/26"))
	if rp.NextHop != a.ip || rp.Attrs.OriginatorID != a.ip {
		t.Errorf("reflected path = %+v %+v", rp, rp.Attrs)
	}
	// A recheck of other prefixes does not touch it.
	if err := b.sp.SetImportCheck(ctx, refuse("10.244.2.0/26"), []netip.Prefix{pfx("10.244.9.0/26")}, false); err != nil {
		t.Fatal(err)
	}
	// Refused again, every path judged: withdrawn from c.
	if err := b.sp.SetImportCheck(ctx, refuse("10.244.1.0/26"), nil, true); err != nil {
		t.Fatal(err)
	}
	waitPrefixes(t, c, b, "10.244.2.0/26")
	// No check: everything passes.
	if err := b.sp.SetImportCheck(ctx, nil, nil, true); err != nil {
		t.Fatal(err)
	}
	waitPrefixes(t, c, b, "10.244.1.0/26", "10.244.2.0/26")
}
