package topology

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/bgp/policy"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// Local is what this node's IPAM view holds: its affine blocks and the
// addresses its pods borrowed from other nodes' blocks; and what every node
// may originate (Owners: every block's node, every borrowed address's),
// against which the routes from our nodes are judged. Nil Owners: nothing
// from our nodes is accepted (held until the IPAM view is known).
type Local struct {
	Blocks   []netip.Prefix
	Borrowed []netip.Addr
	Owners   *policy.Owners
}

// Pools converts IPPools for the policy and the advertisements; a pool with
// an unparseable CIDR is reported and left out.
func Pools(in []*v1alpha1.IPPool) ([]policy.Pool, []string) {
	var out []policy.Pool
	var problems []string
	for _, p := range in {
		cidr, err := netip.ParsePrefix(p.Spec.CIDR)
		if err != nil || cidr != cidr.Masked() {
			problems = append(problems, fmt.Sprintf("IPPool %s: cidr %q is not a network prefix; ignored", p.Name, p.Spec.CIDR))
			continue
		}
		bits := v1alpha1.DefaultBlockSizeIPv4
		if cidr.Addr().Is6() {
			bits = v1alpha1.DefaultBlockSizeIPv6
		}
		if p.Spec.BlockSize != nil {
			bits = int(*p.Spec.BlockSize)
		}
		out = append(out, policy.Pool{
			Name:             p.Name,
			CIDR:             cidr,
			DisableBGPExport: p.Spec.DisableBGPExport,
			BlockBits:        bits,
		})
	}
	slices.SortFunc(out, func(a, b policy.Pool) int { return comparePrefix(a.CIDR, b.CIDR) })
	return out, problems
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// poolOf returns the most specific pool holding p.
func poolOf(pools []policy.Pool, p netip.Prefix) *policy.Pool {
	var best *policy.Pool
	for i := range pools {
		if policy.Within(p, pools[i].CIDR) && (best == nil || pools[i].CIDR.Bits() > best.CIDR.Bits()) {
			best = &pools[i]
		}
	}
	return best
}

// Advertisements returns the routes this node originates, sorted: its
// blocks and borrowed addresses (host routes) unless their pool has
// disableBGPExport, and the Service ranges, each with the configured
// communities.
func Advertisements(d *Desired, pools []policy.Pool, local Local) []bgp.Advertisement {
	var prefixes []netip.Prefix
	for _, b := range local.Blocks {
		if pl := poolOf(pools, b); pl == nil || !pl.DisableBGPExport {
			prefixes = append(prefixes, b.Masked())
		}
	}
	for _, a := range local.Borrowed {
		h := netip.PrefixFrom(a, a.BitLen())
		if pl := poolOf(pools, h); pl == nil || !pl.DisableBGPExport {
			prefixes = append(prefixes, h)
		}
	}
	prefixes = append(prefixes, d.Config.Services...)
	slices.SortFunc(prefixes, comparePrefix)
	prefixes = slices.Compact(prefixes)
	out := make([]bgp.Advertisement, 0, len(prefixes))
	for _, p := range prefixes {
		a := bgp.Advertisement{
			Prefix:           p,
			Communities:      slices.Clone(d.Config.Communities),
			LargeCommunities: slices.Clone(d.Config.LargeCommunities),
		}
		for _, pc := range d.Config.PrefixCommunities {
			if policy.Within(p, pc.CIDR) {
				a.Communities = append(a.Communities, pc.Communities...)
				a.LargeCommunities = append(a.LargeCommunities, pc.LargeCommunities...)
			}
		}
		slices.Sort(a.Communities)
		a.Communities = slices.Compact(a.Communities)
		slices.SortFunc(a.LargeCommunities, func(x, y bgp.LargeCommunity) int {
			if x.Global != y.Global {
				return int(int64(x.Global) - int64(y.Global))
			}
			if x.Local1 != y.Local1 {
				return int(int64(x.Local1) - int64(y.Local1))
			}
			return int(int64(x.Local2) - int64(y.Local2))
		})
		a.LargeCommunities = slices.Compact(a.LargeCommunities)
		out = append(out, a)
	}
	return out
}

// ImportPolicy builds the import policy for this node's sessions.
func ImportPolicy(d *Desired, pools []policy.Pool, local Local) *policy.Import {
	in := policy.Input{
		Pools:     pools,
		Services:  d.Config.Services,
		OwnBlocks: local.Blocks,
		Owners:    local.Owners,
		Nodes:     d.Nodes,
		Peers:     make(map[netip.Addr]policy.PeerPolicy),
	}
	for _, a := range []netip.Addr{d.NodeIPv4, d.NodeIPv6, d.Global.RouterID} {
		if a.IsValid() && !slices.Contains(in.OwnAddresses, a) {
			in.OwnAddresses = append(in.OwnAddresses, a)
		}
	}
	for _, s := range d.Sessions {
		if s.NotStarted != "" {
			continue
		}
		pp := policy.PeerPolicy{Internal: s.Kind != v1alpha1.SessionExternal, Rules: s.Import}
		if pp.Internal {
			pp.Node, pp.Reflector = s.Node, s.Reflector
		}
		in.Peers[s.Peer.Address] = pp
	}
	return policy.Compile(in)
}

// ExportPolicy builds the speaker's export policy: per session, the
// advertised prefixes its export filters reject; on a route reflector, the
// pool and Service ranges reflected to every peer but the external ones.
func ExportPolicy(d *Desired, pools []policy.Pool, ads []bgp.Advertisement) bgp.ExportPolicy {
	var ex bgp.ExportPolicy
	reflects := false // a reflector with at least one node session
	for _, s := range d.Sessions {
		// An external session is listed even when it is not started: if
		// the speaker still has it from before, it must not get reflected
		// routes until it is removed.
		if s.Kind == v1alpha1.SessionExternal {
			ex.NoReflect = append(ex.NoReflect, s.Peer.Address)
		}
		if s.NotStarted != "" {
			continue
		}
		if s.Kind != v1alpha1.SessionExternal && d.RouteReflector() {
			reflects = true
		}
		if len(s.Export) > 0 {
			for _, a := range ads {
				if policy.First(s.Export, a.Prefix) == policy.Reject {
					if ex.Deny == nil {
						ex.Deny = make(map[netip.Addr][]netip.Prefix)
					}
					ex.Deny[s.Peer.Address] = append(ex.Deny[s.Peer.Address], a.Prefix)
				}
			}
		}
	}
	if !reflects {
		ex.NoReflect = nil
	} else {
		for _, p := range pools {
			ex.Reflect = append(ex.Reflect, p.CIDR)
		}
		ex.Reflect = append(ex.Reflect, d.Config.Services...)
	}
	return ex
}
