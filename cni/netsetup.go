package cni

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The pod's gateways. They exist on no interface: the host side of the veth
// answers for them (proxy ARP, proxy NDP) and the pod also gets permanent
// neighbour entries for them, so the pod reaches its node whatever routes the
// node has. Calico uses the same addresses.
var (
	GatewayV4 = netip.MustParseAddr("169.254.1.1")
	GatewayV6 = netip.MustParseAddr("fe80::1")
)

// HostRouteProtocol marks the per-pod host routes the plugin installs
// (RTPROT_STATIC). The agent's route programmer only manages routes of its
// own protocol (114 by default), so it never touches these; they go away with
// the pod's veth.
const HostRouteProtocol = unix.RTPROT_STATIC

// podNetwork is what setupPod built.
type podNetwork struct {
	host, cont *current.Interface
	contIndex  int
}

// podInterfaceExists reports whether the pod's namespace has an interface
// named ifName.
func podInterfaceExists(netnsPath, ifName string) (bool, error) {
	podNS, err := ns.GetNS(netnsPath)
	if err != nil {
		return false, fmt.Errorf("opening the pod's network namespace %s: %w", netnsPath, err)
	}
	defer podNS.Close()
	exists := false
	err = podNS.Do(func(ns.NetNS) error {
		_, err := netlink.LinkByName(ifName)
		var nf netlink.LinkNotFoundError
		switch {
		case err == nil:
			exists = true
		case !errors.As(err, &nf):
			return fmt.Errorf("looking for %s in the pod: %w", ifName, err)
		}
		return nil
	})
	return exists, err
}

// setupPod creates the veth pair and configures both ends; created reports
// whether the pair was made (so that a failure removes only that). An
// interface ifName already in the pod is an error: ADD checks for it first,
// and one appearing meanwhile is not ours to take over. It runs in the host
// namespace and enters the pod's namespace only through ns.Do.
func setupPod(netnsPath, ifName, hostVeth string, mtu int, addrs []netip.Prefix) (_ *podNetwork, created bool, _ error) {
	podNS, err := ns.GetNS(netnsPath)
	if err != nil {
		return nil, false, fmt.Errorf("opening the pod's network namespace %s: %w", netnsPath, err)
	}
	defer podNS.Close()
	hostNS, err := ns.GetCurrentNS()
	if err != nil {
		return nil, false, err
	}
	defer hostNS.Close()

	if err := removeStaleHostVeth(podNS, ifName, hostVeth); err != nil {
		return nil, false, err
	}
	var hostIf, contIf net.Interface
	err = podNS.Do(func(ns.NetNS) error {
		if _, err := netlink.LinkByName(ifName); err == nil {
			return fmt.Errorf("interface %s already exists in the pod", ifName)
		}
		var err error
		hostIf, contIf, err = createVeth(ifName, hostVeth, mtu, hostNS)
		return err
	})
	if err != nil {
		return nil, false, err
	}
	if err := configureHostSide(hostVeth, addrs); err != nil {
		return nil, true, err
	}
	hostMAC := hostIf.HardwareAddr
	if err := podNS.Do(func(ns.NetNS) error { return configurePodSide(ifName, hostMAC, addrs) }); err != nil {
		return nil, true, err
	}
	return &podNetwork{
		host:      &current.Interface{Name: hostVeth, Mac: hostIf.HardwareAddr.String()},
		cont:      &current.Interface{Name: ifName, Mac: contIf.HardwareAddr.String(), Sandbox: netnsPath},
		contIndex: contIf.Index,
	}, true, nil
}

// removeStaleHostVeth deletes a host interface with our name that is not
// paired with ifName in this pod's namespace: it belongs to an earlier
// sandbox of the same pod that was never torn down.
func removeStaleHostVeth(podNS ns.NetNS, ifName, hostVeth string) error {
	hl, err := netlink.LinkByName(hostVeth)
	if err != nil {
		return nil // no such link: nothing stale
	}
	peerIndex := -1
	_ = podNS.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(ifName)
		if err != nil {
			return nil
		}
		if v, ok := l.(*netlink.Veth); ok {
			if idx, err := netlink.VethPeerIndex(v); err == nil {
				peerIndex = idx
			}
		}
		return nil
	})
	if peerIndex == hl.Attrs().Index {
		return nil // the pair is this attachment's own
	}
	if _, ok := hl.(*netlink.Veth); !ok {
		return fmt.Errorf("host interface %s exists and is not a veth (%s); refusing to touch it", hostVeth, hl.Type())
	}
	if err := netlink.LinkDel(hl); err != nil {
		return fmt.Errorf("removing stale host veth %s of an earlier sandbox: %w", hostVeth, err)
	}
	return nil
}

// createVeth runs in the pod's namespace: it creates the pair with the
// host end directly in the host namespace, both with the MTU, and brings the
// pod end up. (The plugins' ip.SetupVethWithName does the same, but links
// iptables, nftables and ethtool packages whose initialisation alone costs a
// plugin invocation about a millisecond.)
func createVeth(ifName, hostVeth string, mtu int, hostNS ns.NetNS) (host, cont net.Interface, err error) {
	v := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: ifName, MTU: mtu},
		PeerName:      hostVeth,
		PeerMTU:       uint32(mtu),
		PeerNamespace: netlink.NsFd(int(hostNS.Fd())),
	}
	if err := netlink.LinkAdd(v); err != nil {
		return host, cont, fmt.Errorf("creating veth pair %s/%s: %w", hostVeth, ifName, err)
	}
	cl, err := netlink.LinkByName(ifName)
	if err != nil {
		return host, cont, fmt.Errorf("finding %s after creating it: %w", ifName, err)
	}
	if err := netlink.LinkSetUp(cl); err != nil {
		return host, cont, fmt.Errorf("bringing %s up: %w", ifName, err)
	}
	hl, err := netlinkInNS(hostNS, hostVeth)
	if err != nil {
		return host, cont, err
	}
	a, b := hl.Attrs(), cl.Attrs()
	return net.Interface{Index: a.Index, Name: a.Name, MTU: a.MTU, HardwareAddr: a.HardwareAddr},
		net.Interface{Index: b.Index, Name: b.Name, MTU: b.MTU, HardwareAddr: b.HardwareAddr}, nil
}

func netlinkInNS(target ns.NetNS, name string) (netlink.Link, error) {
	var l netlink.Link
	err := target.Do(func(ns.NetNS) error {
		var err error
		l, err = netlink.LinkByName(name)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("finding %s: %w", name, err)
	}
	return l, nil
}

// configureHostSide turns on proxy ARP / proxy NDP on the host veth and
// routes each pod address to it.
func configureHostSide(hostVeth string, addrs []netip.Prefix) error {
	link, err := netlink.LinkByName(hostVeth)
	if err != nil {
		return fmt.Errorf("finding host veth %s: %w", hostVeth, err)
	}
	hasV6 := false
	for _, a := range addrs {
		hasV6 = hasV6 || a.Addr().Is6()
	}
	sysctls := map[string]string{
		"net/ipv4/conf/" + hostVeth + "/proxy_arp":    "1",
		"net/ipv4/neigh/" + hostVeth + "/proxy_delay": "0",
		"net/ipv4/conf/" + hostVeth + "/forwarding":   "1",
	}
	if hasV6 {
		sysctls["net/ipv6/conf/"+hostVeth+"/disable_ipv6"] = "0"
		sysctls["net/ipv6/conf/"+hostVeth+"/proxy_ndp"] = "1"
		sysctls["net/ipv6/conf/"+hostVeth+"/forwarding"] = "1"
		sysctls["net/ipv6/conf/"+hostVeth+"/accept_ra"] = "0"
		// The node solicits pod neighbours from the veth's link-local
		// address; with DAD it stays tentative for a second or more and
		// the pod's first IPv6 packets go unanswered. The address is
		// derived from a fresh random MAC on a point-to-point link, so
		// duplicate detection has nothing to find.
		sysctls["net/ipv6/conf/"+hostVeth+"/accept_dad"] = "0"
	}
	for k, v := range sysctls {
		if err := writeSysctl(k, v); err != nil {
			return err
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bringing %s up: %w", hostVeth, err)
	}
	if hasV6 {
		if err := waitLinkLocal(link, 2*time.Second); err != nil {
			return err
		}
		proxy := &netlink.Neigh{LinkIndex: link.Attrs().Index, Family: unix.AF_INET6, Flags: netlink.NTF_PROXY, IP: GatewayV6.AsSlice()}
		if err := netlink.NeighSet(proxy); err != nil {
			return fmt.Errorf("adding NDP proxy entry for %s on %s: %w", GatewayV6, hostVeth, err)
		}
	}
	for _, a := range addrs {
		r := &netlink.Route{
			LinkIndex: link.Attrs().Index,
			Dst:       prefixToIPNet(a),
			Scope:     netlink.SCOPE_LINK,
			Protocol:  HostRouteProtocol,
		}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("routing %s to %s: %w", a, hostVeth, err)
		}
	}
	return nil
}

// waitLinkLocal waits until link has a usable (not tentative) IPv6
// link-local address: the kernel adds it asynchronously once the veth's
// carrier comes up, and until then the node cannot resolve the pod's IPv6
// address. Calico's plugin waits for the same thing.
func waitLinkLocal(link netlink.Link, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		addrs, err := netlink.AddrList(link, netlink.FAMILY_V6)
		if err != nil {
			return fmt.Errorf("listing IPv6 addresses of %s: %w", link.Attrs().Name, err)
		}
		for _, a := range addrs {
			if a.IP.IsLinkLocalUnicast() && a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) == 0 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("host veth %s has no usable IPv6 link-local address after %s (is IPv6 disabled on the node?)", link.Attrs().Name, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// configurePodSide runs inside the pod's namespace: addresses, gateway
// neighbours and default routes.
func configurePodSide(ifName string, hostMAC net.HardwareAddr, addrs []netip.Prefix) error {
	link, err := netlink.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("finding %s in the pod: %w", ifName, err)
	}
	for _, a := range addrs {
		if a.Addr().Is6() {
			for k, v := range map[string]string{
				"net/ipv6/conf/all/disable_ipv6":            "0",
				"net/ipv6/conf/" + ifName + "/disable_ipv6": "0",
				"net/ipv6/conf/" + ifName + "/accept_dad":   "0",
			} {
				if err := writeSysctl(k, v); err != nil {
					return err
				}
			}
			break
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bringing %s up in the pod: %w", ifName, err)
	}
	for _, a := range addrs {
		addr := &netlink.Addr{IPNet: prefixToIPNet(a)}
		if a.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("adding %s to %s in the pod: %w", a, ifName, err)
		}
	}
	idx := link.Attrs().Index
	for _, fam := range []struct {
		v6 bool
		gw netip.Addr
	}{{false, GatewayV4}, {true, GatewayV6}} {
		if !hasFamily(addrs, fam.v6) {
			continue
		}
		family := unix.AF_INET
		if fam.v6 {
			family = unix.AF_INET6
		}
		neigh := &netlink.Neigh{LinkIndex: idx, Family: family, State: netlink.NUD_PERMANENT, IP: fam.gw.AsSlice(), HardwareAddr: hostMAC}
		if err := netlink.NeighSet(neigh); err != nil {
			return fmt.Errorf("adding neighbour entry for gateway %s: %w", fam.gw, err)
		}
		if !fam.v6 {
			gwRoute := &netlink.Route{LinkIndex: idx, Dst: prefixToIPNet(netip.PrefixFrom(fam.gw, 32)), Scope: netlink.SCOPE_LINK}
			if err := netlink.RouteReplace(gwRoute); err != nil {
				return fmt.Errorf("adding route to gateway %s: %w", fam.gw, err)
			}
		}
		bits := 0
		def := &netlink.Route{LinkIndex: idx, Dst: prefixToIPNet(netip.PrefixFrom(netip.IPv4Unspecified(), bits)), Gw: fam.gw.AsSlice()}
		if fam.v6 {
			def.Dst = prefixToIPNet(netip.PrefixFrom(netip.IPv6Unspecified(), bits))
		}
		if err := netlink.RouteReplace(def); err != nil {
			return fmt.Errorf("adding default route via %s: %w", fam.gw, err)
		}
	}
	return nil
}

// teardownPod deletes the pod's interface; its host peer and host routes go
// with it. A missing namespace or interface is not an error (DEL is
// idempotent).
func teardownPod(netnsPath, ifName string) error {
	if netnsPath == "" {
		return nil
	}
	err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		l, err := netlink.LinkByName(ifName)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) {
				return nil
			}
			return fmt.Errorf("finding %s in the pod: %w", ifName, err)
		}
		if err := netlink.LinkDel(l); err != nil {
			return fmt.Errorf("deleting %s in the pod: %w", ifName, err)
		}
		return nil
	})
	// The spec: DEL succeeds when the namespace is already gone, or the
	// path is no namespace any more (a runtime's bind mount removed and the
	// path reused): there is no pod interface left to remove.
	var nsErr ns.NSPathNotExistErr
	var notNS ns.NSPathNotNSErr
	if errors.As(err, &nsErr) || errors.As(err, &notNS) {
		return nil
	}
	return err
}

func hasFamily(addrs []netip.Prefix, v6 bool) bool {
	for _, a := range addrs {
		if a.Addr().Is6() == v6 {
			return true
		}
	}
	return false
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func writeSysctl(key, value string) error {
	path := filepath.Join("/proc/sys", key)
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("setting sysctl %s=%s: %w", key, value, err)
	}
	return nil
}
