// Package blockmath cuts IP pools into blocks and names them, for IPv4 and
// IPv6 alike. It is pure arithmetic on net/netip values, so that the rules
// every node must agree on (which block is the lowest free one, what a block
// is called) are one table-tested function each.
//
// A block's object name is derived from its CIDR so that two nodes claiming
// the same block collide on the name in the API server: that collision is
// what makes a claim atomic.
package blockmath

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// MaxBlockAddresses bounds the size of a block (a /20 or a /116): a block is
// one API object, and its allocations list is capped at this length.
const MaxBlockAddresses = 1 << MaxBlockAddressBits

// MaxBlockAddressBits is log2(MaxBlockAddresses): the host bits of the
// largest block, an IPv4 /20 or an IPv6 /116.
const MaxBlockAddressBits = 12

// Name returns the IPAMBlock object name of a block: the address with every
// '.' and ':' replaced by '-', then '-' and the prefix length, e.g.
// 10-244-0-0-26 or fd00-10-244--40-122. The mapping is one-to-one: IPv4
// names have five parts and no "--", canonical IPv6 names have nine parts or
// a "--"; an IPv6 address starting with "::" gets a leading 0 so that the name
// starts with an alphanumeric character, as object names must.
func Name(block netip.Prefix) string {
	s := strings.NewReplacer(".", "-", ":", "-").Replace(block.Masked().Addr().String())
	if strings.HasPrefix(s, "-") {
		s = "0" + s
	}
	return s + "-" + strconv.Itoa(block.Bits())
}

// Layout is a pool cut into blocks of one prefix length.
type Layout struct {
	pool netip.Prefix
	bits int
}

// NewLayout validates a pool and block prefix length. The pool must be a
// masked prefix; the block must fit in the pool and hold at most
// MaxBlockAddresses addresses.
func NewLayout(pool netip.Prefix, blockBits int) (Layout, error) {
	if !pool.IsValid() {
		return Layout{}, fmt.Errorf("pool %v is not a valid prefix", pool)
	}
	if pool.Masked() != pool {
		return Layout{}, fmt.Errorf("pool %v has host bits set", pool)
	}
	if pool.Addr().Is4In6() {
		return Layout{}, fmt.Errorf("pool %v is an IPv4-mapped IPv6 range; write it as an IPv4 pool", pool)
	}
	max := pool.Addr().BitLen()
	if blockBits < pool.Bits() || blockBits > max {
		return Layout{}, fmt.Errorf("block size /%d does not fit pool %v", blockBits, pool)
	}
	if max-blockBits > MaxBlockAddressBits {
		return Layout{}, fmt.Errorf("block size /%d of pool %v holds more than %d addresses", blockBits, pool, MaxBlockAddresses)
	}
	return Layout{pool: pool, bits: blockBits}, nil
}

// Pool returns the pool prefix.
func (l Layout) Pool() netip.Prefix { return l.pool }

// BlockBits returns the prefix length of the blocks.
func (l Layout) BlockBits() int { return l.bits }

// BlockAddresses returns how many addresses one block holds.
func (l Layout) BlockAddresses() int { return 1 << (l.pool.Addr().BitLen() - l.bits) }

// Blocks returns how many blocks the pool holds, saturating at MaxInt64 (an
// IPv6 pool can hold more blocks than any counter).
func (l Layout) Blocks() int64 { return pow2(l.bits - l.pool.Bits()) }

// Addresses returns how many addresses the pool holds, saturating at
// MaxInt64.
func (l Layout) Addresses() int64 { return pow2(l.pool.Addr().BitLen() - l.pool.Bits()) }

func pow2(n int) int64 {
	if n >= 63 {
		return math.MaxInt64
	}
	return 1 << n
}

// Contains reports whether block is one of the layout's blocks.
func (l Layout) Contains(block netip.Prefix) bool {
	return block.Bits() == l.bits && block.Masked() == block && l.pool.Contains(block.Addr())
}

// BlockOf returns the block that holds addr, and false if addr is outside the
// pool.
func (l Layout) BlockOf(addr netip.Addr) (netip.Prefix, bool) {
	if !l.pool.Contains(addr) {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(addr, l.bits).Masked(), true
}

// LowestFree returns the lowest block of the pool that overlaps nothing in
// taken (blocks of any size; those outside the pool are ignored), and false
// if there is none.
func (l Layout) LowestFree(taken []netip.Prefix) (netip.Prefix, bool) {
	return l.NthFree(taken, 0)
}

// NthFree returns the n-th lowest free block (0-based), and false if the
// pool has fewer than n+1 free blocks. A block is free when it overlaps no
// prefix in taken, whatever that prefix's length: a block left over from an
// earlier pool with another block size must never share an address with a
// new one. Nodes that lost a claim to one another use n to spread over the
// lowest few free blocks instead of all racing for the same next one.
func (l Layout) NthFree(taken []netip.Prefix, n int) (netip.Prefix, bool) {
	var in []netip.Prefix
	for _, p := range taken {
		if p.IsValid() && p.Addr().Is4() == l.pool.Addr().Is4() && p.Overlaps(l.pool) {
			in = append(in, p.Masked())
		}
	}
	slices.SortFunc(in, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
	cand := l.pool.Addr()
	step := l.pool.Addr().BitLen() - l.bits
	next := func() bool {
		nx, ok := addPow2(cand, step)
		if !ok || !l.pool.Contains(nx) {
			return false
		}
		cand = nx
		return true
	}
	i := 0
	for {
		c := netip.PrefixFrom(cand, l.bits)
		// Drop taken prefixes that end before the candidate starts (taken
		// prefixes nest or are disjoint, so one that starts before the
		// candidate without overlapping it lies wholly before it).
		for i < len(in) && !in[i].Overlaps(c) && in[i].Addr().Less(cand) {
			i++
		}
		if i < len(in) && in[i].Overlaps(c) {
			// A taken prefix larger than a block is passed one candidate
			// at a time: at most 2^12 of them, as blocks are small.
			if !next() {
				return netip.Prefix{}, false
			}
			continue
		}
		if n == 0 {
			return c, true
		}
		n--
		if !next() {
			return netip.Prefix{}, false
		}
	}
}

// Offset returns the index of addr inside block (0 for the block's first
// address), and false if addr is not in block.
func Offset(block netip.Prefix, addr netip.Addr) (int, bool) {
	if !block.Contains(addr) {
		return 0, false
	}
	hiA, loA := u128(addr)
	hiB, loB := u128(block.Masked().Addr())
	diffLo, borrow := bits.Sub64(loA, loB, 0)
	if diffHi, _ := bits.Sub64(hiA, hiB, borrow); diffHi != 0 || diffLo > math.MaxInt32 {
		return 0, false
	}
	return int(diffLo), true
}

// Nth returns the address at offset i of block, and false if the block is
// smaller than i+1 addresses.
func Nth(block netip.Prefix, i int) (netip.Addr, bool) {
	size := block.Addr().BitLen() - block.Bits()
	if i < 0 || (size < 63 && uint64(i) >= uint64(1)<<size) {
		return netip.Addr{}, false
	}
	hi, lo := u128(block.Masked().Addr())
	lo, carry := bits.Add64(lo, uint64(i), 0)
	hi += carry
	return fromU128(block.Addr(), hi, lo), true
}

// addPow2 adds 2^n to a, and reports false on overflow of the address space.
func addPow2(a netip.Addr, n int) (netip.Addr, bool) {
	hi, lo := u128(a)
	var addHi, addLo uint64
	if n >= 64 {
		addHi = 1 << (n - 64)
	} else {
		addLo = 1 << n
	}
	lo, carry := bits.Add64(lo, addLo, 0)
	hi, carry = bits.Add64(hi, addHi, carry)
	if carry != 0 || (a.Is4() && (hi != 0 || lo > math.MaxUint32)) {
		return netip.Addr{}, false
	}
	return fromU128(a, hi, lo), true
}

func u128(a netip.Addr) (hi, lo uint64) {
	if a.Is4() {
		b := a.As4()
		return 0, uint64(binary.BigEndian.Uint32(b[:]))
	}
	b := a.As16()
	return binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
}

func fromU128(like netip.Addr, hi, lo uint64) netip.Addr {
	if like.Is4() {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(lo))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], hi)
	binary.BigEndian.PutUint64(b[8:], lo)
	return netip.AddrFrom16(b)
}
