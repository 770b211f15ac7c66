package doctor

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The firewall check asks whether the forward-hook chains of nftables
// (where iptables-nft also keeps the FORWARD chain of `iptables`) drop a
// forwarded pod packet. It runs a packet through the chains with a small
// evaluator of the expressions such chains use to match on interfaces and
// addresses (meta iifname/oifname/nfproto, the IPv4 header's addresses,
// bitwise masks, comparisons, ct state, verdicts, jumps). What it cannot
// evaluate (sets, transport ports, marks...) makes a rule "unknown": an
// unknown drop rule is not reported, since it may be a deliberate policy
// for some traffic; a drop policy is, since pod traffic that no rule
// accepts ends there. The packet is the first of a new connection.

// fwPacket is the probe packet.
type fwPacket struct {
	IIF, OIF string
	Src, Dst netip.Addr
}

// fwChain is one chain of a table with its rules, as read from the kernel.
type fwChain struct {
	Family string // ip, ip6, inet, ...
	Table  string
	Name   string
	// Base chains: hooked at forward, with a policy.
	Forward bool
	Drop    bool // policy drop
	Rules   []*nftables.Rule
}

// fwVerdict is what happened to the packet in a chain.
type fwVerdict struct {
	Dropped bool
	// Where says which rule or policy dropped it.
	Where string
}

type tri int

const (
	no tri = iota
	yes
	unknown
)

// evalForward runs p through every forward base chain of chains (a
// packet passes all of them; a drop in any is final) and returns the drops.
func evalForward(chains []fwChain, p fwPacket) []fwVerdict {
	byName := map[string]*fwChain{}
	for i := range chains {
		c := &chains[i]
		byName[c.Family+" "+c.Table+" "+c.Name] = c
	}
	var out []fwVerdict
	for i := range chains {
		c := &chains[i]
		if !c.Forward || !familyMatches(c.Family, p) {
			continue
		}
		v, done := evalChain(c, byName, p, 0)
		switch {
		case done && v.Dropped:
			out = append(out, v)
		case !done && c.Drop:
			out = append(out, fwVerdict{Dropped: true, Where: fmt.Sprintf("the policy drop of chain %s %s %s", c.Family, c.Table, c.Name)})
		}
	}
	return out
}

func familyMatches(fam string, p fwPacket) bool {
	switch fam {
	case "ip":
		return p.Src.Is4()
	case "ip6":
		return p.Src.Is6()
	case "inet":
		return true
	}
	return false
}

// evalChain returns the verdict of a chain; done is false when the packet
// fell off its end (or returned) without a verdict.
func evalChain(c *fwChain, byName map[string]*fwChain, p fwPacket, depth int) (fwVerdict, bool) {
	if depth > 16 {
		return fwVerdict{}, false
	}
	for _, r := range c.Rules {
		m, verdict := evalRule(r, p)
		if m != yes || verdict == nil {
			continue
		}
		where := fmt.Sprintf("rule handle %d of chain %s %s %s", r.Handle, c.Family, c.Table, c.Name)
		switch verdict.Kind {
		case expr.VerdictAccept:
			return fwVerdict{}, true
		case expr.VerdictDrop:
			return fwVerdict{Dropped: true, Where: where}, true
		case expr.VerdictReturn:
			return fwVerdict{}, false
		case expr.VerdictJump, expr.VerdictGoto:
			sub := byName[c.Family+" "+c.Table+" "+verdict.Chain]
			if sub == nil {
				continue
			}
			v, done := evalChain(sub, byName, p, depth+1)
			if done {
				if v.Dropped && v.Where == "" {
					v.Where = where
				}
				return v, true
			}
			if verdict.Kind == expr.VerdictGoto {
				return fwVerdict{}, false
			}
		}
	}
	return fwVerdict{}, false
}

// evalRule evaluates a rule's matches on p: yes with its verdict (nil:
// none, e.g. a counter), no, or unknown. Reject counts as drop.
func evalRule(r *nftables.Rule, p fwPacket) (tri, *expr.Verdict) {
	var regs [64]byte
	known := [64]bool{}
	off := func(reg uint32) (int, bool) {
		switch {
		case reg >= 1 && reg <= 4:
			return int(reg-1) * 16, true
		case reg >= 8 && reg <= 23:
			return int(reg-8) * 4, true
		}
		return 0, false
	}
	load := func(reg uint32, data []byte) {
		o, ok := off(reg)
		if !ok {
			return
		}
		for i := 0; i < 16 && o+i < len(regs); i++ {
			regs[o+i], known[o+i] = 0, data != nil
		}
		for i, b := range data {
			if o+i < len(regs) {
				regs[o+i] = b
			}
		}
	}
	read := func(reg uint32, n int) ([]byte, bool) {
		o, ok := off(reg)
		if !ok || o+n > len(regs) {
			return nil, false
		}
		for i := 0; i < n; i++ {
			if !known[o+i] {
				return nil, false
			}
		}
		return regs[o : o+n], true
	}
	result := yes
	var verdict *expr.Verdict
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Meta:
			if e.SourceRegister {
				continue
			}
			load(e.Register, metaValue(e.Key, p))
		case *expr.Payload:
			if e.OperationType != expr.PayloadLoad {
				continue
			}
			load(e.DestRegister, payloadValue(e, p))
		case *expr.Ct:
			if e.SourceRegister {
				continue
			}
			var v []byte
			if e.Key == expr.CtKeySTATE {
				v = binary.NativeEndian.AppendUint32(nil, 1<<3) // IP_CT_NEW: the first packet
			}
			load(e.Register, v)
		case *expr.Bitwise:
			in, ok := read(e.SourceRegister, int(e.Len))
			if !ok || len(e.Mask) < int(e.Len) || len(e.Xor) < int(e.Len) {
				load(e.DestRegister, nil)
				continue
			}
			outv := make([]byte, e.Len)
			for i := range outv {
				outv[i] = in[i]&e.Mask[i] ^ e.Xor[i]
			}
			load(e.DestRegister, outv)
		case *expr.Cmp:
			v, ok := read(e.Register, len(e.Data))
			if !ok {
				result = unknown
				continue
			}
			if !cmpHolds(e.Op, v, e.Data) {
				return no, nil
			}
		case *expr.Verdict:
			verdict = e
		case *expr.Reject:
			verdict = &expr.Verdict{Kind: expr.VerdictDrop}
		case *expr.Counter, *expr.Log, *expr.Limit:
			// No effect on matching (a limit only thins what matches).
		default:
			// Sets, ranges, marks, xt matches...: cannot tell.
			result = unknown
		}
	}
	return result, verdict
}

func cmpHolds(op expr.CmpOp, v, data []byte) bool {
	c := bytes.Compare(v, data)
	switch op {
	case expr.CmpOpEq:
		return c == 0
	case expr.CmpOpNeq:
		return c != 0
	case expr.CmpOpLt:
		return c < 0
	case expr.CmpOpLte:
		return c <= 0
	case expr.CmpOpGt:
		return c > 0
	case expr.CmpOpGte:
		return c >= 0
	}
	return false
}

func metaValue(k expr.MetaKey, p fwPacket) []byte {
	name := func(s string) []byte {
		b := make([]byte, unix.IFNAMSIZ)
		copy(b, s)
		return b
	}
	switch k {
	case expr.MetaKeyIIFNAME:
		return name(p.IIF)
	case expr.MetaKeyOIFNAME:
		return name(p.OIF)
	case expr.MetaKeyNFPROTO:
		if p.Src.Is4() {
			return []byte{unix.NFPROTO_IPV4}
		}
		return []byte{unix.NFPROTO_IPV6}
	}
	return nil
}

// payloadValue is the part of the probe's network header a payload
// expression loads: any range within the addresses (nft and iptables-nft
// load only the bytes of a prefix, e.g. 2 for a /16); other fields are
// unknown.
func payloadValue(e *expr.Payload, p fwPacket) []byte {
	if e.Base != expr.PayloadBaseNetworkHeader {
		return nil
	}
	var hdr []byte
	var lo, hi uint32 // the addresses' bytes in the header
	if p.Src.Is4() {
		src, dst := p.Src.As4(), p.Dst.As4()
		hdr = make([]byte, 20)
		copy(hdr[12:], src[:])
		copy(hdr[16:], dst[:])
		lo, hi = 12, 20
	} else {
		src, dst := p.Src.As16(), p.Dst.As16()
		hdr = make([]byte, 40)
		copy(hdr[8:], src[:])
		copy(hdr[24:], dst[:])
		lo, hi = 8, 40
	}
	if e.Offset < lo || e.Offset+e.Len > hi || e.Len == 0 {
		return nil
	}
	return hdr[e.Offset : e.Offset+e.Len]
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyARP:
		return "arp"
	case nftables.TableFamilyNetdev:
		return "netdev"
	}
	return fmt.Sprint(f)
}
