package main

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// The address plan of a run, shared by the harness (which writes it into
// the API server and the reflector's configuration) and the clients tool
// (which speaks it):
//
//	rzr<pid>-rr  reflector  rr0 172.30.0.2/30 ==veth== cl0 172.30.0.1/30  clients  rzr<pid>-cl
//	             route 172.20.0.0/16 via 172.30.0.1        + 172.20.0.1 ... 172.20.x.y /32, one per client
//
// The reflector reaches every client through one gateway, as a reflector
// reaches its clients through the fabric: it has one neighbour entry, not N.
// Client i has address 172.20.0.0+1+i, router ID the same, and block
// 10.0.0.0+64i/26 of the pool 10.0.0.0/12; one client in borrowEvery has
// also borrowed the last address of the next client's block (a /32 it
// announces as well, as a node whose pod holds an address of another
// node's block does).
const (
	rrAddr      = "172.30.0.2"
	gwAddr      = "172.30.0.1"
	linkBits    = 30
	clientNet   = "172.20.0.0/16"
	poolCIDR    = "10.0.0.0/12"
	blockBits   = 26
	asn         = 64512
	clusterID   = "224.0.0.1"
	borrowEvery = 20
	rrNode      = "rr"
	maxClients  = 16000 // fits in the /16 and in the pool's 16384 blocks
)

// clientAddr is client i's address.
func clientAddr(i int) netip.Addr {
	b := netip.MustParsePrefix(clientNet).Addr().As4()
	v := binary.BigEndian.Uint32(b[:]) + uint32(i) + 1
	return netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, v)))
}

// clientName is client i's Node name.
func clientName(i int) string { return fmt.Sprintf("c-%05d", i) }

// block is client i's block.
func block(i int) netip.Prefix {
	b := netip.MustParsePrefix(poolCIDR).Addr().As4()
	v := binary.BigEndian.Uint32(b[:]) + uint32(i)<<(32-blockBits)
	return netip.PrefixFrom(netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, v))), blockBits)
}

// borrowed returns the address client i borrowed, if it is a borrower: the
// last address of the next client's block.
func borrowed(i, n int) (netip.Addr, bool) {
	if n < 2 || i%borrowEvery != 0 {
		return netip.Addr{}, false
	}
	b := block((i + 1) % n)
	a := b.Addr().As4()
	v := binary.BigEndian.Uint32(a[:]) + 1<<(32-blockBits) - 1
	return netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, v))), true
}

// announced is what client i announces.
func announced(i, n int) []netip.Prefix {
	out := []netip.Prefix{block(i)}
	if a, ok := borrowed(i, n); ok {
		out = append(out, netip.PrefixFrom(a, 32))
	}
	return out
}
