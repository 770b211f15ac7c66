package store

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/ipam/blockmath"
	"github.com/rhizome-net/rhizome/ipam/pools"
)

// FuzzBlocks plays whoever can write IPAMBlocks and IPPools: a list of
// blocks ("name cidr" lines, in creation order) and a pool, as raw as the
// API might hold them. What the agents derive from them (store.Check,
// store.Overlaps, pools.From, the pool's next free block) must never panic,
// every block Check accepts must be small enough to index (at most
// blockmath.MaxBlockAddresses addresses), the blocks left after Overlaps
// must be pairwise disjoint whatever order they are given in, and a block
// the pool would hand out next must overlap none of them. `make test-fuzz`
// runs it for a bounded time; seeds are in testdata/fuzz/FuzzBlocks.
func FuzzBlocks(f *testing.F) {
	f.Add("10-0-0-0-24 10.0.0.0/24\n10-0-0-64-26 10.0.0.64/26\n0-0-0-0-0 0.0.0.0/0", "10.0.0.0/16", uint8(26))
	f.Add("fd00---64 fd00::/64\nfd00--40-122 fd00::40/122\n0--ffff-a00-0-122 ::ffff:10.0.0.0/122", "fd00::/56", uint8(122))
	f.Add("10-1-0-0-26 10.1.0.0/26\n10-1-0-0-26 10.1.0.0/26\nx 10.1.0.1/26", "10.1.0.0/24", uint8(28))
	f.Fuzz(func(t *testing.T, lines, poolCIDR string, blockBits uint8) {
		var blocks []*v1alpha1.IPAMBlock
		for i, l := range strings.Split(lines, "\n") {
			name, cidr, _ := strings.Cut(l, " ")
			blocks = append(blocks, &v1alpha1.IPAMBlock{
				ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(time.Unix(int64(i/2), 0))},
				Spec:       v1alpha1.IPAMBlockSpec{CIDR: cidr},
			})
		}
		var placed []Placed
		for _, b := range blocks {
			p, err := Check(b)
			if err != nil {
				continue
			}
			if p.Addr().BitLen()-p.Bits() > blockmath.MaxBlockAddressBits {
				t.Fatalf("Check accepted %v, larger than a block may be", p)
			}
			placed = append(placed, Placed{Name: b.Name, Prefix: p, Created: b.CreationTimestamp.Time})
		}
		over := Overlaps(placed)
		var kept []netip.Prefix
		for _, p := range placed {
			if _, shadowed := over[p.Name]; !shadowed {
				kept = append(kept, p.Prefix)
			}
		}
		for i := range kept {
			for j := i + 1; j < len(kept); j++ {
				if kept[i].Overlaps(kept[j]) && kept[i] != kept[j] {
					t.Fatalf("blocks %v and %v both kept but overlap", kept[i], kept[j])
				}
			}
		}
		rev := slices.Clone(placed)
		slices.Reverse(rev)
		if got := Overlaps(rev); len(got) != len(over) {
			t.Fatalf("Overlaps depends on the order of its input: %v vs %v", over, got)
		}
		size := int32(blockBits)
		set := pools.From([]*v1alpha1.IPPool{{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: v1alpha1.IPPoolSpec{CIDR: poolCIDR, BlockSize: &size}}})
		for _, p := range set.All() {
			var taken []netip.Prefix
			for _, x := range placed {
				taken = append(taken, x.Prefix)
			}
			if next, ok := p.Layout.LowestFree(taken); ok {
				for _, x := range taken {
					if x.Overlaps(next) {
						t.Fatalf("next free block %v of pool %v overlaps block %v", next, p.CIDR(), x)
					}
				}
			}
		}
	})
}
