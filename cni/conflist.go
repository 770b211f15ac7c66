package cni

import (
	"encoding/json"
)

// ConflistOptions shape the network configuration list that the installer
// writes to /etc/cni/net.d/10-rhizome.conflist.
type ConflistOptions struct {
	// CNIVersion of the list; default 1.0.0. 1.1.0 enables GC and STATUS,
	// and needs chained plugins that support it.
	CNIVersion string
	// MTU of pod interfaces; 0 lets the plugin ask the agent at every ADD.
	MTU int
	// AgentSocket; empty means the default.
	AgentSocket string
	// Chain adds the standard portmap (hostPort) and bandwidth (traffic
	// shaping annotations) plugins after rhizome.
	Chain bool
	// PortmapBackend is "iptables" or "nftables" for portmap; empty keeps
	// the plugin's default.
	PortmapBackend string
	// LogLevel of the plugin.
	LogLevel string
}

// Conflist renders the network configuration list.
func Conflist(o ConflistOptions) []byte {
	if o.CNIVersion == "" {
		o.CNIVersion = "1.0.0"
	}
	rz := map[string]any{"type": "rhizome"}
	if o.MTU > 0 {
		rz["mtu"] = o.MTU
	}
	if o.AgentSocket != "" {
		rz["agentSocket"] = o.AgentSocket
	}
	if o.LogLevel != "" {
		rz["logLevel"] = o.LogLevel
	}
	plugins := []any{rz}
	if o.Chain {
		pm := map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true}
		if o.PortmapBackend != "" {
			pm["backend"] = o.PortmapBackend
		}
		plugins = append(plugins, pm,
			map[string]any{"type": "bandwidth", "capabilities": map[string]bool{"bandwidth": true}})
	}
	b, err := json.MarshalIndent(map[string]any{
		"cniVersion": o.CNIVersion,
		"name":       "rhizome",
		"plugins":    plugins,
	}, "", "  ")
	if err != nil {
		panic(err) // only maps of plain values
	}
	return append(b, '\n')
}
