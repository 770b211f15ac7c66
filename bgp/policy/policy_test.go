package policy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }
func i32(v int32) *int32        { return &v }

func TestRuleMatches(t *testing.T) {
	tests := []struct {
		name  string
		rule  Rule
		route string
		want  bool
	}{
		{"in: itself", Rule{CIDR: pfx("10.0.0.0/8"), Op: In, MinLen: -1, MaxLen: -1}, "10.0.0.0/8", true},
		{"in: more specific", Rule{CIDR: pfx("10.0.0.0/8"), Op: In, MinLen: -1, MaxLen: -1}, "10.1.2.0/24", true},
		{"in: less specific", Rule{CIDR: pfx("10.0.0.0/8"), Op: In, MinLen: -1, MaxLen: -1}, "0.0.0.0/0", false},
		{"in: outside", Rule{CIDR: pfx("10.0.0.0/8"), Op: In, MinLen: -1, MaxLen: -1}, "11.0.0.0/24", false},
		{"notin: outside", Rule{CIDR: pfx("10.0.0.0/8"), Op: NotIn, MinLen: -1, MaxLen: -1}, "11.0.0.0/24", true},
		{"notin: inside", Rule{CIDR: pfx("10.0.0.0/8"), Op: NotIn, MinLen: -1, MaxLen: -1}, "10.0.0.0/24", false},
		{"equal", Rule{CIDR: pfx("0.0.0.0/0"), Op: Equal, MinLen: -1, MaxLen: -1}, "0.0.0.0/0", true},
		{"equal: longer", Rule{CIDR: pfx("0.0.0.0/0"), Op: Equal, MinLen: -1, MaxLen: -1}, "10.0.0.0/8", false},
		{"notequal", Rule{CIDR: pfx("0.0.0.0/0"), Op: NotEqual, MinLen: -1, MaxLen: -1}, "10.0.0.0/8", true},
		{"length: within", Rule{CIDR: pfx("10.0.0.0/8"), Op: In, MinLen: 16, MaxLen: 24}, "10.1.0.0/16", true},
		{"length: too long", Rule{CIDR: pfx("10.0.0.0/8"), Op: In, MinLen: 16, MaxLen: 24}, "10.1.1.1/32", false},
		{"length: too short", Rule{CIDR: pfx("10.0.0.0/8"), Op: In, MinLen: 16, MaxLen: 24}, "10.0.0.0/8", false},
		{"length with notin", Rule{CIDR: pfx("10.0.0.0/8"), Op: NotIn, MinLen: 24, MaxLen: -1}, "192.168.0.0/16", false},
		{"other family never matches", Rule{CIDR: pfx("0.0.0.0/0"), Op: NotIn, MinLen: -1, MaxLen: -1}, "fd00::/64", false},
		{"ipv6 in", Rule{CIDR: pfx("fd00::/48"), Op: In, MinLen: -1, MaxLen: -1}, "fd00:0:0:1::/64", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.rule.Matches(pfx(tt.route)); got != tt.want {
				t.Errorf("Matches(%s) = %v, want %v", tt.route, got, tt.want)
			}
		})
	}
}

func TestFromFilters(t *testing.T) {
	good := []v1alpha1.FilterRule{
		{CIDR: "0.0.0.0/0", MatchOperator: v1alpha1.MatchEqual, Action: v1alpha1.FilterAccept},
		{CIDR: "10.0.0.0/8", Action: v1alpha1.FilterReject, PrefixLength: &v1alpha1.PrefixLengthRange{Min: i32(16)}},
	}
	rules, err := FromFilters(good)
	if err != nil {
		t.Fatal(err)
	}
	want := []Rule{
		{CIDR: pfx("0.0.0.0/0"), Op: Equal, MinLen: -1, MaxLen: -1, Action: Accept},
		{CIDR: pfx("10.0.0.0/8"), Op: In, MinLen: 16, MaxLen: -1, Action: Reject},
	}
	if len(rules) != len(want) {
		t.Fatalf("got %d rules", len(rules))
	}
	for i := range want {
		if rules[i] != want[i] {
			t.Errorf("rule %d = %+v, want %+v", i, rules[i], want[i])
		}
	}
	bad := []struct {
		rule v1alpha1.FilterRule
		msg  string
	}{
		{v1alpha1.FilterRule{CIDR: "10.0.0.1/8", Action: v1alpha1.FilterAccept}, "host bits"},
		{v1alpha1.FilterRule{CIDR: "nonsense", Action: v1alpha1.FilterAccept}, "cidr"},
		{v1alpha1.FilterRule{CIDR: "10.0.0.0/8", Action: "Maybe"}, "action"},
		{v1alpha1.FilterRule{CIDR: "10.0.0.0/8", Action: v1alpha1.FilterAccept, PrefixLength: &v1alpha1.PrefixLengthRange{Min: i32(24), Max: i32(16)}}, "min 24 > max 16"},
		{v1alpha1.FilterRule{CIDR: "10.0.0.0/8", Action: v1alpha1.FilterAccept, PrefixLength: &v1alpha1.PrefixLengthRange{Max: i32(64)}}, "beyond /32"},
	}
	for _, b := range bad {
		_, err := FromFilters([]v1alpha1.FilterRule{good[0], b.rule})
		if err == nil || !strings.Contains(err.Error(), b.msg) || !strings.Contains(err.Error(), "rule 1") {
			t.Errorf("FromFilters(%+v) error = %v, want one naming rule 1 and %q", b.rule, err, b.msg)
		}
	}
}

func TestImportEvaluate(t *testing.T) {
	// This node is n1 (10.0.0.10). n2 is a mesh peer, n3 a route
	// reflector of ours, n9 a mesh peer playing the rogue: a node the
	// cluster knows, with a block of its own, that announces what it must
	// not. n4 has a router ID other than its address; n5 and n6 claim the
	// same router ID.
	mesh, rr, rogue, tor, tor2, stranger := addr("10.0.0.2"), addr("10.0.0.3"), addr("10.0.0.9"), addr("10.0.0.1"), addr("10.0.0.254"), addr("10.9.9.9")
	self, n4 := addr("10.0.0.10"), addr("10.0.0.4")
	torRules, _ := FromFilters([]v1alpha1.FilterRule{
		{CIDR: "0.0.0.0/0", MatchOperator: v1alpha1.MatchEqual, Action: v1alpha1.FilterAccept},
		{CIDR: "192.168.0.0/16", Action: v1alpha1.FilterAccept},
	})
	rrRules, _ := FromFilters([]v1alpha1.FilterRule{{CIDR: "10.244.7.0/24", Action: v1alpha1.FilterReject}})
	permissive, _ := FromFilters([]v1alpha1.FilterRule{{CIDR: "0.0.0.0/0", Action: v1alpha1.FilterAccept}})
	im := Compile(Input{
		Pools: []Pool{
			{Name: "default", CIDR: pfx("10.244.0.0/16"), BlockBits: 26},
			{Name: "v6", CIDR: pfx("fd00:244::/56"), BlockBits: 122},
		},
		Services:     []netip.Prefix{pfx("10.96.0.0/12")},
		OwnBlocks:    []netip.Prefix{pfx("10.244.1.0/26"), pfx("fd00:244::100/122")},
		OwnAddresses: []netip.Addr{self},
		Owners: NewOwners([]OwnedBlock{
			{pfx("10.244.1.0/26"), "n1"}, {pfx("10.244.2.0/26"), "n2"}, {pfx("10.244.3.0/26"), "n3"},
			{pfx("10.244.4.0/26"), "n4"}, {pfx("10.244.5.0/26"), ""}, {pfx("10.244.9.0/26"), "n9"},
			{pfx("10.244.10.0/26"), "n5"}, {pfx("10.244.7.64/26"), "n2"},
			{pfx("fd00:244::100/122"), "n1"}, {pfx("fd00:244::200/122"), "n2"},
		}, map[netip.Addr]string{
			addr("10.244.1.5"): "n2", // n2's pod borrowed from our block
			addr("10.244.3.7"): "n2", // ... and from n3's
			addr("10.244.2.9"): "n9", // the rogue's one genuine borrow
		}),
		Nodes: NewNodes([]NodeInfo{
			{Name: "n1", Addresses: []netip.Addr{self}, RouterID: self},
			{Name: "n2", Addresses: []netip.Addr{mesh, addr("fd00::2")}, RouterID: mesh},
			{Name: "n3", Addresses: []netip.Addr{rr}, RouterID: rr},
			{Name: "n4", Addresses: []netip.Addr{n4}, RouterID: addr("192.0.2.4")},
			{Name: "n5", Addresses: []netip.Addr{addr("10.0.0.5")}, RouterID: addr("192.0.2.56")},
			{Name: "n6", Addresses: []netip.Addr{addr("10.0.0.6")}, RouterID: addr("192.0.2.56")},
			{Name: "n9", Addresses: []netip.Addr{rogue}, RouterID: rogue},
		}),
		Peers: map[netip.Addr]PeerPolicy{
			mesh:  {Internal: true, Node: "n2"},
			rr:    {Internal: true, Node: "n3", Reflector: true, Rules: rrRules},
			rogue: {Internal: true, Node: "n9"},
			tor:   {Rules: torRules},
			tor2:  {Rules: permissive},
		},
	})
	none := netip.Addr{}
	tests := []struct {
		name       string
		peer       netip.Addr
		prefix     string
		nh, origin netip.Addr
		want       Reason
		pool       string
	}{
		{"mesh: its block", mesh, "10.244.2.0/26", mesh, none, Accepted, "default"},
		{"mesh: its block, next hop another node", mesh, "10.244.2.0/26", rr, none, RejectedNextHop, "default"},
		{"mesh: its block, next hop nobody", mesh, "10.244.2.0/26", addr("10.0.0.99"), none, RejectedNextHop, "default"},
		{"mesh: its block, next hop us", mesh, "10.244.2.0/26", self, none, RejectedNextHopSelf, "default"},
		{"mesh: its borrowed address in another node's block", mesh, "10.244.3.7/32", mesh, none, Accepted, "default"},
		{"mesh: its borrowed address in our block", mesh, "10.244.1.5/32", mesh, none, Accepted, "default"},
		{"mesh: another node's block", mesh, "10.244.3.0/26", mesh, none, RejectedNotOwner, "default"},
		{"mesh: a block no node owns", mesh, "10.244.5.0/26", mesh, none, RejectedNotOwner, "default"},
		{"mesh: another node's pod", mesh, "10.244.3.8/32", mesh, none, RejectedNotOwner, "default"},
		{"mesh: an address of our block it does not hold", mesh, "10.244.1.6/32", mesh, none, RejectedNotOwner, "default"},
		{"mesh: an address another node borrowed", mesh, "10.244.2.9/32", mesh, none, RejectedNotOwner, "default"},
		{"mesh: host route of its own block", mesh, "10.244.2.5/32", mesh, none, RejectedNotOriginated, "default"},
		{"mesh: more specific of its block", mesh, "10.244.2.0/28", mesh, none, RejectedNotOriginated, "default"},
		{"mesh: more specific of another node's block", mesh, "10.244.3.0/28", mesh, none, RejectedNotOriginated, "default"},
		{"mesh: supernet of two blocks", mesh, "10.244.2.0/23", mesh, none, RejectedNotOriginated, "default"},
		{"mesh: supernet of a block", mesh, "10.244.8.0/21", mesh, none, RejectedNotOriginated, "default"},
		{"mesh: no block there yet: held", mesh, "10.244.6.0/26", mesh, none, RejectedHeld, "default"},
		{"mesh: no block there yet, host route: held", mesh, "10.244.6.1/32", mesh, none, RejectedHeld, "default"},
		{"mesh: not a block's size", mesh, "10.244.6.0/27", mesh, none, RejectedNotOriginated, "default"},
		{"mesh: the whole pool", mesh, "10.244.0.0/16", mesh, none, RejectedOwnBlock, "default"},
		{"mesh: our own block", mesh, "10.244.1.0/26", mesh, none, RejectedOwnBlock, "default"},
		{"mesh: more specific inside our block", mesh, "10.244.1.0/28", mesh, none, RejectedOwnBlock, "default"},
		{"mesh: service range", mesh, "10.96.0.0/12", mesh, none, Accepted, ""},
		{"mesh: service range, next hop another node", mesh, "10.96.0.0/12", rogue, none, RejectedNextHop, ""},
		{"mesh: inside a service range", mesh, "10.96.0.10/32", mesh, none, RejectedNotOriginated, ""},
		{"mesh: outside pools", mesh, "192.168.1.0/24", mesh, none, RejectedNotInPool, ""},
		{"mesh: default route", mesh, "0.0.0.0/0", mesh, none, RejectedNotInPool, ""},
		{"mesh: our node address", mesh, "10.0.0.10/32", mesh, none, RejectedOwnAddress, ""},
		{"mesh: v6 block", mesh, "fd00:244::200/122", addr("fd00::2"), none, Accepted, "v6"},
		{"mesh: v6 block, next hop its IPv4 address", mesh, "fd00:244::200/122", addr("::ffff:10.0.0.3"), none, RejectedNextHop, "v6"},
		{"mesh: our v6 block", mesh, "fd00:244::100/122", addr("fd00::2"), none, RejectedOwnBlock, "v6"},
		{"mesh: ORIGINATOR_ID from a node that does not reflect is ignored", mesh, "10.244.3.0/26", rr, rr, RejectedNotOwner, "default"},

		{"rr: its own block", rr, "10.244.3.0/26", rr, none, Accepted, "default"},
		{"rr: reflected block of the originator", rr, "10.244.2.0/26", mesh, mesh, Accepted, "default"},
		{"rr: reflected borrowed address", rr, "10.244.3.7/32", mesh, mesh, Accepted, "default"},
		{"rr: originator by router ID, not address", rr, "10.244.4.0/26", n4, addr("192.0.2.4"), Accepted, "default"},
		{"rr: originator the address of a node with another router ID", rr, "10.244.4.0/26", n4, n4, RejectedUnknownOriginator, "default"},
		{"rr: forged ORIGINATOR_ID, the rogue's next hop", rr, "10.244.2.0/26", rogue, mesh, RejectedNextHop, "default"},
		{"rr: another node's block under the rogue's ID", rr, "10.244.2.0/26", rogue, rogue, RejectedNotOwner, "default"},
		{"rr: ORIGINATOR_ID of no node", rr, "10.244.2.0/26", mesh, addr("198.51.100.1"), RejectedUnknownOriginator, "default"},
		{"rr: ORIGINATOR_ID two nodes claim", rr, "10.244.10.0/26", addr("10.0.0.5"), addr("192.0.2.56"), RejectedUnknownOriginator, "default"},
		{"rr: filter rejects inside pool", rr, "10.244.7.64/26", mesh, mesh, RejectedByFilter, "default"},

		{"rogue: its own block", rogue, "10.244.9.0/26", rogue, none, Accepted, "default"},
		{"rogue: its genuine borrow", rogue, "10.244.2.9/32", rogue, none, Accepted, "default"},
		{"rogue: another node's block with that node's next hop", rogue, "10.244.2.0/26", mesh, none, RejectedNotOwner, "default"},
		{"rogue: another node's block under that node's ORIGINATOR_ID", rogue, "10.244.2.0/26", mesh, mesh, RejectedNotOwner, "default"},
		{"rogue: its own block with another node's next hop", rogue, "10.244.9.0/26", mesh, none, RejectedNextHop, "default"},
		{"rogue: a pod of another node", rogue, "10.244.2.10/32", rogue, none, RejectedNotOwner, "default"},
		{"rogue: an address another node borrowed", rogue, "10.244.3.7/32", rogue, none, RejectedNotOwner, "default"},

		{"tor: default route accepted by filter", tor, "0.0.0.0/0", tor, none, Accepted, ""},
		{"tor: other node's block not accepted", tor, "10.244.2.0/26", tor, none, RejectedNoFilterMatch, "default"},
		{"tor: accepted range", tor, "192.168.4.0/24", tor, none, Accepted, ""},
		{"tor: accepted range through us", tor, "192.168.4.0/24", self, none, RejectedNextHopSelf, ""},
		{"tor: host route in our block", tor, "10.244.1.5/32", tor, none, RejectedOwnBlock, "default"},
		{"tor: subnet covering our address", tor, "10.0.0.0/24", tor, none, RejectedOwnAddress, ""},
		{"permissive tor: still never our block", tor2, "10.244.1.0/26", tor2, none, RejectedOwnBlock, "default"},
		{"permissive tor: covering our block", tor2, "10.0.0.0/8", tor2, none, RejectedOwnBlock, ""},
		{"permissive tor: default route", tor2, "0.0.0.0/0", tor2, none, Accepted, ""},
		{"permissive tor: another node's block, any next hop", tor2, "10.244.2.0/26", tor2, none, Accepted, "default"},
		{"unknown peer", stranger, "10.244.2.0/26", stranger, none, RejectedUnknownPeer, "default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := im.Evaluate(tt.peer, pfx(tt.prefix), tt.nh, tt.origin)
			if v.Reason != tt.want {
				t.Errorf("Evaluate(%s, %s via %s, originator %s) = %s, want %s", tt.peer, tt.prefix, tt.nh, tt.origin, v.Reason, tt.want)
			}
			pool := ""
			if v.Pool >= 0 {
				pool = im.Pools()[v.Pool].Name
			}
			if pool != tt.pool {
				t.Errorf("pool = %q, want %q", pool, tt.pool)
			}
		})
	}
}

// Without owners (no IPAM view yet) nothing from our nodes is justified:
// held, never accepted.
func TestImportWithoutOwners(t *testing.T) {
	mesh := addr("10.0.0.2")
	im := Compile(Input{
		Pools: []Pool{{Name: "default", CIDR: pfx("10.244.0.0/16"), BlockBits: 26}},
		Nodes: NewNodes([]NodeInfo{{Name: "n2", Addresses: []netip.Addr{mesh}, RouterID: mesh}}),
		Peers: map[netip.Addr]PeerPolicy{mesh: {Internal: true, Node: "n2"}},
	})
	if r := im.Evaluate(mesh, pfx("10.244.2.0/26"), mesh, netip.Addr{}).Reason; r != RejectedHeld {
		t.Errorf("a block without owners: %s, want held", r)
	}
}

func TestOwnersLookupAndChanged(t *testing.T) {
	o := NewOwners([]OwnedBlock{
		{pfx("10.0.0.64/26"), "a"}, {pfx("10.0.0.0/26"), "b"}, {pfx("10.0.1.0/24"), "c"},
		{pfx("10.0.1.0/26"), "x"}, // overlaps c's: dropped
		{pfx("fd00::/122"), "a"}, {pfx("10.0.2.0/32"), "d"}, {pfx("10.0.3.1/26"), "bad"},
	}, map[netip.Addr]string{addr("10.0.0.5"): "a"})
	cases := []struct {
		p    string
		node string
		rel  relation
	}{
		{"10.0.0.0/26", "b", isBlock},
		{"10.0.0.64/26", "a", isBlock},
		{"10.0.0.70/32", "a", inBlock},
		{"10.0.0.0/25", "b", coversBlocks},
		{"10.0.0.0/16", "b", coversBlocks},
		{"10.0.1.0/26", "c", inBlock},
		{"10.0.1.128/25", "c", inBlock},
		{"10.0.0.128/26", "", noBlock},
		{"10.0.2.0/32", "d", isBlock},
		{"10.0.2.0/31", "d", coversBlocks},
		{"10.0.3.0/26", "", noBlock},
		{"fd00::1/128", "a", inBlock},
		{"10.0.0.0/0", "b", coversBlocks},
		{"::/0", "a", coversBlocks},
	}
	for _, c := range cases {
		b, rel := o.lookup(pfx(c.p))
		if rel != c.rel || b.node != c.node {
			t.Errorf("lookup(%s) = %q %d, want %q %d", c.p, b.node, rel, c.node, c.rel)
		}
	}
	n := NewOwners([]OwnedBlock{
		{pfx("10.0.0.64/26"), "a"}, {pfx("10.0.0.0/26"), "e"}, {pfx("fd00::/122"), "a"}, {pfx("10.0.2.0/32"), "d"}, {pfx("10.0.4.0/26"), "f"},
	}, map[netip.Addr]string{addr("10.0.0.5"): "b", addr("10.0.4.1"): "a"})
	var got []string
	for _, p := range o.Changed(n) {
		got = append(got, p.String())
	}
	want := "10.0.0.0/26 10.0.0.5/32 10.0.1.0/24 10.0.4.0/26 10.0.4.1/32"
	if strings.Join(got, " ") != want {
		t.Errorf("Changed = %v, want %s", got, want)
	}
	if c := n.Changed(n); len(c) != 0 {
		t.Errorf("unchanged owners: %v", c)
	}
	if c := (*Owners)(nil).Changed(n); len(c) != 7 {
		t.Errorf("from nothing: %v", c)
	}
}
