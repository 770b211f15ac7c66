package doctor

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Rules as nft and iptables-nft compile them, run through the evaluator.
func TestEvalForward(t *testing.T) {
	pod, remote := netip.MustParseAddr("10.244.0.5"), netip.MustParseAddr("10.244.1.1")
	out := fwPacket{IIF: "rzpod1", OIF: "eth0", Src: pod, Dst: remote}
	in := fwPacket{IIF: "eth0", OIF: "rzpod1", Src: remote, Dst: pod}
	dstIn16 := []expr.Any{ // ip daddr 10.244.0.0/16
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{255, 255, 0, 0}, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{10, 244, 0, 0}},
	}
	// What nft and iptables-nft emit for a byte-aligned prefix: only its
	// bytes are loaded, no mask.
	dstIn16Short := []expr.Any{
		&expr.Payload{DestRegister: 8, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 8, Data: []byte{10, 244}},
	}
	oifRZ := []expr.Any{&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte("rz")}}
	ctEstablished := []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{6, 0, 0, 0}, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
	}
	tcp22 := []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{6}}}
	rule := func(h uint64, v expr.VerdictKind, m ...[]expr.Any) *nftables.Rule {
		r := &nftables.Rule{Handle: h}
		for _, e := range m {
			r.Exprs = append(r.Exprs, e...)
		}
		r.Exprs = append(r.Exprs, &expr.Counter{}, &expr.Verdict{Kind: v})
		return r
	}
	cases := []struct {
		name   string
		chains []fwChain
		want   string // "" = passes
	}{
		{"no chains", nil, ""},
		{"accept policy, no rules", []fwChain{{Family: "ip", Table: "filter", Name: "FORWARD", Forward: true}}, ""},
		{"iptables -d pool -j DROP", []fwChain{{Family: "ip", Table: "filter", Name: "FORWARD", Forward: true, Rules: []*nftables.Rule{rule(4, expr.VerdictDrop, dstIn16)}}},
			"rule handle 4 of chain ip filter FORWARD"},
		{"iptables-nft's short prefix load", []fwChain{{Family: "ip", Table: "filter", Name: "FORWARD", Forward: true, Rules: []*nftables.Rule{rule(6, expr.VerdictDrop, dstIn16Short)}}},
			"rule handle 6 of chain ip filter FORWARD"},
		{"drop to pods' veths", []fwChain{{Family: "inet", Table: "fw", Name: "c", Forward: true, Rules: []*nftables.Rule{rule(7, expr.VerdictDrop, oifRZ)}}},
			"rule handle 7 of chain inet fw c"},
		{"policy drop, established accepted", []fwChain{{Family: "inet", Table: "fw", Name: "c", Forward: true, Drop: true, Rules: []*nftables.Rule{rule(2, expr.VerdictAccept, ctEstablished)}}},
			"the policy drop of chain inet fw c"},
		{"policy drop, pods accepted", []fwChain{{Family: "inet", Table: "fw", Name: "c", Forward: true, Drop: true, Rules: []*nftables.Rule{
			rule(2, expr.VerdictAccept, dstIn16), rule(3, expr.VerdictAccept, []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{255, 255, 0, 0}, Xor: []byte{0, 0, 0, 0}},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{10, 244, 0, 0}}})}}},
			""},
		{"a drop only for some ports is not judged", []fwChain{{Family: "ip", Table: "filter", Name: "FORWARD", Forward: true, Rules: []*nftables.Rule{rule(9, expr.VerdictDrop, dstIn16, tcp22)}}}, ""},
		{"a drop in a chain jumped to", []fwChain{
			{Family: "ip", Table: "filter", Name: "FORWARD", Forward: true, Rules: []*nftables.Rule{{Handle: 1, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: "DOCKER-ISOLATION"}}}}},
			{Family: "ip", Table: "filter", Name: "DOCKER-ISOLATION", Rules: []*nftables.Rule{rule(5, expr.VerdictDrop)}}},
			"rule handle 5 of chain ip filter DOCKER-ISOLATION"},
		{"another hook's chain is not the forward path", []fwChain{{Family: "ip", Table: "filter", Name: "INPUT", Drop: true}}, ""},
	}
	for _, c := range cases {
		var got []string
		for _, p := range []fwPacket{out, in} {
			for _, v := range evalForward(c.chains, p) {
				got = append(got, v.Where)
			}
		}
		switch {
		case c.want == "" && len(got) > 0:
			t.Errorf("%s: dropped by %v, want passed", c.name, got)
		case c.want != "" && (len(got) == 0 || !strings.Contains(strings.Join(got, "|"), c.want)):
			t.Errorf("%s: dropped by %v, want %q", c.name, got, c.want)
		}
	}
}

func TestLegacyDrops(t *testing.T) {
	p := fwPacket{IIF: "rzpod1", OIF: "eth0", Src: netip.MustParseAddr("10.244.0.5"), Dst: netip.MustParseAddr("10.244.1.1")}
	for _, c := range []struct {
		lines []string
		want  string
	}{
		{[]string{":FORWARD ACCEPT [0:0]"}, ""},
		{[]string{":FORWARD DROP [0:0]"}, "policy is DROP"},
		{[]string{":FORWARD DROP [0:0]", "-A FORWARD -s 10.244.0.0/16 -j ACCEPT"}, ""},
		{[]string{":FORWARD ACCEPT [0:0]", "-A FORWARD -i rz+ -j DROP"}, `rule "-A FORWARD -i rz+ -j DROP"`},
		{[]string{":FORWARD ACCEPT [0:0]", "-A FORWARD -p tcp --dport 22 -j DROP"}, ""},
		{[]string{":FORWARD ACCEPT [0:0]", "-A FORWARD -d 192.168.0.0/16 -j DROP"}, ""},
	} {
		if got := legacyDrops(c.lines, p); (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%q: %q, want %q", c.lines, got, c.want)
		}
	}
}
