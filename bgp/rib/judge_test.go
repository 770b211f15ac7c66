package rib

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/bgp/policy"
)

// judgePaths are the paths TestOwnersChangeJudgesAsAFullPass feeds: every
// shape whose verdict or reason can follow the owners (a block, a more
// specific of it, host routes in and out of blocks, a range covering
// blocks, a block inside a leftover larger one), through a reflector, and
// from an external peer, whose verdict never depends on them.
func judgePaths() []bgp.Update {
	refl := func(orig netip.Addr) *bgp.Attrs { a := ibgp(); a.OriginatorID, a.ClusterListLen = orig, 1; return a }
	return []bgp.Update{
		announce(nodeB, nodeB, ibgp(),
			"10.244.2.0/26",    // its block
			"10.244.6.0/26",    // held until its block arrives
			"10.244.6.0/28",    // a more specific of that block
			"10.244.6.9/32",    // a host route in it
			"10.244.4.0/26",    // node-c's block, until it moves to node-b
			"10.244.4.7/32",    // an address of node-c's block, until node-b's pod borrows it
			"10.244.9.7/32",    // its borrowed address, until given back
			"10.244.8.0/26",    // a block node-c claims meanwhile
			"10.244.7.0/24",    // a leftover larger block
			"10.244.7.64/26",   // a block inside it
			"10.244.0.0/20",    // a range covering blocks
			"10.244.100.0/26",  // among many blocks claimed at once
			"10.244.100.64/26", // and another
			"10.96.0.0/12"),    // the Service range
		announce(nodeC, nodeB, refl(nodeB), "10.244.6.0/26", "10.244.4.7/32"), // node-b's, reflected
		announce(nodeC, nodeC, ibgp(), "10.244.4.0/26", "10.244.8.0/26", "10.244.7.64/26"),
		announce(tor, tor, ebgp(65001), "192.168.1.0/24", "10.244.6.0/26"),
	}
}

// judgeOwners builds an Owners from "cidr=node" blocks and "addr=node"
// borrowed addresses.
func judgeOwners(blocks []string, borrowed ...string) *policy.Owners {
	var bs []policy.OwnedBlock
	for _, b := range blocks {
		c, n, _ := strings.Cut(b, "=")
		bs = append(bs, policy.OwnedBlock{CIDR: pfx(c), Node: n})
	}
	hosts := map[netip.Addr]string{}
	for _, h := range borrowed {
		a, n, _ := strings.Cut(h, "=")
		hosts[addr(a)] = n
	}
	return policy.NewOwners(bs, hosts)
}

// manyBlocks are more new blocks than a scoped re-judgement looks at.
func manyBlocks() []string {
	var out []string
	for i := range maxScoped + 6 {
		out = append(out, fmt.Sprintf("10.244.%d.%d/26=b", 100+i/4, 64*(i%4)))
	}
	return out
}

// TestOwnersChangeJudgesAsAFullPass: when only the owners change (an IPAM
// change), the RIB judges again only the paths whose prefixes overlap a
// prefix whose owner changed. Every verdict and every reason must still be
// what judging every path from scratch gives: at each step the RIB that
// got SetOwners, the one that got Set with the new policy, and a new RIB
// that judged every path on arrival under that policy hold the same routes
// and count the same rejections by reason, peer by peer.
func TestOwnersChangeJudgesAsAFullPass(t *testing.T) {
	base := []string{"10.244.1.0/26=self", "10.244.2.0/26=b", "10.244.4.0/26=c", "10.244.9.0/26=c"}
	steps := []struct {
		name  string
		owner *policy.Owners
		want  []string // the routes, as a reminder of what the step does
	}{
		{"the start: node-b borrowed 10.244.9.7", judgeOwners(base, "10.244.9.7=b"),
			[]string{"10.244.2.0/26 via 10.0.0.2", "10.244.4.0/26 via 10.0.0.3", "10.244.9.7/32 via 10.0.0.2", "10.96.0.0/12 via 10.0.0.2", "192.168.1.0/24 via 10.0.0.1"}},
		{"node-b's block arrives: held, installed", judgeOwners(append(base, "10.244.6.0/26=b"), "10.244.9.7=b"),
			[]string{"10.244.2.0/26 via 10.0.0.2", "10.244.4.0/26 via 10.0.0.3", "10.244.6.0/26 via 10.0.0.2", "10.244.9.7/32 via 10.0.0.2", "10.96.0.0/12 via 10.0.0.2", "192.168.1.0/24 via 10.0.0.1"}},
		{"node-c claims what node-b announces", judgeOwners(append(base, "10.244.6.0/26=b", "10.244.8.0/26=c"), "10.244.9.7=b"),
			[]string{"10.244.2.0/26 via 10.0.0.2", "10.244.4.0/26 via 10.0.0.3", "10.244.6.0/26 via 10.0.0.2", "10.244.8.0/26 via 10.0.0.3", "10.244.9.7/32 via 10.0.0.2", "10.96.0.0/12 via 10.0.0.2", "192.168.1.0/24 via 10.0.0.1"}},
		{"a leftover /24 of node-b over node-c's /26", judgeOwners(append(base, "10.244.6.0/26=b", "10.244.8.0/26=c", "10.244.7.0/24=b", "10.244.7.64/26=c"), "10.244.9.7=b"),
			[]string{"10.244.2.0/26 via 10.0.0.2", "10.244.4.0/26 via 10.0.0.3", "10.244.6.0/26 via 10.0.0.2", "10.244.7.0/24 via 10.0.0.2", "10.244.8.0/26 via 10.0.0.3", "10.244.9.7/32 via 10.0.0.2", "10.96.0.0/12 via 10.0.0.2", "192.168.1.0/24 via 10.0.0.1"}},
		{"the leftover goes: node-c's /26 shows", judgeOwners(append(base, "10.244.6.0/26=b", "10.244.8.0/26=c", "10.244.7.64/26=c"), "10.244.9.7=b"),
			[]string{"10.244.2.0/26 via 10.0.0.2", "10.244.4.0/26 via 10.0.0.3", "10.244.6.0/26 via 10.0.0.2", "10.244.7.64/26 via 10.0.0.3", "10.244.8.0/26 via 10.0.0.3", "10.244.9.7/32 via 10.0.0.2", "10.96.0.0/12 via 10.0.0.2", "192.168.1.0/24 via 10.0.0.1"}},
		{"node-b's pod borrows 10.244.4.7, gives 10.244.9.7 back", judgeOwners(append(base, "10.244.6.0/26=b", "10.244.8.0/26=c", "10.244.7.64/26=c"), "10.244.4.7=b"),
			[]string{"10.244.2.0/26 via 10.0.0.2", "10.244.4.0/26 via 10.0.0.3", "10.244.4.7/32 via 10.0.0.2", "10.244.6.0/26 via 10.0.0.2", "10.244.7.64/26 via 10.0.0.3", "10.244.8.0/26 via 10.0.0.3", "10.96.0.0/12 via 10.0.0.2", "192.168.1.0/24 via 10.0.0.1"}},
		{"node-c's block moves to node-b", judgeOwners([]string{"10.244.1.0/26=self", "10.244.2.0/26=b", "10.244.4.0/26=b", "10.244.9.0/26=c", "10.244.6.0/26=b", "10.244.8.0/26=c", "10.244.7.64/26=c"}, "10.244.4.7=b"),
			[]string{"10.244.2.0/26 via 10.0.0.2", "10.244.4.0/26 via 10.0.0.2", "10.244.4.7/32 via 10.0.0.2", "10.244.6.0/26 via 10.0.0.2", "10.244.7.64/26 via 10.0.0.3", "10.244.8.0/26 via 10.0.0.3", "10.96.0.0/12 via 10.0.0.2", "192.168.1.0/24 via 10.0.0.1"}},
		{"more blocks at once than are looked at one by one", judgeOwners(append(manyBlocks(), "10.244.1.0/26=self", "10.244.2.0/26=b", "10.244.9.0/26=c")),
			[]string{"10.244.100.0/26 via 10.0.0.2", "10.244.100.64/26 via 10.0.0.2", "10.244.2.0/26 via 10.0.0.2", "10.96.0.0/12 via 10.0.0.2", "192.168.1.0/24 via 10.0.0.1"}},
		{"no owners known", nil,
			[]string{"10.96.0.0/12 via 10.0.0.2", "192.168.1.0/24 via 10.0.0.1"}},
		{"back to the start", judgeOwners(base, "10.244.9.7=b"),
			[]string{"10.244.2.0/26 via 10.0.0.2", "10.244.4.0/26 via 10.0.0.3", "10.244.9.7/32 via 10.0.0.2", "10.96.0.0/12 via 10.0.0.2", "192.168.1.0/24 via 10.0.0.1"}},
	}
	settings := func(o *policy.Owners) Settings {
		s := defaultSettings()
		s.Policy = ownersPolicy(o)
		return s
	}
	feed := func(e *env) {
		for _, u := range judgePaths() {
			e.sp.Receive(u)
		}
	}
	byOwners, bySet := newEnv(t, Config{}), newEnv(t, Config{})
	byOwners.rib.Set(settings(judgeOwners(base, "10.244.9.7=b")))
	bySet.rib.Set(settings(judgeOwners(base, "10.244.9.7=b")))
	feed(byOwners)
	feed(bySet)
	for _, s := range steps {
		if got := byOwners.rib.SetOwners(s.owner); got == nil || got.Input().Owners != s.owner {
			t.Fatalf("%s: SetOwners returned a policy without the new owners", s.name)
		}
		bySet.rib.Set(settings(s.owner))
		fresh := newEnv(t, Config{})
		fresh.rib.Set(settings(s.owner))
		feed(fresh)
		fresh.want(s.name+": judged from scratch", s.want...)
		byOwners.want(s.name+": SetOwners", s.want...)
		bySet.want(s.name+": Set", s.want...)
		for name, e := range map[string]*env{"SetOwners": byOwners, "Set": bySet} {
			if d := diffCounters(fresh.rib.Counters(), e.rib.Counters()); d != "" {
				t.Errorf("%s: %s counts otherwise than judging from scratch: %s", s.name, name, d)
			}
		}
	}
}

// diffCounters names the peers whose accepted and rejected counts differ.
func diffCounters(want, got map[netip.Addr]PeerCounters) string {
	var out string
	for _, a := range slices.SortedFunc(maps.Keys(want), netip.Addr.Compare) {
		w, g := want[a], got[a]
		if w.Received != g.Received || w.Accepted != g.Accepted || w.Rejected != g.Rejected {
			out += fmt.Sprintf("\n  %s: received %d accepted %d rejected %v, want %d, %d, %v", a, g.Received, g.Accepted, reasons(g.Rejected), w.Received, w.Accepted, reasons(w.Rejected))
		}
	}
	return out
}

func reasons(r [policy.NumReasons]int) map[string]int {
	m := map[string]int{}
	for i, n := range r {
		if n > 0 {
			m[policy.Reason(i).String()] = n
		}
	}
	return m
}

// TestSetOwnersBeforeAPolicy: without a policy in force the RIB has
// nothing to give new owners to; the first Set judges everything.
func TestSetOwnersBeforeAPolicy(t *testing.T) {
	e := newEnv(t, Config{})
	e.sp.Receive(announce(nodeB, nodeB, ibgp(), "10.244.2.0/26"))
	if im := e.rib.SetOwners(defaultOwners()); im != nil {
		t.Errorf("SetOwners without a policy returned %v", im)
	}
	e.want("before a policy")
	e.rib.Set(defaultSettings())
	e.want("after Set", "10.244.2.0/26 via 10.0.0.2")
}
