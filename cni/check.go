package cni

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/rhizome-net/rhizome/agent/agentapi"
)

// Check verifies that what ADD built is still there: both ends of the veth,
// the pod's addresses and default routes, and the host route to each
// address. Each finding comes back as its own CNI error code.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	conf, cerr := ParseConfig(args.StdinData)
	if cerr != nil {
		return cerr
	}
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return types.NewError(types.ErrDecodingFailure, "cannot parse prevResult", err.Error())
	}
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs prevResult", "the runtime must pass the result of ADD")
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "cannot convert prevResult", err.Error())
	}
	k8s, err := parseK8sArgs(args.Args)
	if err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "invalid CNI_ARGS", err.Error())
	}
	// The name is derived, not read from prevResult: chained plugins such as
	// bandwidth add host interfaces of their own to the result.
	hostVeth := HostVethName(string(k8s.K8S_POD_NAMESPACE), string(k8s.K8S_POD_NAME), args.ContainerID, args.IfName)
	var addrs []netip.Prefix
	for _, ipc := range prev.IPs {
		a, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok {
			continue
		}
		ones, _ := ipc.Address.Mask.Size()
		addrs = append(addrs, netip.PrefixFrom(a.Unmap(), ones))
	}

	if cerr := p.checkAgent(conf, args, addrs); cerr != nil {
		return cerr
	}
	host, err := netlink.LinkByName(hostVeth)
	if err != nil {
		return types.NewError(ErrInterfaceMissing, fmt.Sprintf("host interface %s is missing", hostVeth), err.Error())
	}
	if host.Attrs().Flags&1 == 0 { // net.FlagUp
		return types.NewError(ErrInterfaceMissing, fmt.Sprintf("host interface %s is down", hostVeth), "")
	}
	for _, a := range addrs {
		if !hasHostRoute(host, a) {
			return types.NewError(ErrHostRouteMissing,
				fmt.Sprintf("the host route %s dev %s is missing: the node cannot reach the pod", a, hostVeth),
				"delete and re-create the pod, or add the route back")
		}
	}
	return ns.WithNetNSPath(args.Netns, func(ns.NetNS) error {
		l, err := netlink.LinkByName(args.IfName)
		if err != nil {
			return types.NewError(ErrInterfaceMissing, fmt.Sprintf("pod interface %s is missing", args.IfName), err.Error())
		}
		have, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return types.NewError(types.ErrIOFailure, "listing pod addresses", err.Error())
		}
		for _, a := range addrs {
			found := false
			for _, h := range have {
				if h.IPNet.String() == prefixToIPNet(a).String() {
					found = true
				}
			}
			if !found {
				return types.NewError(ErrAddressMissing, fmt.Sprintf("pod interface %s lacks address %s", args.IfName, a), "")
			}
		}
		for _, v6 := range []bool{false, true} {
			if !hasFamily(addrs, v6) {
				continue
			}
			family := netlink.FAMILY_V4
			if v6 {
				family = netlink.FAMILY_V6
			}
			routes, err := netlink.RouteList(l, family)
			if err != nil {
				return types.NewError(types.ErrIOFailure, "listing pod routes", err.Error())
			}
			def := false
			for _, r := range routes {
				if (r.Dst == nil || isDefault(r.Dst.String())) && r.Gw != nil {
					def = true
				}
			}
			if !def {
				return types.NewError(ErrHostRouteMissing, fmt.Sprintf("the pod has no default route (IPv6: %v)", v6), "")
			}
		}
		return nil
	})
}

func isDefault(s string) bool { return s == "0.0.0.0/0" || s == "::/0" }

func hasHostRoute(host netlink.Link, a netip.Prefix) bool {
	family := netlink.FAMILY_V4
	if a.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	routes, err := netlink.RouteListFiltered(family, &netlink.Route{LinkIndex: host.Attrs().Index}, netlink.RT_FILTER_OIF)
	if err != nil {
		return false
	}
	want := prefixToIPNet(a).String()
	for _, r := range routes {
		if r.Dst != nil && r.Dst.String() == want {
			return true
		}
	}
	return false
}

// checkAgent asks the agent whether the attachment still holds the
// addresses of prevResult: the interface can look right while the address
// was released (by an operator, or by the GC) and handed to another pod.
func (p *Plugin) checkAgent(conf *NetConf, args *skel.CmdArgs, addrs []netip.Prefix) *types.Error {
	client, closer, cerr := p.connect(conf)
	if cerr != nil {
		return cerr.(*types.Error)
	}
	defer closer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), conf.timeout)
	defer cancel()
	held := map[netip.Addr]bool{}
	for _, h := range []string{Handle(conf.Name, args.ContainerID, args.IfName), LegacyHandle(args.ContainerID, args.IfName)} {
		resp, err := client.Lookup(ctx, &agentapi.LookupRequest{Handle: h})
		if err != nil {
			return types.NewError(ErrAgentUnavailable, "asking the rhizome agent for the attachment's addresses failed", err.Error())
		}
		got, err := parseAddrs(resp.GetAddresses())
		if err != nil {
			return types.NewError(ErrAgentUnavailable, "the agent returned a malformed address", err.Error())
		}
		for _, a := range got {
			held[a.Addr()] = true
		}
	}
	for _, a := range addrs {
		if !held[a.Addr()] {
			return types.NewError(ErrAddressNotHeld,
				fmt.Sprintf("the agent holds no address %s for this attachment: it was released and may belong to another pod", a.Addr()),
				"delete and re-create the pod")
		}
	}
	return nil
}
