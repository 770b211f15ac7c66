//go:build linux && privileged

package routes

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/test/netns"

	"github.com/rhizome-net/rhizome/routes/datapath"
)

var (
	poolNever = Pool{CIDR: netip.MustParsePrefix("10.244.0.0/16"), IPIPMode: v1alpha1.EncapNever, VXLANMode: v1alpha1.EncapNever}
	poolVXLAN = Pool{CIDR: netip.MustParsePrefix("10.244.0.0/16"), IPIPMode: v1alpha1.EncapNever, VXLANMode: v1alpha1.EncapAlways}
	poolVXCS  = Pool{CIDR: netip.MustParsePrefix("10.244.0.0/16"), IPIPMode: v1alpha1.EncapNever, VXLANMode: v1alpha1.EncapCrossSubnet}
)

func TestKernelDirectRoutesAndBlackholes(t *testing.T) {
	l := newLab(t)
	l.startAll(poolNever)
	n1, n2, n3 := l.nodes[0], l.nodes[1], l.nodes[2]

	if got := l.kernelRoute(n1.ns, n2.block); got != "10.244.2.0/26 via 192.168.10.12 dev eth0 proto 114" {
		t.Errorf("n1 route to n2's block: %q", got)
	}
	// n3 is on another subnet: without encapsulation the next hop is
	// resolved through the router.
	if got := l.kernelRoute(n1.ns, n3.block); got != "10.244.3.0/26 via 192.168.10.1 dev eth0 proto 114" {
		t.Errorf("n1 route to n3's block: %q", got)
	}
	if got := l.kernelRoute(n1.ns, n1.block); got != "blackhole 10.244.1.0/26 proto 114" {
		t.Errorf("n1's own block: %q", got)
	}
	ping(t, n1.pod, n2.podIP)
	// The router knows no pod routes, so n3 is unreachable without
	// encapsulation: that is what VXLAN/IPIP are for.
	noPing(t, n1.pod, n3.podIP)
	// An unallocated address of n1's block dies in n1's blackhole, instead
	// of bouncing to the default route.
	l.ip(n2.ns, "route", "add", "10.244.1.0/26", "via", "192.168.10.11", "metric", "10")
	noPing(t, n2.ns, netip.MustParseAddr("10.244.1.33"))
	ping(t, n2.ns, n1.podIP) // the pod's /32 beats the blackhole

	if st := n1.r.Status(); st.Underlay != "eth0" || st.PodMTU != 1500 || st.RoutesProgrammed != 3 {
		t.Errorf("status %+v", st)
	}
	if got := l.ip(n1.ns, "-o", "link", "show"); strings.Contains(got, "vxlan") {
		t.Errorf("VXLAN device exists though no pool asks for it:\n%s", got)
	}
}

func TestKernelVXLAN(t *testing.T) {
	for _, tc := range []struct {
		name           string
		pool           Pool
		wantToN2       string
		n2ThroughVXLAN bool
	}{
		{"Always", poolVXLAN, "10.244.2.0/26 via 10.244.2.0 dev vxlan.rhizome proto 114 onlink", true},
		{"CrossSubnet", poolVXCS, "10.244.2.0/26 via 192.168.10.12 dev eth0 proto 114", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t)
			l.startAll(tc.pool)
			n1, n2, n3 := l.nodes[0], l.nodes[1], l.nodes[2]
			if got := l.kernelRoute(n1.ns, n2.block); got != tc.wantToN2 {
				t.Errorf("n1 route to n2's block: %q, want %q", got, tc.wantToN2)
			}
			if got := l.kernelRoute(n1.ns, n3.block); got != "10.244.3.0/26 via 10.244.3.0 dev vxlan.rhizome proto 114 onlink" {
				t.Errorf("n1 route to n3's block: %q", got)
			}
			link := l.ip(n1.ns, "-d", "link", "show", "vxlan.rhizome")
			for _, want := range []string{"mtu 1450", "vxlan id 4096", "local 192.168.10.11", "dev eth0", "dstport 4789", "nolearning", n1.r.VXLANMAC().String()} {
				if !strings.Contains(link, want) {
					t.Errorf("vxlan.rhizome lacks %q:\n%s", want, link)
				}
			}
			neigh := l.ip(n1.ns, "neigh", "show", "dev", "vxlan.rhizome")
			fdb := mustBridgeFDB(t, n1.ns)
			for _, o := range []*labNode{n2, n3} {
				if !strings.Contains(neigh, o.block.Addr().String()+" lladdr "+o.r.VXLANMAC().String()) {
					t.Errorf("no neighbour entry for %s's VTEP:\n%s", o.name, neigh)
				}
				if !strings.Contains(fdb, o.r.VXLANMAC().String()+" dst "+o.addr.Addr().String()) {
					t.Errorf("no FDB entry for %s's VTEP:\n%s", o.name, fdb)
				}
			}

			tx := txPackets(t, n1.ns, "vxlan.rhizome")
			ping(t, n1.pod, n3.podIP) // across subnets, through VXLAN
			ping(t, n1.pod, n2.podIP)
			ping(t, n3.pod, n2.podIP)
			sent := txPackets(t, n1.ns, "vxlan.rhizome") - tx
			// n1 sent at least one echo request to n3 through the tunnel, and
			// one to n2 as well unless CrossSubnet routes it directly.
			if min := uint64(1); tc.n2ThroughVXLAN {
				min = 2
				if sent < min {
					t.Errorf("vxlan.rhizome sent %d packets, want >= %d", sent, min)
				}
			} else if sent < min {
				t.Errorf("vxlan.rhizome sent %d packets, want >= %d", sent, min)
			}
			if st := n1.r.Status(); st.PodMTU != 1450 || len(st.Devices) != 1 || st.Devices[0].Name != "vxlan.rhizome" {
				t.Errorf("status %+v", st)
			}
		})
	}
}

func mustBridgeFDB(t *testing.T, ns *netns.NS) string {
	t.Helper()
	out, err := ns.Exec(context.Background(), "bridge", "fdb", "show", "dev", "vxlan.rhizome")
	must(t, err)
	return string(out)
}

func TestKernelECMPAndForeignRoutesUntouched(t *testing.T) {
	l := newLab(t)
	n1 := l.nodes[0]
	// Foreign state that must survive: a static route inside the pool, one
	// on a prefix we will want, a device, and an nftables table.
	l.ip(n1.ns, "route", "add", "10.244.9.0/24", "via", "192.168.10.1")
	l.ip(n1.ns, "route", "add", "10.244.8.0/26", "via", "192.168.10.1", "proto", "static")
	l.ip(n1.ns, "link", "add", "vxlan.other", "type", "vxlan", "id", "7", "dstport", "4790", "dev", "eth0")
	if _, err := n1.ns.Exec(context.Background(), "nft", "add", "table", "inet", "other"); err != nil {
		t.Fatal(err)
	}
	l.startAll(poolVXLAN)
	// 172.20.7.0/24 is outside every pool (a route from a router): it goes
	// directly, as one ECMP route.
	must(t, n1.r.Apply(Batch{Upserts: []RemoteRoute{
		{Prefix: netip.MustParsePrefix("172.20.7.0/24"), NextHops: []netip.Addr{netip.MustParseAddr("192.168.10.12"), netip.MustParseAddr("192.168.10.13")}},
		{Prefix: netip.MustParsePrefix("10.244.8.0/26"), NextHops: []netip.Addr{netip.MustParseAddr("192.168.10.12")}},
	}}))
	n1.r.SetConverged()
	l.waitRoutes(n1, 4) // blackhole, n2, n3, ECMP; 10.244.8.0/26 is a conflict
	got := l.ip(n1.ns, "route", "show", "exact", "172.20.7.0/24")
	if !strings.Contains(got, "proto 114") || !strings.Contains(got, "nexthop via 192.168.10.12 dev eth0 weight 1") ||
		!strings.Contains(got, "nexthop via 192.168.10.13 dev eth0 weight 1") {
		t.Errorf("ECMP route:\n%s", got)
	}
	if got := l.kernelRoute(n1.ns, netip.MustParsePrefix("10.244.8.0/26")); got != "10.244.8.0/26 via 192.168.10.1 dev eth0 proto static" {
		t.Errorf("foreign route on a wanted prefix was touched: %q", got)
	}
	if got := l.kernelRoute(n1.ns, netip.MustParsePrefix("10.244.9.0/24")); got != "10.244.9.0/24 via 192.168.10.1 dev eth0" {
		t.Errorf("foreign route was touched: %q", got)
	}
	if st := n1.r.Status(); len(st.Conflicts) != 1 || st.Conflicts[0] != netip.MustParsePrefix("10.244.8.0/26") {
		t.Errorf("conflicts %v", st.Conflicts)
	}
	l.ip(n1.ns, "link", "show", "vxlan.other")
	if out, err := n1.ns.Exec(context.Background(), "nft", "list", "tables"); err != nil || !strings.Contains(string(out), "table inet other") {
		t.Errorf("foreign nftables table gone: %s %v", out, err)
	}
	// The foreign route goes: ours takes its place.
	l.ip(n1.ns, "route", "del", "10.244.8.0/26", "proto", "static")
	l.waitRoutes(n1, 5)
	if got := l.kernelRoute(n1.ns, netip.MustParsePrefix("10.244.8.0/26")); !strings.Contains(got, "proto 114") {
		t.Errorf("ours did not replace the deleted foreign route: %q", got)
	}
}

func TestKernelDriftRepair(t *testing.T) {
	l := newLab(t)
	l.startAll(poolVXLAN)
	n1, n3 := l.nodes[0], l.nodes[2]
	want := l.kernelRoute(n1.ns, n3.block)

	var start time.Time
	restored := func(what string) {
		t.Helper()
		eventually(t, what, func() string {
			if got := strings.TrimSpace(l.ip(n1.ns, "route", "show", "exact", n3.block.String())); got != want {
				return "route is " + got
			}
			return ""
		})
		t.Logf("%s: repaired within %v (including the time to run ip)", what, time.Since(start))
	}
	start = time.Now()
	l.ip(n1.ns, "route", "del", n3.block.String())
	restored("route deleted by hand")
	// A route of another protocol put in its place (by hand here) is not
	// ours: it is left alone until it goes.
	l.ip(n1.ns, "route", "replace", n3.block.String(), "via", "192.168.10.1")
	time.Sleep(300 * time.Millisecond) // ten times the measured repair time
	if got := strings.TrimSpace(l.ip(n1.ns, "route", "show", "exact", n3.block.String())); !strings.Contains(got, "via 192.168.10.1") || strings.Contains(got, "proto 114") {
		t.Fatalf("a route replaced by hand was overwritten: %q", got)
	}
	start = time.Now()
	l.ip(n1.ns, "route", "del", n3.block.String())
	restored("route replaced by hand, then deleted")
	start = time.Now()
	l.ip(n1.ns, "route", "change", n3.block.String(), "via", "192.168.10.12", "dev", "eth0", "proto", "114")
	restored("route changed by hand, keeping our protocol")
	start = time.Now()
	l.ip(n1.ns, "link", "del", "vxlan.rhizome")
	restored("VXLAN device deleted")
	eventually(t, "VTEP entries back", func() string {
		if n := l.ip(n1.ns, "neigh", "show", "dev", "vxlan.rhizome"); !strings.Contains(n, n3.r.VXLANMAC().String()) {
			return "neighbours: " + n
		}
		return ""
	})
	ping(t, n1.pod, n3.podIP)
	l.ip(n1.ns, "neigh", "del", n3.block.Addr().String(), "dev", "vxlan.rhizome")
	eventually(t, "neighbour entry restored", func() string {
		if n := l.ip(n1.ns, "neigh", "show", "dev", "vxlan.rhizome"); !strings.Contains(n, n3.block.Addr().String()) {
			return "neighbours: " + n
		}
		return ""
	})
	ping(t, n1.pod, n3.podIP)
}

func TestKernelAdoptionAfterRestart(t *testing.T) {
	l := newLab(t)
	l.startAll(poolVXLAN)
	n1 := l.nodes[0]
	before := l.ip(n1.ns, "route", "show", "proto", "114")
	n1.stop()
	if after := l.ip(n1.ns, "route", "show", "proto", "114"); after != before {
		t.Fatalf("stopping changed the routes:\n%s\nwant:\n%s", after, before)
	}

	// A new agent starts: it knows its blocks but BGP has not converged.
	l.start(n1)
	s := l.state(n1, poolVXLAN)
	must(t, n1.r.SetState(s))
	eventually(t, "first pass after restart", func() string {
		if st := n1.r.Status(); st.Passes == 0 || st.StaleRoutes != 2 {
			return "waiting"
		}
		return ""
	})
	if after := l.ip(n1.ns, "route", "show", "proto", "114"); after != before {
		t.Errorf("restart changed routes before convergence:\n%s\nwant:\n%s", after, before)
	}
	ping(t, n1.pod, l.nodes[2].podIP)
	// BGP relearns one of the two remote blocks, then converges: the other
	// one, stale, goes.
	must(t, n1.r.Apply(Batch{Upserts: []RemoteRoute{{Prefix: l.nodes[2].block, NextHops: []netip.Addr{l.nodes[2].addr.Addr()}}}}))
	n1.r.SetConverged()
	l.waitRoutes(n1, 2)
	if got := l.kernelRoute(n1.ns, l.nodes[1].block); got != "" {
		t.Errorf("stale route still there after convergence: %q", got)
	}
}

func TestKernelNATOutgoing(t *testing.T) {
	l := newLab(t)
	n1, n2 := l.nodes[0], l.nodes[1]
	// An outside host, on a second link of n1, that knows no pod routes.
	ext := netns.New(t, "ext")
	must(t, netns.Veth(n1.ns, "eth1", ext, "eth0"))
	must(t, netns.AddAddr(n1.ns, "eth1", netip.MustParsePrefix("198.51.100.1/24")))
	must(t, netns.AddAddr(ext, "eth0", netip.MustParsePrefix("198.51.100.2/24")))
	outside := listen(t, ext, "198.51.100.2:8080")
	inside := listen(t, n2.pod, n2.podIP.String()+":8080")

	pool := poolVXCS
	pool.NATOutgoing = true
	l.startAll(pool)
	must(t, dial(n1.pod, "198.51.100.2:8080"))
	if got := <-outside; got != "198.51.100.1" {
		t.Errorf("outside host saw the pod as %s, want the node's address 198.51.100.1", got)
	}
	must(t, dial(n1.pod, n2.podIP.String()+":8080"))
	if got := <-inside; got != n1.podIP.String() {
		t.Errorf("pod-to-pod traffic seen from %s, want the pod's own address %s (no NAT inside the pools)", got, n1.podIP)
	}
	table, err := n1.ns.Exec(context.Background(), "nft", "list", "table", "inet", datapath.NATTable)
	must(t, err)
	if !strings.Contains(string(table), "masquerade") {
		t.Errorf("NAT table:\n%s", table)
	}
	// Flushed by hand: restored by the next resync; natOutgoing off: gone.
	s := l.state(n1, pool)
	s.Pools[0].NATOutgoing = false
	must(t, n1.r.SetState(s))
	eventually(t, "NAT table removed", func() string {
		out, _ := n1.ns.Exec(context.Background(), "nft", "list", "tables")
		if strings.Contains(string(out), datapath.NATTable) {
			return string(out)
		}
		return ""
	})
	if err := dial(n1.pod, "198.51.100.2:8080"); err == nil {
		t.Error("the outside host is reachable from the pod without NAT (it has no route back)")
	}
}

func TestKernelIPIP(t *testing.T) {
	probe := netns.New(t, "ipip")
	// Endpoints of its own, so that the probe does not collide with the
	// fallback device tunl0 that loading the ipip module creates.
	if out, err := probe.Exec(context.Background(), "ip", "link", "add", "probe0", "type", "ipip", "local", "192.0.2.1", "remote", "192.0.2.2"); err != nil {
		t.Skipf("skipped: this kernel cannot create IPIP devices (`ip link add type ipip`: %s); make test-ipip-vm runs this test in a VM whose kernel can", strings.TrimSpace(string(out)))
	}
	for _, tc := range []struct {
		name     string
		mode     v1alpha1.EncapMode
		wantToN2 string
	}{
		{"Always", v1alpha1.EncapAlways, "10.244.2.0/26 via 192.168.10.12 dev tunl0 proto 114 onlink"},
		{"CrossSubnet", v1alpha1.EncapCrossSubnet, "10.244.2.0/26 via 192.168.10.12 dev eth0 proto 114"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t)
			pool := Pool{CIDR: netip.MustParsePrefix("10.244.0.0/16"), IPIPMode: tc.mode, VXLANMode: v1alpha1.EncapNever}
			l.startAll(pool)
			n1, n2, n3 := l.nodes[0], l.nodes[1], l.nodes[2]
			if got := l.kernelRoute(n1.ns, n2.block); got != tc.wantToN2 {
				t.Errorf("n1 route to n2's block: %q, want %q", got, tc.wantToN2)
			}
			if got := l.kernelRoute(n1.ns, n3.block); got != "10.244.3.0/26 via 192.168.20.13 dev tunl0 proto 114 onlink" {
				t.Errorf("n1 route to n3's block: %q", got)
			}
			if link := l.ip(n1.ns, "link", "show", "tunl0"); !strings.Contains(link, "mtu 1480") || !strings.Contains(link, "UP") {
				t.Errorf("tunl0: %s", link)
			}
			tx := txPackets(t, n1.ns, "tunl0")
			ping(t, n1.pod, n3.podIP)
			ping(t, n1.pod, n2.podIP)
			if txPackets(t, n1.ns, "tunl0") == tx {
				t.Error("nothing went through tunl0")
			}
			if st := n1.r.Status(); st.PodMTU != 1480 {
				t.Errorf("pod MTU %d, want 1480", st.PodMTU)
			}
			// Drift: tunl0 taken down comes back up, routes restored.
			l.ip(n1.ns, "link", "set", "tunl0", "down")
			eventually(t, "tunl0 routes restored", func() string {
				if got := l.kernelRoute(n1.ns, n3.block); !strings.Contains(got, "tunl0") {
					return "route is " + got
				}
				return ""
			})
			ping(t, n1.pod, n3.podIP)

			// The tunnel address moves, then is given back: each address
			// the agent no longer holds leaves tunl0 (the pool may hand it
			// to a pod); an address outside the pools is not ours and stays.
			l.ip(n1.ns, "addr", "add", "192.0.2.77/32", "dev", "tunl0")
			poolAddrs := func() string {
				var in []string
				for _, f := range strings.Fields(l.ip(n1.ns, "-4", "-o", "addr", "show", "dev", "tunl0")) {
					if strings.HasPrefix(f, "10.244.") || f == "192.0.2.77/32" {
						in = append(in, f)
					}
				}
				return strings.Join(in, " ")
			}
			s := l.state(n1, pool)
			s.IPIPAddress = netip.MustParseAddr("10.244.1.9")
			must(t, n1.r.SetState(s))
			eventually(t, "tunl0 holds the new tunnel address only", func() string {
				if got := poolAddrs(); got != "192.0.2.77/32 10.244.1.9/32" && got != "10.244.1.9/32 192.0.2.77/32" {
					return got
				}
				return ""
			})
			s.IPIPAddress = netip.Addr{}
			must(t, n1.r.SetState(s))
			eventually(t, "the given-back address gone from tunl0, the foreign one kept", func() string {
				if got := poolAddrs(); got != "192.0.2.77/32" {
					return got
				}
				return ""
			})
		})
	}
}

// TestKernelPodRouteWins: n1 routes 10.244.1.77/32 to n2 (an address of
// its block that n2 borrowed). The address comes back to n1 and a pod gets
// it: the CNI plugin writes the pod's /32 over the learned one (`ip route
// replace ... proto static`). The pod's route stays through drift repair,
// a full pass and a BGP update of the /32; when the pod goes, the learned
// route is back.
func TestKernelPodRouteWins(t *testing.T) {
	l := newLab(t)
	l.startAll(poolNever)
	n1, n2 := l.nodes[0], l.nodes[1]
	addr := netip.MustParsePrefix("10.244.1.77/32")
	must(t, n1.r.Apply(Batch{Upserts: []RemoteRoute{{Prefix: addr, NextHops: []netip.Addr{n2.addr.Addr()}}}}))
	eventually(t, "the learned /32", func() string {
		if got := l.kernelRoute(n1.ns, addr); !strings.Contains(got, "proto 114") {
			return got
		}
		return ""
	})
	l.ip(n1.ns, "route", "replace", addr.String(), "dev", "cali0", "proto", "static", "scope", "link")
	podRoute := "10.244.1.77 dev cali0 proto static scope link"
	check := func(when string) {
		t.Helper()
		if got := l.kernelRoute(n1.ns, addr); got != podRoute {
			t.Fatalf("%s: the pod's route became %q", when, got)
		}
	}
	time.Sleep(300 * time.Millisecond)
	check("after drift repair")
	must(t, n1.r.SetState(l.state(n1, poolNever))) // a full pass
	time.Sleep(300 * time.Millisecond)
	check("after a full pass")
	must(t, n1.r.Apply(Batch{Upserts: []RemoteRoute{{Prefix: addr, NextHops: []netip.Addr{l.nodes[2].addr.Addr()}}}}))
	n1.r.WaitWritten()
	time.Sleep(300 * time.Millisecond)
	check("after a BGP update of the /32")
	if c := n1.r.Status().Conflicts; len(c) != 1 || c[0] != addr {
		t.Errorf("conflicts %v, want the pod's /32", c)
	}
	l.ip(n1.ns, "route", "del", addr.String(), "dev", "cali0", "proto", "static")
	eventually(t, "the learned /32 back after the pod went", func() string {
		if got := l.kernelRoute(n1.ns, addr); !strings.Contains(got, "proto 114") {
			return got
		}
		return ""
	})
}

// TestKernelReresolvesECMP: without encapsulation, n1 reaches n3 (another
// subnet) through its default route. An ECMP route towards n3's subnet
// appears (via the router and via n2): n1's route to n3's block becomes
// ECMP over both, at once, and goes back when the ECMP route goes; the
// default gateway's link going down and up is followed too.
func TestKernelReresolvesECMP(t *testing.T) {
	l := newLab(t)
	l.startAll(poolNever)
	n1, n3 := l.nodes[0], l.nodes[2]
	if got := l.kernelRoute(n1.ns, n3.block); got != "10.244.3.0/26 via 192.168.10.1 dev eth0 proto 114" {
		t.Fatalf("n1's route to n3's block: %q", got)
	}
	l.ip(n1.ns, "route", "add", "192.168.20.0/24", "nexthop", "via", "192.168.10.1", "nexthop", "via", "192.168.10.12")
	d := eventually(t, "an ECMP route to n3's block", func() string {
		got := l.kernelRoute(n1.ns, n3.block)
		if !strings.Contains(got, "nexthop via 192.168.10.1 ") || !strings.Contains(got, "nexthop via 192.168.10.12 ") {
			return got
		}
		return ""
	})
	t.Logf("re-resolved to ECMP within %v", d)
	l.ip(n1.ns, "route", "del", "192.168.20.0/24")
	eventually(t, "the single path back", func() string {
		if got := l.kernelRoute(n1.ns, n3.block); got != "10.244.3.0/26 via 192.168.10.1 dev eth0 proto 114" {
			return got
		}
		return ""
	})
}
