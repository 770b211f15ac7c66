package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// probePackets are the two forwarded packets of a pod connection across
// nodes: from a local pod out through the underlay, and the reply path in.
func probePackets(in *Input) []fwPacket {
	if in.Agent == nil {
		return nil
	}
	local, veth := localPod(in)
	remote := remotePodAddr(in)
	if !local.IsValid() || !remote.IsValid() || local.Is4() != remote.Is4() {
		return nil
	}
	under := in.Agent.GetUnderlayInterface()
	return []fwPacket{
		{IIF: veth, OIF: under, Src: local, Dst: remote},
		{IIF: under, OIF: veth, Src: remote, Dst: local},
	}
}

// localPod is an address of one of this node's pods and its host veth, or
// the first address of one of its blocks and a name like the CNI plugin's.
func localPod(in *Input) (netip.Addr, string) {
	rs, _ := in.Kernel.Routes()
	for _, r := range rs {
		if r.Dst.IsSingleIP() && r.Dst.Addr().Is4() && strings.HasPrefix(r.Dev, "rz") {
			return r.Dst.Addr(), r.Dev
		}
	}
	for _, b := range in.Agent.GetBlocks() {
		if p, err := netip.ParsePrefix(b); err == nil && p.Addr().Is4() {
			return p.Addr().Next(), "rz0000000000"
		}
	}
	return netip.Addr{}, ""
}

// remotePodAddr is an address in another node's block.
func remotePodAddr(in *Input) netip.Addr {
	if in.Cluster != nil {
		for _, b := range in.Cluster.Blocks {
			if b.Spec.Affinity == "" || b.Spec.Affinity == in.Node {
				continue
			}
			if p, err := netip.ParsePrefix(b.Spec.CIDR); err == nil && p.Addr().Is4() {
				return p.Addr().Next()
			}
		}
	}
	for _, r := range in.Agent.GetRoutes() {
		if p, err := netip.ParsePrefix(r.GetPrefix()); err == nil && p.Addr().Is4() && r.GetEncapsulation() != "blackhole" {
			return p.Addr().Next()
		}
	}
	return netip.Addr{}
}

// checkFirewall: a FORWARD drop policy or drop rule (nftables, iptables-nft
// or legacy iptables) drops pod traffic between nodes, while every route
// looks right.
func checkFirewall(_ context.Context, in *Input) []string {
	pkts := probePackets(in)
	if len(pkts) == 0 {
		return nil
	}
	var out []string
	chains, err := in.Kernel.ForwardChains()
	if err != nil {
		out = append(out, fmt.Sprintf("cannot read nftables to check that forwarded pod traffic passes: %v", err))
	}
	seen := map[string]bool{}
	for _, p := range pkts {
		for _, v := range evalForward(chains, p) {
			if seen[v.Where] {
				continue
			}
			seen[v.Where] = true
			out = append(out, fmt.Sprintf("the firewall drops forwarded pod traffic (%s from %s to %s, in %s, out %s): %s; accept the pool CIDRs in the forward chain (e.g. nft insert rule ... ip saddr <pool> accept / ip daddr <pool> accept, or iptables -I FORWARD -s <pool> -j ACCEPT and -d <pool>) or remove the drop",
				p.Src, p.Src, p.Dst, p.IIF, p.OIF, v.Where))
		}
	}
	lines, loaded, err := in.Kernel.LegacyForward()
	switch {
	case err != nil:
		out = append(out, fmt.Sprintf("cannot check the legacy iptables FORWARD chain: %v; run iptables-legacy -S FORWARD and look for DROP", err))
	case loaded:
		for _, p := range pkts {
			if why := legacyDrops(lines, p); why != "" && !seen[why] {
				seen[why] = true
				out = append(out, fmt.Sprintf("the legacy iptables FORWARD chain drops forwarded pod traffic (%s to %s): %s; add iptables-legacy -I FORWARD -s <pool> -j ACCEPT and -d <pool>, or remove the drop", p.Src, p.Dst, why))
			}
		}
	}
	return out
}

// legacyDrops evaluates iptables-save FORWARD lines on p: rules with only
// -s/-d/-i/-o matches; anything else is not judged.
func legacyDrops(lines []string, p fwPacket) string {
	policy := ""
	for _, l := range lines {
		f := strings.Fields(l)
		if f[0] == ":FORWARD" && len(f) > 1 {
			policy = f[1]
			continue
		}
		match, target := true, ""
		for i := 2; i+1 < len(f); i += 2 {
			opt, val := f[i], f[i+1]
			switch opt {
			case "-s", "-d":
				pfx, err := netip.ParsePrefix(val)
				if err != nil {
					if a, err2 := netip.ParseAddr(val); err2 == nil {
						pfx = netip.PrefixFrom(a, a.BitLen())
					} else {
						match = false
						continue
					}
				}
				addr := p.Src
				if opt == "-d" {
					addr = p.Dst
				}
				match = match && pfx.Contains(addr)
			case "-i", "-o":
				name := p.IIF
				if opt == "-o" {
					name = p.OIF
				}
				if strings.HasSuffix(val, "+") {
					match = match && strings.HasPrefix(name, strings.TrimSuffix(val, "+"))
				} else {
					match = match && name == val
				}
			case "-j":
				target = val
			default:
				match = false // a match we do not judge
			}
		}
		if !match {
			continue
		}
		switch target {
		case "ACCEPT":
			return ""
		case "DROP", "REJECT":
			return fmt.Sprintf("rule %q", l)
		}
	}
	if policy == "DROP" {
		return "its policy is DROP and no rule accepts this traffic"
	}
	return ""
}

// encapModules are the kernel modules each encapsulation needs.
var encapModules = map[string]string{"vxlan": "vxlan", "ipip": "ipip"}

// checkModules: a pool asks for IPIP or VXLAN on a kernel without the
// module: the agent cannot create the tunnel device, and the routes through
// it are never installed.
func checkModules(_ context.Context, in *Input) []string {
	if in.Cluster == nil {
		return nil
	}
	need := map[string][]string{}
	for _, p := range in.Cluster.Pools {
		if p.Spec.Disabled {
			continue
		}
		if p.Spec.IPIPMode != "" && p.Spec.IPIPMode != v1alpha1.EncapNever {
			need["ipip"] = append(need["ipip"], p.Name)
		}
		if p.Spec.VXLANMode != "" && p.Spec.VXLANMode != v1alpha1.EncapNever {
			need["vxlan"] = append(need["vxlan"], p.Name)
		}
	}
	// A device of the type proves the kernel has it (built in without
	// parameters leaves no trace in /sys/module).
	have := map[string]bool{}
	if links, err := in.Kernel.Links(); err == nil {
		for _, l := range links {
			have[l.Type] = true
		}
	}
	var out []string
	for _, encap := range []string{"ipip", "vxlan"} {
		pools := need[encap]
		if len(pools) == 0 || have[encap] {
			continue
		}
		mod := encapModules[encap]
		loaded, available, known := in.Kernel.Module(mod)
		switch {
		case loaded:
		case known && !available:
			out = append(out, fmt.Sprintf("pool(s) %s use %s encapsulation, but this kernel has no %s module (neither loaded, built in, nor in /lib/modules): the agent cannot create the tunnel device and routes through it are not installed; use a kernel with %s, or set %sMode: Never (and the other encapsulation or none) on those pools",
				strings.Join(pools, ", "), encap, mod, mod, encap))
		case !known:
			out = append(out, fmt.Sprintf("pool(s) %s use %s encapsulation, and the %s module is not loaded; whether it can be loaded is unknown (/lib/modules is not readable here): run modprobe %s on the node",
				strings.Join(pools, ", "), encap, mod, mod))
		}
	}
	return out
}

// checkCNIConfig: the container runtime uses the first configuration of
// its CNI directory in lexical order; another network's file sorting
// before Rhizome's takes over every new pod.
func checkCNIConfig(_ context.Context, in *Input) []string {
	if in.CNIConfDir == "" {
		return nil
	}
	entries, err := os.ReadDir(in.CNIConfDir)
	if err != nil {
		return []string{fmt.Sprintf("cannot read the CNI configuration directory %s: %v", in.CNIConfDir, err)}
	}
	var files []string
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".conf", ".conflist", ".json":
			if !e.IsDir() {
				files = append(files, e.Name())
			}
		}
	}
	sort.Strings(files) // libcni's order, which containerd and CRI-O follow
	if len(files) == 0 {
		return []string{fmt.Sprintf("%s holds no CNI configuration, so the runtime cannot wire pods: the agent pod's install-cni init container writes 10-rhizome.conflist there", in.CNIConfDir)}
	}
	first := files[0]
	if isRhizomeConf(filepath.Join(in.CNIConfDir, first)) {
		return nil
	}
	ours := ""
	for _, f := range files[1:] {
		if isRhizomeConf(filepath.Join(in.CNIConfDir, f)) {
			ours = f
		}
	}
	if ours == "" {
		return []string{fmt.Sprintf("%s has no Rhizome configuration; the runtime uses %s for new pods: reinstall (the agent pod's install-cni init container writes 10-rhizome.conflist)", in.CNIConfDir, first)}
	}
	return []string{fmt.Sprintf("%s sorts before %s in %s, so the container runtime wires new pods with that other network, not Rhizome: remove it (or move it out of the directory), then recreate the pods it wired", first, ours, in.CNIConfDir)}
}

// isRhizomeConf: a conflist whose first plugin, or a conf whose type, is
// rhizome.
func isRhizomeConf(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	var c struct {
		Type    string `json:"type"`
		Plugins []struct {
			Type string `json:"type"`
		} `json:"plugins"`
	}
	if json.Unmarshal(b, &c) != nil {
		return false
	}
	if len(c.Plugins) > 0 {
		return c.Plugins[0].Type == "rhizome"
	}
	return c.Type == "rhizome"
}

// checkPodInterfaces: each pod's host-side veth needs its /32 (or /128)
// route and proxy ARP (the pod's gateway is a link-local address that the
// host answers for); a veth without them is a pod that cannot talk.
func checkPodInterfaces(_ context.Context, in *Input) []string {
	links, err := in.Kernel.Links()
	if err != nil {
		return nil
	}
	rs, err := in.Kernel.Routes()
	if err != nil {
		return nil
	}
	routed := map[string]bool{}
	for _, r := range rs {
		if r.Dst.IsSingleIP() {
			routed[r.Dev] = true
		}
	}
	var noRoute, noARP []string
	for _, l := range links {
		if l.Type != "veth" || !strings.HasPrefix(l.Name, "rz") {
			continue
		}
		if !routed[l.Name] {
			noRoute = append(noRoute, l.Name)
		}
		if v, err := in.Kernel.Sysctl("net/ipv4/conf/" + l.Name + "/proxy_arp"); err == nil && v != "1" {
			noARP = append(noARP, l.Name)
		}
	}
	var out []string
	if len(noRoute) > 0 {
		out = append(out, fmt.Sprintf("pod interface(s) %s have no host route to their pod, so replies to those pods go nowhere: recreate the pods (the CNI plugin adds the route), or delete the interfaces if their pods are gone", joinLimited(noRoute, 5)))
	}
	if len(noARP) > 0 {
		out = append(out, fmt.Sprintf("pod interface(s) %s have proxy ARP off, so their pods cannot resolve their gateway and send nothing: set net.ipv4.conf.<interface>.proxy_arp=1, or recreate the pods", joinLimited(noARP, 5)))
	}
	return out
}

// checkReturnPath: a pool without natOutgoing sends pod traffic out with
// pod source addresses; replies from outside come back only if routers
// outside the cluster know the pool, which Rhizome tells them over its
// external BGP sessions.
func checkReturnPath(_ context.Context, in *Input) []string {
	if in.Cluster == nil || in.Agent == nil {
		return nil
	}
	advertising := false
	for _, s := range in.Agent.GetSessions() {
		if s.GetKind() == string(v1alpha1.SessionExternal) && s.GetState() == "Established" && s.GetPrefixesAdvertised() > 0 {
			advertising = true
		}
	}
	var out []string
	for _, p := range in.Cluster.Pools {
		if p.Spec.NATOutgoing || p.Spec.Disabled || !usesPool(in, p.Spec.CIDR) {
			continue
		}
		switch {
		case p.Spec.DisableBGPExport:
			out = append(out, fmt.Sprintf("pool %s (%s) has neither natOutgoing nor BGP export: its pods reach the outside with their own addresses and no router outside the cluster learns where they are, so replies do not come back unless your network routes %s to the nodes statically; set natOutgoing: true or allow export", p.Name, p.Spec.CIDR, p.Spec.CIDR))
		case !advertising:
			out = append(out, fmt.Sprintf("pool %s (%s) has no natOutgoing, but this node advertises its blocks to no router outside the cluster (no established external BGP session): its pods' traffic to the outside leaves with pod addresses and replies do not come back unless your network routes %s to the nodes statically; set natOutgoing: true on the pool, or peer with your routers (BGPPeer)", p.Name, p.Spec.CIDR, p.Spec.CIDR))
		}
	}
	return out
}

// usesPool: this node holds a block of the pool.
func usesPool(in *Input, cidr string) bool {
	pool, err := netip.ParsePrefix(cidr)
	if err != nil {
		return false
	}
	for _, b := range in.Agent.GetBlocks() {
		if p, err := netip.ParsePrefix(b); err == nil && pool.Contains(p.Addr()) {
			return true
		}
	}
	return false
}
