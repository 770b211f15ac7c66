// Package datapath holds the facts of Rhizome's kernel data path that
// programs other than the route programmer need: the encapsulation
// overheads that decide the pod MTU, and the nftables table that holds
// natOutgoing. It imports nothing, so that rhizomectl's doctor checks the
// data path with the route programmer's own numbers without linking it.
package datapath

// Encapsulation overheads in bytes, subtracted from the underlay MTU.
const (
	OverheadIPIP   = 20 // outer IPv4 header
	OverheadVXLAN  = 50 // outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14)
	OverheadVXLAN6 = 70 // the same with an outer IPv6 header (40)
)

// NATTable is the nftables table (family inet) that holds natOutgoing. It
// is Rhizome's alone; no other table is ever read or written.
const NATTable = "rhizome-nat"
