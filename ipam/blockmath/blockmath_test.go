package blockmath

import (
	"math"
	"net/netip"
	"strings"
	"testing"
)

func TestName(t *testing.T) {
	cases := []struct{ block, want string }{
		{"10.244.0.0/26", "10-244-0-0-26"},
		{"10.244.0.64/26", "10-244-0-64-26"},
		{"0.0.0.0/20", "0-0-0-0-20"},
		{"255.255.255.255/32", "255-255-255-255-32"},
		{"fd00:10:244::40/122", "fd00-10-244--40-122"},
		{"fd00:10:244::/122", "fd00-10-244---122"},
		{"::40/122", "0--40-122"},
		{"::/128", "0---128"},
		{"0:1:2:3:4:5:6:7/128", "0-1-2-3-4-5-6-7-128"},
		{"2001:db8:ffff:ffff:ffff:ffff:ffff:ffc0/122", "2001-db8-ffff-ffff-ffff-ffff-ffff-ffc0-122"},
		// Host bits never reach the name: a block is named by its network.
		{"10.244.0.5/26", "10-244-0-0-26"},
	}
	seen := map[string]string{}
	for _, c := range cases {
		got := Name(netip.MustParsePrefix(c.block))
		if got != c.want {
			t.Errorf("Name(%s) = %q, want %q", c.block, got, c.want)
		}
		if len(got) > 63 || !isDNSLabelish(got) {
			t.Errorf("Name(%s) = %q is not a valid object name", c.block, got)
		}
		if prev, ok := seen[got]; ok && netip.MustParsePrefix(prev).Masked() != netip.MustParsePrefix(c.block).Masked() {
			t.Errorf("Name collision: %s and %s are both %q", prev, c.block, got)
		}
		seen[got] = c.block
	}
}

func isDNSLabelish(s string) bool {
	if s == "" || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	return strings.Trim(s, "0123456789abcdef-") == ""
}

func TestNewLayout(t *testing.T) {
	cases := []struct {
		pool    string
		bits    int
		wantErr string
		blocks  int64
		size    int
		addrs   int64
	}{
		{pool: "10.244.0.0/16", bits: 26, blocks: 1024, size: 64, addrs: 65536},
		{pool: "10.0.0.0/8", bits: 20, blocks: 4096, size: 4096, addrs: 1 << 24},
		{pool: "10.0.0.0/32", bits: 32, blocks: 1, size: 1, addrs: 1},
		{pool: "0.0.0.0/0", bits: 32, blocks: 1 << 32, size: 1, addrs: 1 << 32},
		{pool: "fd00:10:244::/56", bits: 122, blocks: math.MaxInt64, size: 64, addrs: math.MaxInt64},
		{pool: "fd00::/120", bits: 122, blocks: 4, size: 64, addrs: 256},
		{pool: "fd00::/128", bits: 128, blocks: 1, size: 1, addrs: 1},
		{pool: "10.244.1.0/16", bits: 26, wantErr: "host bits"},
		{pool: "10.244.0.0/26", bits: 24, wantErr: "does not fit"},
		{pool: "10.244.0.0/16", bits: 33, wantErr: "does not fit"},
		{pool: "10.0.0.0/8", bits: 19, wantErr: "more than 4096"},
		{pool: "fd00::/64", bits: 112, wantErr: "more than 4096"},
		{pool: "::ffff:10.0.0.0/120", bits: 122, wantErr: "IPv4-mapped"},
	}
	for _, c := range cases {
		l, err := NewLayout(netip.MustParsePrefix(c.pool), c.bits)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("NewLayout(%s, %d) error = %v, want %q", c.pool, c.bits, err, c.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("NewLayout(%s, %d): %v", c.pool, c.bits, err)
			continue
		}
		if got := l.Blocks(); got != c.blocks {
			t.Errorf("%s/%d Blocks() = %d, want %d", c.pool, c.bits, got, c.blocks)
		}
		if got := l.BlockAddresses(); got != c.size {
			t.Errorf("%s/%d BlockAddresses() = %d, want %d", c.pool, c.bits, got, c.size)
		}
		if got := l.Addresses(); got != c.addrs {
			t.Errorf("%s/%d Addresses() = %d, want %d", c.pool, c.bits, got, c.addrs)
		}
	}
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestLowestFree(t *testing.T) {
	cases := []struct {
		name  string
		pool  string
		bits  int
		taken []netip.Prefix
		want  string // "" = none free
	}{
		{"empty pool", "10.244.0.0/16", 26, nil, "10.244.0.0/26"},
		{"first taken", "10.244.0.0/16", 26, prefixes("10.244.0.0/26"), "10.244.0.64/26"},
		{"gap is reused", "10.244.0.0/16", 26, prefixes("10.244.0.128/26", "10.244.0.0/26"), "10.244.0.64/26"},
		{"unsorted run", "10.244.0.0/16", 26, prefixes("10.244.0.128/26", "10.244.0.64/26", "10.244.0.0/26"), "10.244.0.192/26"},
		{"duplicates", "10.244.0.0/16", 26, prefixes("10.244.0.0/26", "10.244.0.0/26", "10.244.0.64/26"), "10.244.0.128/26"},
		{"other pools and families ignored", "10.244.0.0/16", 26, prefixes("10.245.0.0/26", "fd00::/122", "::ffff:10.244.0.0/122"), "10.244.0.0/26"},
		// A block of another size (left over from an earlier pool) is
		// never overlapped, whether it is larger or smaller.
		{"larger leftover block covers four", "10.244.0.0/16", 26, prefixes("10.244.0.0/24"), "10.244.1.0/26"},
		{"smaller leftover block inside one", "10.244.0.0/16", 26, prefixes("10.244.0.64/28"), "10.244.0.0/26"},
		{"smaller leftover block in the first", "10.244.0.0/16", 26, prefixes("10.244.0.32/28"), "10.244.0.64/26"},
		{"leftovers of both sizes", "10.244.0.0/16", 26, prefixes("10.244.0.0/24", "10.244.1.0/26", "10.244.1.80/28", "10.244.0.0/26"), "10.244.1.128/26"},
		{"leftover covers the pool", "10.244.0.0/24", 26, prefixes("10.244.0.0/22"), ""},
		{"crosses an octet", "10.244.0.0/16", 26, prefixes("10.244.0.0/26", "10.244.0.64/26", "10.244.0.128/26", "10.244.0.192/26"), "10.244.1.0/26"},
		{"full", "10.244.0.0/25", 26, prefixes("10.244.0.0/26", "10.244.0.64/26"), ""},
		{"single block pool full", "10.1.0.0/26", 26, prefixes("10.1.0.0/26"), ""},
		{"top of IPv4 space", "255.255.255.128/25", 26, prefixes("255.255.255.128/26"), "255.255.255.192/26"},
		{"top of IPv4 space full", "255.255.255.128/25", 26, prefixes("255.255.255.128/26", "255.255.255.192/26"), ""},
		{"/32 blocks", "10.9.0.0/30", 32, prefixes("10.9.0.0/32", "10.9.0.1/32", "10.9.0.3/32"), "10.9.0.2/32"},
		{"IPv6 empty", "fd00:10:244::/56", 122, nil, "fd00:10:244::/122"},
		{"IPv6 second", "fd00:10:244::/56", 122, prefixes("fd00:10:244::/122"), "fd00:10:244::40/122"},
		{"IPv6 next after the low half", "fd00::/120", 122, prefixes("fd00::/122", "fd00::40/122", "fd00::80/122"), "fd00::c0/122"},
		{"IPv6 top of space full", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff80/121", 122,
			prefixes("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff80/122", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffc0/122"), ""},
		{"IPv6 huge pool skips over a run", "2001:db8::/32", 128, prefixes("2001:db8::/128", "2001:db8::1/128"), "2001:db8::2/128"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l, err := NewLayout(netip.MustParsePrefix(c.pool), c.bits)
			if err != nil {
				t.Fatal(err)
			}
			before := append([]netip.Prefix(nil), c.taken...)
			got, ok := l.LowestFree(c.taken)
			if c.want == "" {
				if ok {
					t.Fatalf("LowestFree = %v, want none", got)
				}
				return
			}
			if !ok || got != netip.MustParsePrefix(c.want) {
				t.Fatalf("LowestFree = %v, %v; want %s", got, ok, c.want)
			}
			for i := range before {
				if before[i] != c.taken[i] {
					t.Fatalf("LowestFree modified its argument")
				}
			}
		})
	}
}

func TestOffsetNth(t *testing.T) {
	cases := []struct {
		block  string
		offset int
		addr   string // "" = out of range
	}{
		{"10.244.0.0/26", 0, "10.244.0.0"},
		{"10.244.0.0/26", 63, "10.244.0.63"},
		{"10.244.0.0/26", 64, ""},
		{"10.244.0.0/26", -1, ""},
		{"10.244.0.192/26", 63, "10.244.0.255"},
		{"10.244.255.192/26", 63, "10.244.255.255"},
		{"255.255.255.192/26", 63, "255.255.255.255"},
		{"10.0.0.0/20", 4095, "10.0.15.255"},
		{"10.0.0.7/32", 0, "10.0.0.7"},
		{"10.0.0.7/32", 1, ""},
		{"fd00:10:244::40/122", 0, "fd00:10:244::40"},
		{"fd00:10:244::40/122", 63, "fd00:10:244::7f"},
		{"fd00::ffff:ffff:ffff:ffc0/122", 63, "fd00::ffff:ffff:ffff:ffff"},
		{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffc0/122", 63, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
		{"fd00::/116", 4095, "fd00::fff"},
		{"fd00::/116", 4096, ""},
	}
	for _, c := range cases {
		block := netip.MustParsePrefix(c.block)
		got, ok := Nth(block, c.offset)
		if c.addr == "" {
			if ok {
				t.Errorf("Nth(%s, %d) = %v, want out of range", c.block, c.offset, got)
			}
			continue
		}
		want := netip.MustParseAddr(c.addr)
		if !ok || got != want {
			t.Errorf("Nth(%s, %d) = %v, %v; want %v", c.block, c.offset, got, ok, want)
		}
		if off, ok := Offset(block, want); !ok || off != c.offset {
			t.Errorf("Offset(%s, %s) = %d, %v; want %d", c.block, c.addr, off, ok, c.offset)
		}
	}
	// Addresses outside the block, or of the other family, have no offset.
	for _, c := range []struct{ block, addr string }{
		{"10.244.0.0/26", "10.244.0.64"},
		{"10.244.0.64/26", "10.244.0.63"},
		{"10.244.0.0/26", "::ffff:10.244.0.1"},
		{"fd00::/122", "fd00::40"},
		{"fd00::/122", "10.0.0.1"},
	} {
		if off, ok := Offset(netip.MustParsePrefix(c.block), netip.MustParseAddr(c.addr)); ok {
			t.Errorf("Offset(%s, %s) = %d, want none", c.block, c.addr, off)
		}
	}
}

func TestBlockOf(t *testing.T) {
	l, err := NewLayout(netip.MustParsePrefix("fd00:10:244::/56"), 122)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ addr, want string }{
		{"fd00:10:244::1", "fd00:10:244::/122"},
		{"fd00:10:244::7f", "fd00:10:244::40/122"},
		{"fd00:10:244:ff:ffff:ffff:ffff:ffff", "fd00:10:244:ff:ffff:ffff:ffff:ffc0/122"},
		{"fd00:10:245::1", ""},
		{"10.0.0.1", ""},
	}
	for _, c := range cases {
		got, ok := l.BlockOf(netip.MustParseAddr(c.addr))
		if c.want == "" {
			if ok {
				t.Errorf("BlockOf(%s) = %v, want outside", c.addr, got)
			}
			continue
		}
		if !ok || got != netip.MustParsePrefix(c.want) {
			t.Errorf("BlockOf(%s) = %v, %v; want %s", c.addr, got, ok, c.want)
		}
		if !l.Contains(got) {
			t.Errorf("Contains(%v) = false", got)
		}
	}
}

func TestAddPow2(t *testing.T) {
	cases := []struct {
		a    string
		n    int
		want string // "" = overflow
	}{
		{"10.0.0.0", 6, "10.0.0.64"},
		{"10.0.255.192", 6, "10.1.0.0"},
		{"255.255.255.192", 6, ""},
		{"fd00::ffff:ffff:ffff:ffc0", 6, "fd00:0:0:1::"},
		{"fd00::", 64, "fd00:0:0:1::"},
		{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffc0", 6, ""},
		{"ffff:ffff:ffff:ffff::", 64, ""},
	}
	for _, c := range cases {
		got, ok := addPow2(netip.MustParseAddr(c.a), c.n)
		if c.want == "" {
			if ok {
				t.Errorf("addPow2(%s, %d) = %v, want overflow", c.a, c.n, got)
			}
			continue
		}
		if !ok || got != netip.MustParseAddr(c.want) {
			t.Errorf("addPow2(%s, %d) = %v, %v; want %s", c.a, c.n, got, ok, c.want)
		}
	}
}

func TestNthFree(t *testing.T) {
	l, err := NewLayout(netip.MustParsePrefix("10.0.0.0/24"), 26)
	if err != nil {
		t.Fatal(err)
	}
	p := netip.MustParsePrefix
	cases := []struct {
		taken []netip.Prefix
		n     int
		want  string // "" = none
	}{
		{nil, 0, "10.0.0.0/26"},
		{nil, 3, "10.0.0.192/26"},
		{nil, 4, ""},
		{[]netip.Prefix{p("10.0.0.0/26")}, 0, "10.0.0.64/26"},
		{[]netip.Prefix{p("10.0.0.64/26")}, 1, "10.0.0.128/26"},
		{[]netip.Prefix{p("10.0.0.64/26"), p("10.0.0.64/26"), p("10.0.0.0/26")}, 1, "10.0.0.192/26"},
		{[]netip.Prefix{p("10.0.0.128/26"), p("192.168.0.0/26")}, 2, "10.0.0.192/26"},
		{[]netip.Prefix{p("10.0.0.0/26"), p("10.0.0.64/26"), p("10.0.0.128/26"), p("10.0.0.192/26")}, 0, ""},
	}
	for _, c := range cases {
		got, ok := l.NthFree(c.taken, c.n)
		if (c.want == "") != !ok || (ok && got.String() != c.want) {
			t.Errorf("NthFree(%v, %d) = %v, %v; want %q", c.taken, c.n, got, ok, c.want)
		}
	}
}
