package doctor

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
)

// The two checks that send packets: one echo request to a pod on each of a
// few other nodes (the whole path: routes here and there, firewalls, the
// tunnel), and echo requests the size of a pod's largest packet, not to be
// fragmented, to the next hops of the routes to other nodes (a link on the
// way with a smaller MTU drops exactly the large packets). --no-probes
// turns both off.

// maxProbes bounds the packets one doctor run sends.
const maxProbes = 5

// checkProbe pings one pod on each of up to maxProbes other nodes.
func checkProbe(ctx context.Context, in *Input) []string {
	if in.NoProbes || in.Cluster == nil || in.Agent == nil {
		return nil
	}
	type target struct {
		addr           netip.Addr
		node, pod, blk string
	}
	byNode := map[string]target{}
	for _, b := range in.Cluster.Blocks {
		for _, al := range b.Spec.Allocations {
			if al.Pod == "" || al.Node == "" || al.Node == in.Node {
				continue
			}
			a, err := netip.ParseAddr(al.Address)
			if err != nil || !a.Is4() {
				continue
			}
			if t, ok := byNode[al.Node]; !ok || a.Less(t.addr) {
				byNode[al.Node] = target{addr: a, node: al.Node, pod: al.Namespace + "/" + al.Pod, blk: b.Spec.CIDR}
			}
		}
	}
	var targets []target
	for _, t := range byNode {
		targets = append(targets, t)
	}
	sort.Slice(targets, func(i, j int) bool { return targets[i].node < targets[j].node })
	if len(targets) > maxProbes {
		targets = targets[:maxProbes]
	}
	var out []string
	for _, t := range targets {
		err := in.Kernel.Ping(ctx, t.addr, 84, false, in.ProbeTimeout)
		if err == nil {
			continue
		}
		why := err.Error()
		if errors.Is(err, errNoReply) {
			why = fmt.Sprintf("no echo reply within %s", in.ProbeTimeout)
		}
		out = append(out, fmt.Sprintf("pod %s (%s) on node %s does not answer a ping from this node: %s; the path between the nodes is broken somewhere: run the doctor on %s too, and check the route here (rhizomectl routes) and the firewalls between", t.pod, t.addr, t.node, why, t.node))
	}
	return out
}

// checkPathMTU sends pod-MTU-sized echo requests with DF to the next hops
// of the routes to other nodes' blocks; each route's device (underlay or
// tunnel) adds its own overhead on the way, as pod traffic's would.
func checkPathMTU(ctx context.Context, in *Input) []string {
	if in.NoProbes || in.Agent == nil || in.Agent.GetPodMtu() <= 0 {
		return nil
	}
	mtu := int(in.Agent.GetPodMtu())
	seen := map[netip.Addr]bool{}
	var hops []netip.Addr
	for _, r := range in.Agent.GetRoutes() {
		for _, nh := range r.GetNextHops() {
			a, err := netip.ParseAddr(nh)
			if err != nil || !a.Is4() || seen[a] {
				continue
			}
			seen[a] = true
			hops = append(hops, a)
		}
	}
	sort.Slice(hops, func(i, j int) bool { return hops[i].Less(hops[j]) })
	if len(hops) > maxProbes {
		hops = hops[:maxProbes]
	}
	var out []string
	for _, h := range hops {
		// A small packet first: if it does not come back, the problem is
		// reachability, which other checks name.
		if in.Kernel.Ping(ctx, h, 84, true, in.ProbeTimeout) != nil {
			continue
		}
		err := in.Kernel.Ping(ctx, h, mtu, true, in.ProbeTimeout)
		if err == nil {
			continue
		}
		why := err.Error()
		if errors.Is(err, errNoReply) {
			why = "small packets come back, this one does not"
		}
		out = append(out, fmt.Sprintf("the path to %s does not carry the pod MTU: a %d-byte packet that may not be fragmented is lost (%s), so pods' large packets to the nodes behind %s vanish (TCP connects, then stalls); find the link with the smaller MTU, or lower the pod MTU (the conflist's mtu, or the underlay interface's MTU the agent derives it from)", h, mtu, why, h))
	}
	return out
}
