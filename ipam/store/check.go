package store

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/ipam/blockmath"
)

// Check validates a block object as the agent must before acting on it, and
// returns its prefix. The API server refuses such objects too (schema, CEL
// and the admission policies in ipam/manifests), but an object can predate
// those rules, come from a restore, or be written past them; one bad object
// must never crash every agent, hand out an address twice or make a node
// advertise and blackhole a range it does not own. A block fails Check when
//
//   - its cidr does not parse, has host bits set, or is IPv4-mapped IPv6;
//   - it holds more than blockmath.MaxBlockAddresses addresses or is
//     shorter than a pool's smallest allowed block (IPv4 /20-/32, IPv6
//     /116-/128, the range of IPPool.spec.blockSize);
//   - its name is not the one derived from the cidr (blockmath.Name), which
//     is what makes a claim atomic.
//
// Allocations are not checked here: a bad allocation is skipped on its own
// (the block's other addresses stay served and routed).
func Check(b *v1alpha1.IPAMBlock) (netip.Prefix, error) {
	p, err := Prefix(b)
	if err != nil {
		return netip.Prefix{}, err
	}
	switch {
	case p.Addr().Is4In6():
		return netip.Prefix{}, fmt.Errorf("block %s: cidr %v is IPv4-mapped IPv6", b.Name, p)
	case p.Masked() != p:
		return netip.Prefix{}, fmt.Errorf("block %s: cidr %v has host bits set", b.Name, p)
	case p.Addr().BitLen()-p.Bits() > blockmath.MaxBlockAddressBits:
		return netip.Prefix{}, fmt.Errorf("block %s: cidr %v is larger than a block may be (IPv4 /%d, IPv6 /%d at most %d addresses)",
			b.Name, p, 32-blockmath.MaxBlockAddressBits, 128-blockmath.MaxBlockAddressBits, blockmath.MaxBlockAddresses)
	case blockmath.Name(p) != b.Name:
		return netip.Prefix{}, fmt.Errorf("block %s: name does not match cidr %v (want %s)", b.Name, p, blockmath.Name(p))
	}
	return p, nil
}

// Placed is a block's position for Overlaps: its name, prefix and creation
// time (zero for a claim not yet written, which counts as the youngest).
type Placed struct {
	Name    string
	Prefix  netip.Prefix
	Created time.Time
}

// Overlaps finds blocks that overlap an older block (creation time, then
// name, decides; every agent decides alike) and maps each such name to an
// older block it overlaps (the lowest name of them). Blocks of different sizes can overlap only by
// nesting, so a block shadowed this way holds addresses that another block
// already hands out: the agents neither allocate from it nor route it.
func Overlaps(blocks []Placed) map[string]string {
	bs := slices.Clone(blocks)
	slices.SortFunc(bs, func(x, y Placed) int {
		return cmp.Or(x.Prefix.Addr().Compare(y.Prefix.Addr()), cmp.Compare(x.Prefix.Bits(), y.Prefix.Bits()))
	})
	older := func(x, y Placed) bool {
		switch {
		case x.Created.IsZero() != y.Created.IsZero():
			return y.Created.IsZero()
		case !x.Created.Equal(y.Created):
			return x.Created.Before(y.Created)
		}
		return x.Name < y.Name
	}
	var out map[string]string
	shadow := func(young, old Placed) {
		if out == nil {
			out = map[string]string{}
		}
		if cur, ok := out[young.Name]; !ok || old.Name < cur {
			out[young.Name] = old.Name
		}
	}
	// open holds the blocks that contain the current one: sorted by address
	// and then by length, a block's containers come before it.
	var open []Placed
	for _, b := range bs {
		for len(open) > 0 && !open[len(open)-1].Prefix.Contains(b.Prefix.Addr()) {
			open = open[:len(open)-1]
		}
		for _, o := range open {
			if older(o, b) {
				shadow(b, o)
			} else {
				shadow(o, b)
			}
		}
		open = append(open, b)
	}
	return out
}
