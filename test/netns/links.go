package netns

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Veth creates a veth pair with one end, aName, in a and the other, bName,
// in b, and brings both up. Deleting either namespace removes the pair.
func Veth(a *NS, aName string, b *NS, bName string) error {
	ha, err := a.Handle()
	if err != nil {
		return err
	}
	defer ha.Close()
	bfd, err := netns.GetFromPath(b.Path())
	if err != nil {
		return err
	}
	defer bfd.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: aName},
		PeerName:      bName,
		PeerNamespace: netlink.NsFd(bfd),
	}
	if err := ha.LinkAdd(veth); err != nil {
		return fmt.Errorf("creating veth %s (%s) - %s (%s): %w", aName, a.Name, bName, b.Name, err)
	}
	if err := LinkUp(a, aName); err != nil {
		return err
	}
	return LinkUp(b, bName)
}

// Bridge creates a bridge in n and brings it up.
func Bridge(n *NS, name string) error {
	h, err := n.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := h.LinkAdd(br); err != nil {
		return fmt.Errorf("creating bridge %s in %s: %w", name, n.Name, err)
	}
	return h.LinkSetUp(br)
}

// SetMaster enslaves dev to the bridge br, both in n.
func SetMaster(n *NS, dev, br string) error {
	h, err := n.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", dev, n.Name, err)
	}
	m, err := h.LinkByName(br)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", br, n.Name, err)
	}
	if err := h.LinkSetMaster(l, m); err != nil {
		return fmt.Errorf("adding %s to bridge %s in %s: %w", dev, br, n.Name, err)
	}
	return nil
}

// LinkUp brings dev up in n.
func LinkUp(n *NS, dev string) error {
	h, err := n.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", dev, n.Name, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("bringing %s up in %s: %w", dev, n.Name, err)
	}
	return nil
}

// LinkDown sets dev down in n.
func LinkDown(n *NS, dev string) error {
	h, err := n.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", dev, n.Name, err)
	}
	if err := h.LinkSetDown(l); err != nil {
		return fmt.Errorf("setting %s down in %s: %w", dev, n.Name, err)
	}
	return nil
}

// AddAddr adds an address with prefix length, e.g. 10.0.0.1/24, to dev in n.
// IPv6 addresses skip duplicate address detection so they work at once.
func AddAddr(n *NS, dev string, addr netip.Prefix) error {
	h, err := n.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", dev, n.Name, err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), addr.Addr().BitLen())}}
	if addr.Addr().Is6() {
		a.Flags = 0x80 // IFA_F_NODAD
	}
	if err := h.AddrAdd(l, a); err != nil {
		return fmt.Errorf("adding %s to %s in %s: %w", addr, dev, n.Name, err)
	}
	return nil
}

// AddRoute adds a route to dst via gw (which must be directly reachable) in n.
func AddRoute(n *NS, dst netip.Prefix, gw netip.Addr) error {
	h, err := n.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	r := &netlink.Route{
		Dst: &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())},
		Gw:  gw.AsSlice(),
	}
	if err := h.RouteAdd(r); err != nil {
		return fmt.Errorf("adding route %s via %s in %s: %w", dst, gw, n.Name, err)
	}
	return nil
}

// Sysctl writes a sysctl inside n, e.g. ("net.ipv4.ip_forward", "1").
func Sysctl(n *NS, key, value string) error {
	_, err := n.Exec(context.Background(), "sysctl", "-qw", key+"="+value)
	return err
}
