package topology

import (
	"net/netip"
	"slices"
	"time"

	"github.com/rhizome-net/rhizome/bgp/policy"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// The default prefix limit of the sessions between nodes (mesh and route
// reflection). A node announces its blocks, host routes of the addresses
// its pods borrowed from other nodes' blocks, and the Service ranges; a
// reflector passes on the same of every node, one path per prefix. So no
// session between nodes can carry more than every block of the pools,
// every address of the pools as a host route and every Service range, per
// family, whatever the cluster does: a limit of that many never closes a
// healthy session, and stops a node that leaks a table (an Internet feed,
// a misconfigured or hostile speaker at a node's address) before it fills
// every agent's memory with paths that the import policy would reject
// anyway but keeps (docs/design/0014).
const (
	// NodeMaxPrefixCap bounds the derived limit. Large pools (an IPv4 /12,
	// any IPv6 /64) allow more than any cluster can use: Kubernetes
	// supports up to 150,000 pods, each with at most one host route, and
	// blocks are fewer than pods plus a few empty ones per node. 200,000
	// stays above that and well below a full IPv4 table (~1,000,000).
	NodeMaxPrefixCap = 200_000
	// NodeMaxPrefixFloor is the least limit: a family with tiny pools, or
	// none, still takes a pool or a Service range created a moment before
	// this node's agent sees it.
	NodeMaxPrefixFloor = 256
	// NodeMaxPrefixRestart is how long a session between nodes closed for
	// its limit stays down before it is tried again: long enough that a
	// leaking node does not flood every agent over and over, short enough
	// that a node that was fixed is back within a minute.
	NodeMaxPrefixRestart = time.Minute
)

// NodePrefixLimits returns the default prefix limit of the sessions
// between nodes for IPv4 ([0]) and IPv6 ([1]): per family, every block of
// every pool, every address of every pool (host routes), every block
// outside all pools that IPAM holds (a deleted pool's leftovers, still
// announced) with its addresses, and every Service range, capped at
// NodeMaxPrefixCap and at least NodeMaxPrefixFloor. owners may be nil.
func NodePrefixLimits(pools []policy.Pool, owners *policy.Owners, services []netip.Prefix) [2]uint32 {
	var sum [2]uint64
	add := func(a netip.Addr, n uint64) {
		f := 0
		if a.Is6() {
			f = 1
		}
		sum[f] = min(sum[f]+n, NodeMaxPrefixCap)
	}
	for _, p := range pools {
		bits, plen := p.CIDR.Addr().BitLen(), p.CIDR.Bits()
		add(p.CIDR.Addr(), pow2(bits-plen))
		blocks := uint64(1) // a block size the pool cannot have: the pool itself
		if p.BlockBits >= plen && p.BlockBits <= bits {
			blocks = pow2(p.BlockBits - plen)
		}
		add(p.CIDR.Addr(), blocks)
	}
	owners.EachBlock(func(b netip.Prefix) {
		if slices.ContainsFunc(pools, func(p policy.Pool) bool { return policy.Within(b, p.CIDR) }) {
			return
		}
		add(b.Addr(), 1+pow2(b.Addr().BitLen()-b.Bits()))
	})
	for _, s := range services {
		add(s.Addr(), 1)
	}
	var out [2]uint32
	for f := range sum {
		out[f] = uint32(max(sum[f], NodeMaxPrefixFloor))
	}
	return out
}

// pow2 is 2^n, saturating above the cap so that an IPv6 pool's 2^64
// addresses never overflow.
func pow2(n int) uint64 {
	if n < 0 {
		return 0
	}
	if n >= 40 {
		return 1 << 40
	}
	return 1 << n
}

// ApplyNodePrefixLimits gives every session to another node (mesh and
// route reflection) the default prefix limit of its family, unless its
// BGPPeer sets maxPrefix, and the retry after the limit closed it.
func ApplyNodePrefixLimits(d *Desired, limits [2]uint32) {
	for i := range d.Sessions {
		s := &d.Sessions[i]
		if s.Kind == v1alpha1.SessionExternal {
			continue
		}
		if !s.MaxPrefixFromPeer {
			f := 0
			if s.Peer.Address.Is6() {
				f = 1
			}
			s.Peer.MaxPrefixes = limits[f]
		}
		s.Peer.MaxPrefixRestart = NodeMaxPrefixRestart
	}
}

// ServiceRanges are the Service ranges of every BGPConfiguration (any node
// may advertise those of its own), each once; unparseable ones are left
// out (MergeConfig reports them).
func ServiceRanges(configs []*v1alpha1.BGPConfiguration) []netip.Prefix {
	var out []netip.Prefix
	for _, c := range configs {
		for _, l := range [][]v1alpha1.ServiceIPBlock{c.Spec.ServiceClusterIPs, c.Spec.ServiceExternalIPs, c.Spec.ServiceLoadBalancerIPs} {
			for _, b := range l {
				if p, err := netip.ParsePrefix(b.CIDR); err == nil && p == p.Masked() {
					out = append(out, p)
				}
			}
		}
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out)
}
