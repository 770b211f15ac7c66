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
	mesh, rr, tor, tor2, stranger := addr("10.0.0.2"), addr("10.0.0.3"), addr("10.0.0.1"), addr("10.0.0.254"), addr("10.9.9.9")
	torRules, _ := FromFilters([]v1alpha1.FilterRule{
		{CIDR: "0.0.0.0/0", MatchOperator: v1alpha1.MatchEqual, Action: v1alpha1.FilterAccept},
		{CIDR: "192.168.0.0/16", Action: v1alpha1.FilterAccept},
	})
	rrRules, _ := FromFilters([]v1alpha1.FilterRule{{CIDR: "10.244.7.0/24", Action: v1alpha1.FilterReject}})
	permissive, _ := FromFilters([]v1alpha1.FilterRule{{CIDR: "0.0.0.0/0", Action: v1alpha1.FilterAccept}})
	im := Compile(Input{
		Pools: []Pool{
			{Name: "default", CIDR: pfx("10.244.0.0/16")},
			{Name: "v6", CIDR: pfx("fd00:244::/56")},
		},
		Services:     []netip.Prefix{pfx("10.96.0.0/12")},
		OwnBlocks:    []netip.Prefix{pfx("10.244.1.0/26"), pfx("fd00:244::100/122")},
		OwnAddresses: []netip.Addr{addr("10.0.0.10")},
		Peers: map[netip.Addr]PeerPolicy{
			mesh: {Internal: true},
			rr:   {Internal: true, Rules: rrRules},
			tor:  {Rules: torRules},
			tor2: {Rules: permissive},
		},
	})
	tests := []struct {
		name   string
		peer   netip.Addr
		prefix string
		want   Reason
		pool   string
	}{
		{"mesh: another node's block", mesh, "10.244.2.0/26", Accepted, "default"},
		{"mesh: borrowed host route elsewhere", mesh, "10.244.3.7/32", Accepted, "default"},
		{"mesh: host route borrowed from our block", mesh, "10.244.1.5/32", Accepted, "default"},
		{"mesh: our own block", mesh, "10.244.1.0/26", RejectedOwnBlock, "default"},
		{"mesh: more specific inside our block", mesh, "10.244.1.0/28", RejectedOwnBlock, "default"},
		{"mesh: aggregate covering our block", mesh, "10.244.0.0/16", RejectedOwnBlock, "default"},
		{"mesh: service range", mesh, "10.96.0.0/12", Accepted, ""},
		{"mesh: outside pools", mesh, "192.168.1.0/24", RejectedNotInPool, ""},
		{"mesh: default route", mesh, "0.0.0.0/0", RejectedNotInPool, ""},
		{"mesh: our node address", mesh, "10.0.0.10/32", RejectedOwnAddress, ""},
		{"mesh: v6 block", mesh, "fd00:244::200/122", Accepted, "v6"},
		{"mesh: our v6 block", mesh, "fd00:244::100/122", RejectedOwnBlock, "v6"},
		{"rr: filter rejects inside pool", rr, "10.244.7.64/26", RejectedByFilter, "default"},
		{"rr: pool route", rr, "10.244.8.0/26", Accepted, "default"},
		{"tor: default route accepted by filter", tor, "0.0.0.0/0", Accepted, ""},
		{"tor: other node's block not accepted", tor, "10.244.2.0/26", RejectedNoFilterMatch, "default"},
		{"tor: accepted range", tor, "192.168.4.0/24", Accepted, ""},
		{"tor: host route in our block", tor, "10.244.1.5/32", RejectedOwnBlock, "default"},
		{"tor: subnet covering our address", tor, "10.0.0.0/24", RejectedOwnAddress, ""},
		{"permissive tor: still never our block", tor2, "10.244.1.0/26", RejectedOwnBlock, "default"},
		{"permissive tor: covering our block", tor2, "10.0.0.0/8", RejectedOwnBlock, ""},
		{"permissive tor: default route", tor2, "0.0.0.0/0", Accepted, ""},
		{"unknown peer", stranger, "10.244.2.0/26", RejectedUnknownPeer, "default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := im.Evaluate(tt.peer, pfx(tt.prefix))
			if v.Reason != tt.want {
				t.Errorf("Evaluate(%s, %s) = %s, want %s", tt.peer, tt.prefix, v.Reason, tt.want)
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
