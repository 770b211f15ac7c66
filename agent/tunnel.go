package agent

import (
	"context"
	"net/netip"
	"slices"
	"strings"

	"github.com/rhizome-net/rhizome/ipam"
)

// tunnelKind names a tunnel device that gets an address of our blocks.
type tunnelKind string

const (
	tunnelVXLAN tunnelKind = "vxlan"
	tunnelIPIP  tunnelKind = "ipip"
)

// tunnelHandlePrefix starts the IPAM handles of tunnel addresses; CNI
// garbage collection never touches them.
const tunnelHandlePrefix = ipam.TunnelHandlePrefix

type tunnelState struct {
	// addrs holds the address of each tunnel kind; a kind is present once
	// this run has looked for what a previous run held.
	addrs map[tunnelKind]netip.Addr
	// checked records that an unneeded tunnel's handle was released once
	// in this run (a previous run may have held it).
	checked map[tunnelKind]bool
}

func (a *agent) tunnelHandle(k tunnelKind) string {
	return tunnelHandlePrefix + string(k) + "." + a.cfg.NodeName
}

// asks reports whether pool p asks for tunnel k.
func asks(p ipam.Pool, k tunnelKind) bool {
	vx, ipip := usesEncap([]ipam.Pool{p})
	return (k == tunnelVXLAN && vx) || (k == tunnelIPIP && ipip)
}

// tunnelNeed is what a node does with the address of one tunnel kind.
type tunnelNeed int

const (
	// tunnelRelease: no pool needs the tunnel here; give the address back.
	tunnelRelease tunnelNeed = iota
	// tunnelKeep: only pools that take no new addresses (disabled or being
	// deleted) ask for the tunnel, and pods of this node still hold
	// addresses of them: keep the address held, allocate none.
	tunnelKeep
	// tunnelHold: an allocatable pool asks for the tunnel; hold an address
	// of an allocatable pool.
	tunnelHold
)

// tunnelNeedFor decides, as Calico's node agent does for its tunnel
// addresses, from the pools that ask for tunnel k. Only pools that take new
// addresses (enabled, not being deleted) make a node hold one; a disabled
// or deleted pool keeps the address only while this node's pods use the
// pool (podsIn is asked only then: it walks the node's allocations). So
// disabling every pool once the pods are gone brings each pool's
// addressesInUse to 0, which the admission policy requires before a pool
// may be deleted (docs/install.md, Uninstall), and a pool that is drained
// for a migration lets go of the tunnel addresses in it.
func tunnelNeedFor(pools []ipam.Pool, k tunnelKind, podsIn func([]netip.Prefix) bool) tunnelNeed {
	var draining []netip.Prefix
	for _, p := range pools {
		if !asks(p, k) {
			continue
		}
		if p.Allocatable {
			return tunnelHold
		}
		draining = append(draining, p.CIDR)
	}
	if len(draining) > 0 && podsIn(draining) {
		return tunnelKeep
	}
	return tunnelRelease
}

// podsHoldAddressesIn reports whether a pod of this node (any handle but
// the tunnels') holds an address inside one of the prefixes.
func (a *agent) podsHoldAddressesIn(prefixes []netip.Prefix) bool {
	for _, h := range a.ipam.Handles() {
		if strings.HasPrefix(h, tunnelHandlePrefix) {
			continue
		}
		for _, addr := range a.ipam.HandleAddresses(h) {
			for _, p := range prefixes {
				if p.Contains(addr) {
					return true
				}
			}
		}
	}
	return false
}

// inAllocatablePool reports whether addr belongs to a pool that takes new
// addresses.
func inAllocatablePool(pools []ipam.Pool, addr netip.Addr) bool {
	for _, p := range pools {
		if p.Allocatable && p.CIDR.Contains(addr) {
			return true
		}
	}
	return false
}

// tunnelAddress returns the address of a tunnel device, allocated from this
// node's blocks (as Calico does), following tunnelNeedFor. An address held
// in a pool that no longer takes new addresses while an allocatable pool
// asks for the tunnel moves to an allocatable pool (released, then
// allocated again), so that the old pool can drain. The address is the
// VTEP address other nodes route through (VXLAN) and the source of traffic
// the node itself sends into the tunnel. changed reports an allocation or
// release.
func (a *agent) tunnelAddress(ctx context.Context, k tunnelKind, pools []ipam.Pool) (addr netip.Addr, changed bool) {
	a.tunnelMu.Lock()
	defer a.tunnelMu.Unlock()
	if a.tunnel.addrs == nil {
		a.tunnel.addrs = map[tunnelKind]netip.Addr{}
		a.tunnel.checked = map[tunnelKind]bool{}
	}
	handle := a.tunnelHandle(k)
	held := a.ipam.HandleAddresses(handle)
	have, known := a.tunnel.addrs[k]
	switch {
	case !known:
		// What a previous run held (the allocation is by handle).
		if len(held) > 0 {
			have = held[0]
		}
		a.tunnel.addrs[k] = have
	case have.IsValid() && !slices.Contains(held, have):
		// Released behind the agent's back (a forced rhizomectl ipam
		// release, a restore from backup): the address may go to a pod
		// while the tunnel device still holds it. Take one again if
		// needed.
		a.log.Warn("the tunnel address is no longer allocated to this node", "op", "tunnel", "tunnel", string(k), "address", have.String())
		have = netip.Addr{}
		a.tunnel.addrs[k] = have
	}
	switch tunnelNeedFor(pools, k, a.podsHoldAddressesIn) {
	case tunnelHold:
		if have.IsValid() && inAllocatablePool(pools, have) {
			return have, false
		}
		if have.IsValid() {
			if err := a.ipam.Release(ctx, handle); err != nil {
				a.log.Warn("moving a tunnel address out of a pool that takes no new addresses", "op", "tunnel", "tunnel", string(k), "address", have.String(), "error", err)
				return have, false
			}
			a.log.Info("tunnel address released: its pool is disabled or deleted, another pool asks for the tunnel", "op", "tunnel", "tunnel", string(k), "address", have.String())
			a.tunnel.addrs[k] = netip.Addr{}
			changed = true
		}
		res, err := a.ipam.Allocate(ctx, ipam.Request{Handle: handle, Families: []int{4}})
		if err != nil || len(res.Addresses) == 0 {
			a.log.Warn("allocating a tunnel address", "op", "tunnel", "tunnel", string(k), "error", err)
			return netip.Addr{}, changed
		}
		a.tunnel.addrs[k] = res.Addresses[0].Addr
		a.log.Info("tunnel address allocated", "op", "tunnel", "tunnel", string(k), "address", res.Addresses[0].Addr.String())
		return res.Addresses[0].Addr, true
	case tunnelKeep:
		return have, false
	}
	if !have.IsValid() && a.tunnel.checked[k] {
		return netip.Addr{}, false
	}
	if err := a.ipam.Release(ctx, handle); err != nil {
		a.log.Warn("releasing a tunnel address", "op", "tunnel", "tunnel", string(k), "error", err)
		return have, false
	}
	if have.IsValid() {
		a.log.Info("tunnel address released: no pool that takes new addresses asks for the tunnel", "op", "tunnel", "tunnel", string(k), "address", have.String())
	}
	a.tunnel.addrs[k] = netip.Addr{}
	a.tunnel.checked[k] = true
	return netip.Addr{}, true
}
