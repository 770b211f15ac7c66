package bgp

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
)

// SetImportCheck implements Speaker through the import check that
// Rhizome's copy of GoBGP adds (third_party/gobgp.patch): GoBGP applies it
// after its own import policy, on its server goroutine, to every announced
// path, and a refused path stays in the peer's Adj-RIB-In without entering
// the global RIB, so a route reflector never passes it on. The re-check
// runs on that goroutine too, so no path can be judged by the old check
// after the new one is in place; GoBGP imports again only the paths whose
// verdict changed.
func (s *GoBGP) SetImportCheck(ctx context.Context, check ImportCheck, recheck []netip.Prefix, all bool) error {
	defer s.changed() // the session listing may differ (gobgp_peers.go)
	srv, err := s.server()
	if err != nil {
		return err
	}
	var nlris []bgp.AddrPrefixInterface
	if !all {
		nlris = make([]bgp.AddrPrefixInterface, 0, len(recheck))
		for _, p := range recheck {
			if p.Addr().Is4() {
				nlris = append(nlris, bgp.NewIPAddrPrefix(uint8(p.Bits()), p.Addr().String()))
			} else {
				nlris = append(nlris, bgp.NewIPv6AddrPrefix(uint8(p.Bits()), p.Addr().String()))
			}
		}
	}
	var c func(net.IP, bgp.AddrPrefixInterface, net.IP, net.IP) bool
	if check != nil {
		c = func(peer net.IP, nlri bgp.AddrPrefixInterface, nh, orig net.IP) bool {
			pfx, err := nlriPrefix(nlri)
			if err != nil {
				return false
			}
			return check(ipAddr(peer), pfx, ipAddr(nh), ipAddr(orig))
		}
	}
	if err := srv.SetImportCheck(ctx, c, nlris, all); err != nil {
		return fmt.Errorf("setting the import check: %w", err)
	}
	return nil
}

// ipAddr converts a GoBGP address (nil: none) to an unmapped netip.Addr.
func ipAddr(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}
