package agent

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"

	"github.com/rhizome-net/rhizome/internal/nodeaddr"
)

// localNode is what the agent knows about the node it runs on.
type localNode struct {
	Name string
	// IPv4 is the node's address with its subnet's prefix length, e.g.
	// 10.0.1.2/24; the subnet decides CrossSubnet encapsulation.
	IPv4 netip.Prefix
	// IPv6 likewise, if the node has one.
	IPv6 netip.Prefix
	// Interface holds IPv4 (the underlay).
	Interface string
	// MTU of Interface.
	MTU int
	// Labels of the Node object, for pool and peer selectors.
	Labels map[string]string
}

// detectLocalNode finds the node's addresses on its interfaces: the Node's
// InternalIP (or the override) must be configured on one of them, which
// becomes the underlay interface.
func detectLocalNode(n *corev1.Node, cfg Config) (*localNode, error) {
	v4, v6 := nodeaddr.Of(n, nil)
	if cfg.NodeIP.IsValid() {
		v4 = cfg.NodeIP
	}
	if !v4.IsValid() {
		return nil, fmt.Errorf("node %s has no IPv4 InternalIP in its status; set --node-ip", n.Name)
	}
	ln := &localNode{Name: n.Name, Labels: n.Labels}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing interfaces: %w", err)
	}
	for _, l := range links {
		if cfg.Interface != "" && l.Attrs().Name != cfg.Interface {
			continue
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("listing addresses of %s: %w", l.Attrs().Name, err)
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			ones, _ := a.Mask.Size()
			switch ip {
			case v4:
				ln.IPv4 = netip.PrefixFrom(ip, ones)
				ln.Interface = l.Attrs().Name
				ln.MTU = l.Attrs().MTU
			case v6:
				ln.IPv6 = netip.PrefixFrom(ip, ones)
			}
		}
	}
	if !ln.IPv4.IsValid() {
		where := "any interface"
		if cfg.Interface != "" {
			where = "interface " + cfg.Interface
		}
		return nil, fmt.Errorf("node address %s is not configured on %s of this host; check the Node's InternalIP or --node-ip", v4, where)
	}
	return ln, nil
}
