package bgp_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/rhizome-net/rhizome/bgp"
)

// TestGoBGPReflectorBursts: b reflects between its clients a, c and d
// while a changes many prefixes at once, each several times in a row
// (announce, withdraw, announce...), from concurrent callers. GoBGP as
// patched gathers what it sends a peer while more input is ready, packs it
// into few UPDATEs (withdrawals first) and shares one copy and one
// serialisation of a reflected path among the clients (design 0018): a
// burst must still leave every client with exactly the last state of each
// prefix, with a's next hop and originator and b's cluster list, and a
// client never gets its own paths back.
func TestGoBGPReflectorBursts(t *testing.T) {
	a := startNode(t, "a", "127.0.0.41", 64512, "")
	b := startNode(t, "b", "127.0.0.42", 64512, "")
	c := startNode(t, "c", "127.0.0.43", 64512, "")
	d := startNode(t, "d", "127.0.0.44", 64512, "")
	ctx := context.Background()
	if err := b.sp.SetExportPolicy(ctx, bgp.ExportPolicy{Reflect: []netip.Prefix{pfx("10.244.0.0/16")}}); err != nil {
		t.Fatal(err)
	}
	rr := func(from, to *node, p *bgp.Peer) {
		if from == b {
			p.RouteReflectorClient, p.RouteReflectorClusterID = true, addr("224.0.0.1")
		}
	}
	for _, n := range []*node{a, c, d} {
		connect(t, n, b, rr)
	}
	for _, n := range []*node{a, c, d} {
		waitEstablished(t, n, b)
	}
	if err := d.sp.Advertise(ctx, bgp.Advertisement{Prefix: pfx("10.244.200.0/26")}); err != nil {
		t.Fatal(err)
	}

	// Prefix i is changed i%4+1 times: announced when that is odd.
	const prefixes = 200
	var want []string
	var wg sync.WaitGroup
	errs := make(chan error, prefixes)
	for i := range prefixes {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i / 4), byte(i % 4 * 64)}), 26)
		changes := i%4 + 1
		if changes%2 == 1 {
			want = append(want, p.String())
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range changes {
				var err error
				if k%2 == 0 {
					err = a.sp.Advertise(ctx, bgp.Advertisement{Prefix: p})
				} else {
					err = a.sp.Withdraw(ctx, p)
				}
				if err != nil {
					errs <- fmt.Errorf("%s change %d: %w", p, k, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitPrefixes(t, b, a, want...)
	withD := append(slices.Clone(want), "10.244.200.0/26")
	waitPrefixes(t, c, b, withD...)
	waitPrefixes(t, d, b, want...)
	waitPrefixes(t, a, b, "10.244.200.0/26")
	for _, n := range []*node{c, d} {
		for _, s := range want {
			p, _ := n.rec.path(b.ip, pfx(s))
			if p.NextHop != a.ip || p.Attrs == nil || p.Attrs.OriginatorID != a.ip || p.Attrs.ClusterListLen != 1 {
				t.Fatalf("%s holds %s as %+v %+v, want next hop and originator %s, one cluster", n.name, s, p, p.Attrs, a.ip)
			}
		}
	}
	p, _ := a.rec.path(b.ip, pfx("10.244.200.0/26"))
	if p.NextHop != d.ip || p.Attrs == nil || p.Attrs.OriginatorID != d.ip {
		t.Errorf("a holds d's prefix as %+v %+v", p, p.Attrs)
	}
}
