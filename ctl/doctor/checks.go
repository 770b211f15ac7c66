package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"

	"github.com/rhizome-net/rhizome/routes/datapath"
)

// checkForwarding: without IP forwarding the node drops every packet
// between its pods and the network.
func checkForwarding(_ context.Context, in *Input) []string {
	var out []string
	if v, err := in.Kernel.Sysctl("net/ipv4/ip_forward"); err == nil && v != "1" {
		out = append(out, "IPv4 forwarding is off (net.ipv4.ip_forward=0), so this node drops all traffic between its pods and other nodes; set it to 1 (the agent does at start: is it running with --sysctl-root pointing at a writable /proc/sys?)")
	}
	if in.Agent != nil && hasV6(in) {
		if v, err := in.Kernel.Sysctl("net/ipv6/conf/all/forwarding"); err == nil && v != "1" {
			out = append(out, "IPv6 forwarding is off (net.ipv6.conf.all.forwarding=0) although pods have IPv6 addresses; set it to 1")
		}
	}
	return out
}

func hasV6(in *Input) bool {
	for _, b := range in.Agent.GetBlocks() {
		if strings.Contains(b, ":") {
			return true
		}
	}
	return false
}

// checkRPFilter: strict reverse-path filtering drops packets whose reply
// leaves by another interface, which ECMP and CrossSubnet encapsulation
// produce.
func checkRPFilter(_ context.Context, in *Input) []string {
	if in.Agent == nil {
		return nil
	}
	all, _ := strconv.Atoi(sysctlOr(in.Kernel, "net/ipv4/conf/all/rp_filter", "0"))
	devs := []string{in.Agent.GetUnderlayInterface()}
	for _, d := range in.Agent.GetDevices() {
		devs = append(devs, d.GetName())
	}
	var out []string
	for _, d := range devs {
		if d == "" {
			continue
		}
		v, err := in.Kernel.Sysctl("net/ipv4/conf/" + d + "/rp_filter")
		if err != nil {
			continue
		}
		dv, _ := strconv.Atoi(v)
		if max(all, dv) == 1 {
			out = append(out, fmt.Sprintf("strict reverse-path filtering is in effect on %s (rp_filter: all=%d, %s=%d), which drops pod traffic that arrives on a different path than its replies take (ECMP, encapsulation across subnets); set net.ipv4.conf.%s.rp_filter=2 and net.ipv4.conf.all.rp_filter to 0 or 2", d, all, d, dv, d))
		}
	}
	return out
}

func sysctlOr(k Kernel, key, def string) string {
	if v, err := k.Sysctl(key); err == nil {
		return v
	}
	return def
}

// checkMTU: a tunnel device or pod interface larger than the path carries
// makes large packets vanish (TCP connects, then stalls).
func checkMTU(_ context.Context, in *Input) []string {
	if in.Agent == nil {
		return nil
	}
	links, err := in.Kernel.Links()
	if err != nil {
		return []string{fmt.Sprintf("cannot list interfaces: %v", err)}
	}
	byName := map[string]Link{}
	for _, l := range links {
		byName[l.Name] = l
	}
	under, ok := byName[in.Agent.GetUnderlayInterface()]
	if !ok {
		return nil
	}
	var out []string
	limit := under.MTU
	for _, d := range in.Agent.GetDevices() {
		l, ok := byName[d.GetName()]
		if !ok {
			out = append(out, fmt.Sprintf("the %s device %s is missing although a pool uses that encapsulation; the agent re-creates it on its next pass (see its log if it does not)", d.GetType(), d.GetName()))
			continue
		}
		overhead := datapath.OverheadVXLAN
		if d.GetType() == "ipip" {
			overhead = datapath.OverheadIPIP
		}
		if allowed := under.MTU - overhead; l.MTU > allowed {
			out = append(out, fmt.Sprintf("%s has MTU %d but %s (MTU %d) carries only %d after %s's %d bytes of overhead, so large packets through the tunnel are dropped; set its MTU to %d (unset the MTU override to let the agent do it)", l.Name, l.MTU, under.Name, under.MTU, allowed, d.GetType(), overhead, allowed))
		}
		limit = min(limit, under.MTU-overhead)
	}
	var big []string
	for _, l := range links {
		if strings.HasPrefix(l.Name, "rz") && l.Type == "veth" && l.MTU > limit {
			big = append(big, fmt.Sprintf("%s (%d)", l.Name, l.MTU))
		}
	}
	if len(big) > 0 {
		out = append(out, fmt.Sprintf("pod interfaces have an MTU larger than the path allows (%d): %s; their large packets are dropped on the way; recreate those pods (the CNI plugin takes the MTU from the agent) or lower the conflist's mtu", limit, joinLimited(big, 5)))
	}
	return out
}

// checkBGP explains every session that is not established.
func checkBGP(ctx context.Context, in *Input) []string {
	if in.Agent == nil {
		return nil
	}
	var out []string
	for _, s := range in.Agent.GetSessions() {
		if s.GetState() == "Established" {
			continue
		}
		out = append(out, explainSession(ctx, in, s.GetPeer(), s.GetPeerAs(), s.GetState(), s.GetLastError()))
	}
	return out
}

func explainSession(ctx context.Context, in *Input, peer string, peerAS uint32, state, lastErr string) string {
	who := fmt.Sprintf("the BGP session with %s (AS %d) is %s", peer, peerAS, state)
	low := strings.ToLower(lastErr)
	switch {
	case state == "NotStarted":
		return fmt.Sprintf("%s: %s", who, lastErr)
	case strings.Contains(low, "as number mismatch") || strings.Contains(low, "bad peer as"):
		return fmt.Sprintf("%s because of a wrong AS number (%s): make the BGPPeer's asNumber match the peer's AS, and the peer's configuration match this node's AS %d", who, lastErr, in.Agent.GetAsNumber())
	case strings.Contains(low, "md5") || strings.Contains(low, "password"):
		return fmt.Sprintf("%s because of a TCP MD5 password problem (%s): set the same password in the BGPPeer's Secret and on the peer", who, lastErr)
	case strings.Contains(low, "hold timer expired"):
		return fmt.Sprintf("%s because its hold timer expired: no keepalive arrived in time, so the link or the peer is down or overloaded; check connectivity to %s and the peer's health", who, hostOf(peer))
	case strings.Contains(low, "maximum prefix"):
		return fmt.Sprintf("%s because the peer sent more prefixes than its limit allows (%s): a session with another node has a limit derived from the IP pools that a healthy node never reaches, so that node leaks routes; fix it, and the session is tried again every minute. For a BGPPeer's maxPrefix, raise it or filter on the peer; the session restarts when its configuration changes", who, lastErr)
	}
	// No BGP-level reason: probe TCP port 179 (or the peer's port).
	addr := peer
	if _, _, err := net.SplitHostPort(peer); err != nil {
		addr = net.JoinHostPort(peer, "179")
	}
	err := in.Kernel.DialTCP(ctx, addr, in.ProbeTimeout)
	switch {
	case err == nil:
		return fmt.Sprintf("%s although %s accepts TCP connections (%s): the peer is not configured for this node (address %s, AS %d) or rejects it; check the peer's neighbour configuration", who, addr, orNone(lastErr), in.Agent.GetNodeAddress(), in.Agent.GetAsNumber())
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("%s because nothing listens on %s (connection refused): start BGP on the peer or fix the port in peerIP", who, addr)
	case errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH):
		return fmt.Sprintf("%s because %s is unreachable from this node (%v): add a route to the peer or fix peerIP", who, hostOf(peer), err)
	default:
		return fmt.Sprintf("%s because TCP port %s cannot be reached (%v): a firewall may drop BGP, or the peer is down", who, addr, err)
	}
}

func hostOf(peer string) string {
	if h, _, err := net.SplitHostPort(peer); err == nil {
		return h
	}
	return peer
}

func orNone(s string) string {
	if s == "" {
		return "no error recorded"
	}
	return s
}

// checkPools finds overlapping pools: an address in two pools is handed
// out twice.
func checkPools(_ context.Context, in *Input) []string {
	if in.Cluster == nil {
		return nil
	}
	var out []string
	ps := in.Cluster.Pools
	for i := range ps {
		a, err := netip.ParsePrefix(ps[i].Spec.CIDR)
		if err != nil {
			continue
		}
		for j := i + 1; j < len(ps); j++ {
			b, err := netip.ParsePrefix(ps[j].Spec.CIDR)
			if err == nil && a.Overlaps(b) {
				out = append(out, fmt.Sprintf("pools %s (%s) and %s (%s) overlap, so the same address can be given to two pods; disable one and move its pods to a pool that does not overlap", ps[i].Name, a, ps[j].Name, b))
			}
		}
	}
	return out
}

// checkNAT: natOutgoing pools need the masquerade rule, or pods reach the
// outside with addresses nobody routes back.
func checkNAT(_ context.Context, in *Input) []string {
	if in.Cluster == nil {
		return nil
	}
	var nat []string
	for _, p := range in.Cluster.Pools {
		if p.Spec.NATOutgoing {
			nat = append(nat, p.Name)
		}
	}
	if len(nat) == 0 {
		return nil
	}
	ok, err := in.Kernel.Masquerading(datapath.NATTable)
	if err != nil {
		return []string{fmt.Sprintf("cannot read nftables to check natOutgoing: %v", err)}
	}
	if !ok {
		return []string{fmt.Sprintf("pool(s) %s set natOutgoing but nftables table inet %s has no masquerade rule, so pods reach the outside with their own addresses and get no replies; the agent writes it on each pass: check its log for nftables errors", strings.Join(nat, ", "), datapath.NATTable)}
	}
	return nil
}

// checkPeerRoutes: every other node's block needs a route here.
func checkPeerRoutes(_ context.Context, in *Input) []string {
	if in.Cluster == nil {
		return nil
	}
	rs, err := in.Kernel.Routes()
	if err != nil {
		return []string{fmt.Sprintf("cannot list routes: %v", err)}
	}
	have := map[netip.Prefix]bool{}
	for _, r := range rs {
		have[r.Dst] = true
	}
	noExport := map[string]bool{}
	var pools []netip.Prefix
	for _, p := range in.Cluster.Pools {
		if pfx, err := netip.ParsePrefix(p.Spec.CIDR); err == nil {
			pools = append(pools, pfx)
			if p.Spec.DisableBGPExport {
				noExport[pfx.String()] = true
			}
		}
	}
	var missing []string
	for _, b := range in.Cluster.Blocks {
		if b.Spec.Affinity == "" || b.Spec.Affinity == in.Node {
			continue
		}
		pfx, err := netip.ParsePrefix(b.Spec.CIDR)
		if err != nil || exportDisabled(pools, noExport, pfx) {
			continue
		}
		if !have[pfx] {
			missing = append(missing, fmt.Sprintf("%s (node %s)", pfx, b.Spec.Affinity))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return []string{fmt.Sprintf("no route to other nodes' blocks %s, so this node's pods cannot reach the pods there; check the BGP session with those nodes (rhizomectl bgp peers) and that their agents advertise (rhizomectl status on them)", joinLimited(missing, 5))}
}

func exportDisabled(pools []netip.Prefix, noExport map[string]bool, b netip.Prefix) bool {
	for _, p := range pools {
		if p.Contains(b.Addr()) && noExport[p.String()] {
			return true
		}
	}
	return false
}

// checkPodRoutes: every pod of this node needs a host route to its veth,
// or replies to it have nowhere to go.
func checkPodRoutes(_ context.Context, in *Input) []string {
	if in.Cluster == nil {
		return nil
	}
	rs, err := in.Kernel.Routes()
	if err != nil {
		return nil
	}
	byDst := map[netip.Addr]Route{}
	for _, r := range rs {
		if r.Dst.IsSingleIP() {
			byDst[r.Dst.Addr()] = r
		}
	}
	var missing []string
	for _, b := range in.Cluster.Blocks {
		for _, al := range b.Spec.Allocations {
			if al.Node != in.Node || al.Pod == "" {
				continue
			}
			a, err := netip.ParseAddr(al.Address)
			if err != nil {
				continue
			}
			if r, ok := byDst[a]; !ok || !strings.HasPrefix(r.Dev, "rz") {
				missing = append(missing, fmt.Sprintf("%s/%s (%s)", al.Namespace, al.Pod, a))
			}
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return []string{fmt.Sprintf("no route back to pod(s) %s: traffic to them hits the block's blackhole; recreate those pods (the CNI plugin adds the route) or run the CNI CHECK", joinLimited(missing, 5))}
}

// checkConflicts: a route of another protocol on a prefix the agent wants
// wins, and the agent never overwrites it.
func checkConflicts(_ context.Context, in *Input) []string {
	if in.Agent == nil {
		return nil
	}
	rs, _ := in.Kernel.Routes()
	var out []string
	for _, c := range in.Agent.GetConflicts() {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			continue
		}
		proto := "another"
		for _, r := range rs {
			if r.Dst == p && r.Protocol != int(in.Agent.GetRouteProtocol()) {
				proto = protoName(r.Protocol)
			}
		}
		out = append(out, fmt.Sprintf("a route for %s of protocol %s is in the kernel, so the agent's route (protocol %d) for it is not installed and traffic follows the foreign one; delete it (ip route del %s proto %s) if nobody needs it", p, proto, in.Agent.GetRouteProtocol(), p, proto))
	}
	return out
}

// checkRouteErrors reports routes the agent could not install.
func checkRouteErrors(_ context.Context, in *Input) []string {
	if in.Agent == nil || len(in.Agent.GetRouteErrors()) == 0 {
		return nil
	}
	return []string{fmt.Sprintf("the agent could not install %d route(s): %s; see its log", len(in.Agent.GetRouteErrors()), joinLimited(in.Agent.GetRouteErrors(), 3))}
}

func protoName(p int) string {
	names := map[int]string{2: "kernel", 3: "boot", 4: "static", 11: "zebra", 12: "bird", 186: "bgp", 188: "ospf"}
	if n, ok := names[p]; ok {
		return n
	}
	return strconv.Itoa(p)
}
