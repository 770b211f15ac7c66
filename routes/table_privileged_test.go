//go:build linux && privileged

package routes

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rhizome-net/rhizome/test/netns"
)

// tableLab is one namespace with a veth whose far end is in a second one,
// 192.168.50.1/24 here, 192.168.50.2 there, plus an IPv6 pair.
type tableLab struct {
	ns, peer *netns.NS
	link     int
}

func newTableLab(t *testing.T) *tableLab {
	t.Helper()
	ns, peer := netns.New(t, "tbl"), netns.New(t, "tblp")
	must(t, netns.Veth(ns, "eth0", peer, "eth0"))
	must(t, netns.AddAddr(ns, "eth0", netip.MustParsePrefix("192.168.50.1/24")))
	must(t, netns.AddAddr(peer, "eth0", netip.MustParsePrefix("192.168.50.2/24")))
	must(t, netns.AddAddr(ns, "eth0", netip.MustParsePrefix("fd00:50::1/64")))
	must(t, netns.AddAddr(peer, "eth0", netip.MustParsePrefix("fd00:50::2/64")))
	return &tableLab{ns: ns, peer: peer, link: linkIndex(t, ns, "eth0")}
}

func linkIndex(t *testing.T, ns *netns.NS, name string) int {
	t.Helper()
	h, err := ns.Handle()
	must(t, err)
	defer h.Close()
	l, err := h.LinkByName(name)
	must(t, err)
	return l.Attrs().Index
}

func ipRoute(t *testing.T, ns *netns.NS, args ...string) string {
	t.Helper()
	out, err := ns.Exec(context.Background(), "ip", args...)
	must(t, err)
	return string(out)
}

func TestKernelTableWritesListsAndDeletesOnlyItsOwn(t *testing.T) {
	lab := newTableLab(t)
	tbl, err := NewKernelTable(lab.ns.Path(), 254, 114)
	must(t, err)
	defer tbl.Close()
	tbl.SetBatchSize(7) // several writes per call, last one partial

	gw := netip.MustParseAddr("192.168.50.2")
	var rs []Route
	for i := range 100 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 9, byte(i), 0}), 24)
		rs = append(rs, Route{Dst: p, NextHops: []NextHop{{Gateway: gw, LinkIndex: lab.link}}})
	}
	rs = append(rs,
		Route{Dst: netip.MustParsePrefix("10.10.0.0/26"), Kind: Blackhole},
		Route{Dst: netip.MustParsePrefix("fd00:99::/64"), NextHops: []NextHop{{Gateway: netip.MustParseAddr("fd00:50::2"), LinkIndex: lab.link}}},
		Route{Dst: netip.MustParsePrefix("fd00:98::/64"), Kind: Blackhole},
		Route{Dst: netip.MustParsePrefix("10.11.0.0/24"), NextHops: []NextHop{
			{Gateway: netip.MustParseAddr("192.168.50.3"), LinkIndex: lab.link},
			{Gateway: gw, LinkIndex: lab.link},
		}},
		Route{Dst: netip.MustParsePrefix("10.12.0.0/24"), NextHops: []NextHop{{Gateway: netip.MustParseAddr("172.16.0.9"), LinkIndex: lab.link, OnLink: true}}},
	)
	for i := range rs {
		rs[i].Normalize()
	}
	// A foreign route in the way of one of ours.
	ipRoute(t, lab.ns, "route", "add", "10.13.0.0/24", "via", "192.168.50.2")
	foreign := Route{Dst: netip.MustParsePrefix("10.13.0.0/24"), NextHops: []NextHop{{Gateway: gw, LinkIndex: lab.link}}}

	must(t, tbl.Create(rs))
	err = tbl.Create([]Route{foreign, rs[0]})
	var we *WriteError
	if !errors.As(err, &we) || len(we.Failed) != 2 {
		t.Fatalf("Create over existing keys: got %v, want 2 failures", err)
	}
	for _, f := range we.Failed {
		if !errors.Is(f.Err, syscall.EEXIST) {
			t.Errorf("%s: %v, want EEXIST", f.Route.Dst, f.Err)
		}
	}

	got, err := tbl.List()
	must(t, err)
	if len(got) != len(rs) {
		t.Fatalf("List: %d routes, want %d:\n%v", len(got), len(rs), got)
	}
	want := map[netip.Prefix]Route{}
	for _, r := range rs {
		want[r.Dst] = r
	}
	for _, r := range got {
		if !r.Equal(want[r.Dst]) {
			t.Errorf("listed %v, wrote %v", r, want[r.Dst])
		}
	}
	if out := ipRoute(t, lab.ns, "route", "show", "10.13.0.0/24"); strings.Contains(out, "proto 114") {
		t.Errorf("foreign route was touched: %s", out)
	}

	// Replace changes a route in place; Delete removes ours only.
	rs[0].NextHops[0].Gateway = netip.MustParseAddr("192.168.50.4")
	must(t, tbl.Replace(rs[:1]))
	err = tbl.Delete(append(rs[1:], foreign))
	if !errors.As(err, &we) || len(we.Failed) != 1 || we.Failed[0].Route.Dst != foreign.Dst || !errors.Is(we.Failed[0].Err, syscall.ESRCH) {
		t.Fatalf("Delete: got %v, want only the foreign route to fail with ESRCH", err)
	}
	got, err = tbl.List()
	must(t, err)
	if len(got) != 1 || !got[0].Equal(rs[0]) {
		t.Fatalf("after delete: %v, want only %v", got, rs[0])
	}
	if out := ipRoute(t, lab.ns, "route", "show", "10.13.0.0/24"); !strings.Contains(out, "10.13.0.0/24 via 192.168.50.2") {
		t.Errorf("foreign route is gone: %q", out)
	}
}

func TestWatcherDropsOurOwnEchoes(t *testing.T) {
	lab := newTableLab(t)
	k, err := OpenKernel(lab.ns.Path(), 254, 114, DefaultVXLANDevice)
	must(t, err)
	defer k.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := make(chan Event, 1024)
	go k.Watcher.Watch(ctx, func(evs []Event) {
		for _, e := range evs {
			if e.Kind == EventRoute && e.Table == 254 {
				events <- e
			}
		}
	})
	gw := netip.MustParseAddr("192.168.50.2")
	var rs []Route
	for i := range 50 {
		rs = append(rs, Route{Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 20, byte(i), 0}), 24),
			NextHops: []NextHop{{Gateway: gw, LinkIndex: lab.link}}})
	}
	must(t, k.Table.Create(rs))
	must(t, k.Table.Delete(rs))
	// A change by anyone else is seen.
	ipRoute(t, lab.ns, "route", "add", "10.21.0.0/24", "via", "192.168.50.2", "proto", "114")
	select {
	case e := <-events:
		if e.Route.Dst != netip.MustParsePrefix("10.21.0.0/24") || e.Protocol != 114 {
			t.Errorf("first route event %+v, want the hand-made 10.21.0.0/24 (our own 100 writes filtered)", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event for a route added by hand")
	}
}
