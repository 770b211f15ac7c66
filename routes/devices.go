package routes

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/rhizome-net/rhizome/routes/datapath"
)

// kernelDevices implements Devices with a netlink Handle bound to the
// node's namespace.
type kernelDevices struct {
	h         *netlink.Handle
	vxlanName string
}

// retryDump repeats a netlink dump that raced with a change
// (ErrDumpInterrupted: the result may be inconsistent).
func retryDump[T any](fn func() (T, error)) (T, error) {
	for i := 0; ; i++ {
		v, err := fn()
		if !errors.Is(err, netlink.ErrDumpInterrupted) || i == 9 {
			return v, err
		}
	}
}

func toIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func prefixOf(n *net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

// underlay finds the node's interface and its subnets.
func (d *kernelDevices) underlay(spec DeviceSpec, st *DeviceStatus) (netlink.Link, error) {
	var link netlink.Link
	if spec.Underlay != "" {
		l, err := d.h.LinkByName(spec.Underlay)
		if err != nil {
			return nil, fmt.Errorf("underlay interface %s: %w", spec.Underlay, err)
		}
		link = l
	} else {
		addrs, err := retryDump(func() ([]netlink.Addr, error) { return d.h.AddrList(nil, unix.AF_INET) })
		if err != nil {
			return nil, fmt.Errorf("listing addresses: %w", err)
		}
		for _, a := range addrs {
			if ip, _ := netip.AddrFromSlice(a.IP); ip.Unmap() == spec.Address.Addr() {
				if link, err = d.h.LinkByIndex(a.LinkIndex); err != nil {
					return nil, fmt.Errorf("interface of %s: %w", spec.Address.Addr(), err)
				}
				break
			}
		}
		if link == nil {
			return nil, fmt.Errorf("no interface holds the node address %s", spec.Address.Addr())
		}
	}
	st.UnderlayName, st.UnderlayMTU = link.Attrs().Name, link.Attrs().MTU
	st.Links.Underlay = link.Attrs().Index
	st.Links.Subnet4, st.Links.Subnet6 = spec.Address, spec.Address6
	if !spec.Address.IsValid() || !spec.Address6.IsValid() {
		addrs, err := retryDump(func() ([]netlink.Addr, error) { return d.h.AddrList(link, unix.AF_UNSPEC) })
		if err != nil {
			return link, fmt.Errorf("addresses of %s: %w", st.UnderlayName, err)
		}
		for _, a := range addrs {
			p := prefixOf(a.IPNet)
			if a.Scope != unix.RT_SCOPE_UNIVERSE {
				continue
			}
			if p.Addr().Is4() && !st.Links.Subnet4.IsValid() {
				st.Links.Subnet4 = p
			} else if p.Addr().Is6() && !st.Links.Subnet6.IsValid() {
				st.Links.Subnet6 = p
			}
		}
	}
	return link, nil
}

// Ensure implements Devices.
func (d *kernelDevices) Ensure(spec DeviceSpec) (DeviceStatus, error) {
	var st DeviceStatus
	under, err := d.underlay(spec, &st)
	if err != nil {
		return st, err
	}
	var errs []error
	switch {
	case spec.VXLAN != nil:
		if err := d.ensureVXLAN(spec.VXLAN, under, &st); err != nil {
			errs = append(errs, err)
		}
	case spec.RemoveVXLAN:
		if l, err := d.h.LinkByName(d.vxlanName); err == nil {
			if _, ours := l.(*netlink.Vxlan); ours {
				if err := d.h.LinkDel(l); err != nil {
					errs = append(errs, fmt.Errorf("removing unused %s: %w", l.Attrs().Name, err))
				}
			}
		}
	default:
		if l, err := d.h.LinkByName(d.vxlanName); err == nil {
			if _, ours := l.(*netlink.Vxlan); ours {
				st.Links.VXLAN = l.Attrs().Index
			}
		}
	}
	if spec.IPIP != nil {
		if err := d.ensureIPIP(spec.IPIP, spec.PoolCIDRs, &st); err != nil {
			errs = append(errs, err)
		}
	} else if l, err := d.h.LinkByName(IPIPDevice); err == nil {
		st.Links.IPIP = l.Attrs().Index
		if err := d.dropPoolAddresses(l, netip.Addr{}, spec.PoolCIDRs); err != nil {
			errs = append(errs, err)
		}
	}
	return st, errors.Join(errs...)
}

// ensureVXLAN creates the VXLAN device or corrects it. Attributes the
// kernel cannot change on a live device (VNI, port, local address, parent)
// make us recreate it; the routes through it come back with the pass.
func (d *kernelDevices) ensureVXLAN(spec *VXLANSpec, under netlink.Link, st *DeviceStatus) error {
	local := st.Links.Subnet4.Addr()
	if !local.IsValid() {
		return fmt.Errorf("VXLAN device %s: the node has no IPv4 underlay address", spec.Name)
	}
	mtu := TunnelMTU(st.UnderlayMTU, datapath.OverheadVXLAN, spec.MTU)
	want := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: spec.Name, MTU: mtu, HardwareAddr: spec.MAC},
		VxlanId:      spec.VNI,
		VtepDevIndex: under.Attrs().Index,
		SrcAddr:      local.AsSlice(),
		Port:         spec.Port,
		Learning:     false,
	}
	l, err := d.h.LinkByName(spec.Name)
	if err == nil {
		cur, isVXLAN := l.(*netlink.Vxlan)
		if !isVXLAN {
			return fmt.Errorf("device %s exists and is a %s, not VXLAN: not touching it", spec.Name, l.Type())
		}
		if cur.VxlanId != want.VxlanId || cur.Port != want.Port || !cur.SrcAddr.Equal(want.SrcAddr) ||
			cur.VtepDevIndex != want.VtepDevIndex || cur.Learning {
			if err := d.h.LinkDel(l); err != nil {
				return fmt.Errorf("recreating %s: %w", spec.Name, err)
			}
			l = nil
		}
	} else {
		l = nil
	}
	if l == nil {
		if err := d.h.LinkAdd(want); err != nil {
			return fmt.Errorf("creating VXLAN device %s (VNI %d, port %d): %w", spec.Name, spec.VNI, spec.Port, err)
		}
		if l, err = d.h.LinkByName(spec.Name); err != nil {
			return fmt.Errorf("VXLAN device %s: %w", spec.Name, err)
		}
	}
	if l.Attrs().MTU != mtu {
		if err := d.h.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("setting MTU %d on %s: %w", mtu, spec.Name, err)
		}
	}
	if l.Attrs().HardwareAddr.String() != spec.MAC.String() {
		if err := d.h.LinkSetHardwareAddr(l, spec.MAC); err != nil {
			return fmt.Errorf("setting MAC %s on %s: %w", spec.MAC, spec.Name, err)
		}
	}
	var addr netip.Prefix
	if spec.Address.IsValid() {
		addr = netip.PrefixFrom(spec.Address, 32)
	}
	if err := d.ownAddress(l, addr, true); err != nil {
		return err
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := d.h.LinkSetUp(l); err != nil {
			return fmt.Errorf("bringing %s up: %w", spec.Name, err)
		}
	}
	st.Links.VXLAN = l.Attrs().Index
	st.Devices = append(st.Devices, DeviceInfo{Name: spec.Name, Type: "vxlan", MTU: mtu,
		Address: spec.Address.String(), MAC: spec.MAC.String()})
	return nil
}

// ensureIPIP sets up tunl0, creating it if the ipip module did not. Of
// the addresses on it, those inside the pools other than spec.Address are
// tunnel addresses we gave back: removed.
func (d *kernelDevices) ensureIPIP(spec *IPIPSpec, pools []netip.Prefix, st *DeviceStatus) error {
	l, err := d.h.LinkByName(IPIPDevice)
	if err != nil {
		if err := d.h.LinkAdd(&netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Name: IPIPDevice}}); err != nil {
			return fmt.Errorf("creating %s (is the ipip module available?): %w", IPIPDevice, err)
		}
		if l, err = d.h.LinkByName(IPIPDevice); err != nil {
			return fmt.Errorf("%s: %w", IPIPDevice, err)
		}
	}
	mtu := TunnelMTU(st.UnderlayMTU, datapath.OverheadIPIP, spec.MTU)
	if l.Attrs().MTU != mtu {
		if err := d.h.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("setting MTU %d on %s: %w", mtu, IPIPDevice, err)
		}
	}
	if err := d.dropPoolAddresses(l, spec.Address, pools); err != nil {
		return err
	}
	if spec.Address.IsValid() {
		if err := d.ownAddress(l, netip.PrefixFrom(spec.Address, 32), false); err != nil {
			return err
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := d.h.LinkSetUp(l); err != nil {
			return fmt.Errorf("bringing %s up: %w", IPIPDevice, err)
		}
	}
	st.Links.IPIP = l.Attrs().Index
	st.Devices = append(st.Devices, DeviceInfo{Name: IPIPDevice, Type: "ipip", MTU: mtu, Address: spec.Address.String()})
	return nil
}

// dropPoolAddresses removes from l the IPv4 addresses inside one of the
// pools, except keep.
func (d *kernelDevices) dropPoolAddresses(l netlink.Link, keep netip.Addr, pools []netip.Prefix) error {
	if len(pools) == 0 {
		return nil
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return d.h.AddrList(l, unix.AF_INET) })
	if err != nil {
		return fmt.Errorf("addresses of %s: %w", l.Attrs().Name, err)
	}
	for _, a := range addrs {
		p := prefixOf(a.IPNet)
		if p.Addr() == keep || !slices.ContainsFunc(pools, func(c netip.Prefix) bool { return c.Contains(p.Addr()) }) {
			continue
		}
		if err := d.h.AddrDel(l, &a); err != nil {
			return fmt.Errorf("removing the released tunnel address %s from %s: %w", p, l.Attrs().Name, err)
		}
	}
	return nil
}

// ownAddress puts want on l; with exclusive, other IPv4 addresses go (the
// device is ours). An invalid want (an address the agent does not know at
// the moment) adds nothing and removes nothing.
func (d *kernelDevices) ownAddress(l netlink.Link, want netip.Prefix, exclusive bool) error {
	if !want.IsValid() {
		return nil
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return d.h.AddrList(l, unix.AF_INET) })
	if err != nil {
		return fmt.Errorf("addresses of %s: %w", l.Attrs().Name, err)
	}
	have := false
	for _, a := range addrs {
		p := prefixOf(a.IPNet)
		if p == want {
			have = true
			continue
		}
		if exclusive {
			if err := d.h.AddrDel(l, &a); err != nil {
				return fmt.Errorf("removing %s from %s: %w", p, l.Attrs().Name, err)
			}
		}
	}
	if !have && want.IsValid() {
		if err := d.h.AddrAdd(l, &netlink.Addr{IPNet: toIPNet(want)}); err != nil {
			return fmt.Errorf("adding %s to %s: %w", want, l.Attrs().Name, err)
		}
	}
	return nil
}

// SetVTEPs implements Devices: static ARP entries (VTEP address -> MAC)
// and FDB entries (MAC -> node address) on the VXLAN device, as Calico's
// Felix programs them. The device is ours, so every entry on it that is
// not wanted goes.
func (d *kernelDevices) SetVTEPs(vteps []VTEP) error {
	l, err := d.h.LinkByName(d.vxlanName)
	if err != nil {
		return nil // no device: nothing to program
	}
	return d.setVTEPsOn(l, vteps)
}

func (d *kernelDevices) setVTEPsOn(l netlink.Link, vteps []VTEP) error {
	idx := l.Attrs().Index
	var errs []error
	// Neighbours.
	neighs, err := retryDump(func() ([]netlink.Neigh, error) { return d.h.NeighList(idx, unix.AF_INET) })
	if err != nil {
		return fmt.Errorf("neighbours of %s: %w", l.Attrs().Name, err)
	}
	wantN := map[netip.Addr]string{}
	for _, v := range vteps {
		wantN[v.Address] = v.MAC.String()
	}
	for _, n := range neighs {
		a, _ := netip.AddrFromSlice(n.IP)
		if mac, ok := wantN[a.Unmap()]; ok && n.HardwareAddr.String() == mac && n.State == netlink.NUD_PERMANENT {
			delete(wantN, a.Unmap())
			continue
		}
		if _, ok := wantN[a.Unmap()]; !ok {
			if err := d.h.NeighDel(&n); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("removing neighbour %s: %w", a, err))
			}
		}
	}
	for _, v := range vteps {
		if _, todo := wantN[v.Address]; !todo {
			continue
		}
		n := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
			IP: v.Address.AsSlice(), HardwareAddr: v.MAC}
		if err := d.h.NeighSet(n); err != nil {
			errs = append(errs, fmt.Errorf("neighbour %s -> %s: %w", v.Address, v.MAC, err))
		}
	}
	// FDB: which node (outer destination) each VTEP MAC lives on.
	fdb, err := retryDump(func() ([]netlink.Neigh, error) { return d.h.NeighList(idx, unix.AF_BRIDGE) })
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("FDB of %s: %w", l.Attrs().Name, err))...)
	}
	wantF := map[string]netip.Addr{}
	for _, v := range vteps {
		wantF[v.MAC.String()] = v.NodeIP
	}
	for _, f := range fdb {
		a, _ := netip.AddrFromSlice(f.IP)
		mac := f.HardwareAddr.String()
		if want, ok := wantF[mac]; ok && want == a.Unmap() {
			delete(wantF, mac)
			continue
		}
		if _, ok := wantF[mac]; !ok {
			if err := d.h.NeighDel(&f); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("removing FDB entry %s: %w", mac, err))
			}
		}
	}
	for _, v := range vteps {
		if _, todo := wantF[v.MAC.String()]; !todo {
			continue
		}
		f := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
			Flags: netlink.NTF_SELF, IP: v.NodeIP.AsSlice(), HardwareAddr: v.MAC}
		if err := d.h.NeighSet(f); err != nil {
			errs = append(errs, fmt.Errorf("FDB entry %s -> %s: %w", v.MAC, v.NodeIP, err))
		}
	}
	return errors.Join(errs...)
}

// Resolve implements Devices with a route lookup (like `ip route get`).
func (d *kernelDevices) Resolve(a netip.Addr) ([]NextHop, error) {
	// FIBMatch returns the route the lookup matched, with all its next
	// hops, instead of the one path the kernel's hash picks for this flow.
	rs, err := d.h.RouteGetWithOptions(a.AsSlice(), &netlink.RouteGetOptions{FIBMatch: true})
	if err != nil {
		return nil, fmt.Errorf("no route to %s: %w", a, err)
	}
	if len(rs) == 0 {
		return nil, fmt.Errorf("no route to %s", a)
	}
	rt := rs[0]
	if slices.Contains([]int{unix.RTN_LOCAL, unix.RTN_BLACKHOLE, unix.RTN_UNREACHABLE, unix.RTN_PROHIBIT}, rt.Type) {
		return nil, fmt.Errorf("%s is not reachable through a gateway (route type %d)", a, rt.Type)
	}
	hop := func(link int, gw net.IP) NextHop {
		nh := NextHop{Gateway: a, LinkIndex: link}
		if g, ok := netip.AddrFromSlice(gw); ok && g.IsValid() && !g.IsUnspecified() {
			nh.Gateway = g.Unmap()
		}
		return nh
	}
	var out []NextHop
	for _, p := range rt.MultiPath {
		if p.LinkIndex != 0 && p.Flags&unix.RTNH_F_DEAD == 0 && p.Flags&unix.RTNH_F_LINKDOWN == 0 {
			out = append(out, hop(p.LinkIndex, p.Gw))
		}
	}
	if len(rt.MultiPath) == 0 && rt.LinkIndex != 0 {
		out = append(out, hop(rt.LinkIndex, rt.Gw))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no usable route to %s", a)
	}
	return out, nil
}
