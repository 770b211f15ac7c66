package rib

import (
	"net/netip"
	"slices"

	"github.com/rhizome-net/rhizome/bgp"
)

// defaultLocalPref applies to paths without LOCAL_PREF (eBGP paths).
const defaultLocalPref = 100

// rankKeys are the steps of the BGP decision process that Rhizome uses, in
// order, for the parts that do not depend on MED (RFC 4271 9.1.2.2, with
// RFC 9494's rule that LLGR-stale paths come last). The IGP cost to the
// next hop and the router-ID tie-break are left out on purpose: every path
// still tied after these steps is used (ECMP).
type rankKeys struct {
	llgrStale bool
	localPref uint32
	asPathLen int
	origin    uint8
	ibgp      bool
}

func keysOf(c *path) rankKeys {
	a := c.attrs
	k := rankKeys{
		llgrStale: a.HasCommunity(bgp.CommunityLLGRStale),
		localPref: defaultLocalPref,
		asPathLen: a.ASPathLen,
		origin:    a.Origin,
		ibgp:      !c.peer.info.EBGP,
	}
	if a.HasLocalPref {
		k.localPref = a.LocalPref
	}
	return k
}

// compareKeys returns <0 when a is preferred over b.
func compareKeys(a, b rankKeys) int {
	switch {
	case a.llgrStale != b.llgrStale:
		return boolCmp(a.llgrStale, b.llgrStale)
	case a.localPref != b.localPref:
		if a.localPref > b.localPref {
			return -1
		}
		return 1
	case a.asPathLen != b.asPathLen:
		return a.asPathLen - b.asPathLen
	case a.origin != b.origin:
		return int(a.origin) - int(b.origin)
	case a.ibgp != b.ibgp:
		return boolCmp(a.ibgp, b.ibgp)
	}
	return 0
}

// boolCmp orders false before true.
func boolCmp(a, b bool) int {
	if a == b {
		return 0
	}
	if a {
		return 1
	}
	return -1
}

// selectPaths returns the next hops of the best accepted paths: those tied
// on every rank key, then, among paths from the same neighbouring AS, those
// with the lowest MED (MED is only comparable within one neighbouring AS).
// The result is sorted and without duplicates; scratch is reused.
func selectPaths(paths []path, scratch []netip.Addr) []netip.Addr {
	out := scratch[:0]
	n, first := 0, -1
	for i := range paths {
		if paths[i].accepted() {
			n++
			if first < 0 {
				first = i
			}
		}
	}
	switch n {
	case 0:
		return out
	case 1:
		return append(out, paths[first].nh)
	}
	best := keysOf(&paths[first])
	for i := range paths {
		if c := &paths[i]; c.accepted() {
			if k := keysOf(c); compareKeys(k, best) < 0 {
				best = k
			}
		}
	}
	tied := func(c *path) bool { return c.accepted() && compareKeys(keysOf(c), best) == 0 }
	// Lowest MED per neighbouring AS among the tied paths.
	type asMED struct {
		as  uint32
		med uint32
	}
	var meds []asMED
	medOf := func(c *path) uint32 {
		if c.attrs.HasMED {
			return c.attrs.MED
		}
		return 0
	}
	for i := range paths {
		c := &paths[i]
		if !tied(c) {
			continue
		}
		as, m := c.attrs.NeighborAS(), medOf(c)
		j := slices.IndexFunc(meds, func(x asMED) bool { return x.as == as })
		if j < 0 {
			meds = append(meds, asMED{as, m})
		} else if m < meds[j].med {
			meds[j].med = m
		}
	}
	for i := range paths {
		c := &paths[i]
		if !tied(c) {
			continue
		}
		as, m := c.attrs.NeighborAS(), medOf(c)
		j := slices.IndexFunc(meds, func(x asMED) bool { return x.as == as })
		if m == meds[j].med {
			out = append(out, c.nh)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}
