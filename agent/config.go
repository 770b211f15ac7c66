// Package agent wires Rhizome's node agent together: Kubernetes clients and
// informers, IPAM, the BGP speaker, the kernel route programmer, the local
// API for the CNI plugin and rhizomectl, and health and metrics.
//
// Only the agent parses flags (cmd/rhizome-agent): it turns them into a
// Config, and hands each component its own small configuration through its
// constructor. Informer handlers never do work themselves: they signal a
// size-1 channel, and the agent's loop recomputes the whole desired state on
// each signal, so bursts of events collapse into one pass and event order
// does not matter.
package agent

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/rhizome-net/rhizome/agent/agentapi"
	"github.com/rhizome-net/rhizome/internal/burstgc"
)

// Config is the agent's configuration, from flags and the environment.
type Config struct {
	// NodeName is the Kubernetes Node this agent runs on (NODE_NAME from
	// the downward API).
	NodeName string
	// Kubeconfig is a kubeconfig path; empty means in-cluster.
	Kubeconfig string
	// Namespace holds the Secrets that BGP passwords refer to, and receives
	// the agent's events (POD_NAMESPACE).
	Namespace string
	// NodeIP overrides the node's IPv4 address (default: the Node's first
	// InternalIP); it is also the BGP router ID unless RouterID is set.
	NodeIP netip.Addr
	// RouterID overrides the BGP router ID.
	RouterID netip.Addr
	// Interface overrides the underlay interface (default: the interface
	// that holds NodeIP).
	Interface string
	// GoBGPAPIAddress serves GoBGP's own gRPC API (for the gobgp CLI);
	// empty turns it off. Default: a unix socket only root can reach
	// (DefaultGoBGPAPIAddress); a host:port serves it on TCP instead, to
	// anyone who can reach that address.
	GoBGPAPIAddress string
	// HealthAddress serves /healthz, /readyz and /metrics. Default :9099.
	HealthAddress string
	// PprofAddress, if set, serves Go's pprof endpoints there (a loopback
	// address: they expose the process's memory).
	PprofAddress string
	// AgentSocket is the local API's unix socket.
	AgentSocket string
	// ResyncPeriod bounds how long the agent goes without a full pass.
	ResyncPeriod time.Duration
	// StatusInterval rate-limits RhizomeNode status writes.
	StatusInterval time.Duration
	// SysctlRoot is where network sysctls are written: /proc/sys, or a
	// writable mount of the host's /proc/sys/net in a container.
	SysctlRoot string
	// LogLevel of the agent's logs.
	LogLevel slog.Level
	// BurstGOGC is the Go GC target while a peer sends a large table
	// (internal/burstgc); negative keeps GOGC as it is. Default 400.
	BurstGOGC int
	// BurstHeapCapMiB bounds the heap goal during such a burst; 0 means
	// half of GOMEMLIMIT when set (the DaemonSet sets it from the
	// container's memory limit), else 1 GiB.
	BurstHeapCapMiB int
}

// Defaults of the contract names (ports and paths that others script
// against).
const (
	// DefaultGoBGPAPIAddress is GoBGP's read-write API on a unix socket in
	// a directory only root may enter: `gobgp --target
	// unix:///var/run/rhizome/gobgp/gobgp.sock neighbor` (docs/design/0014).
	// It was 127.0.0.1:50051, where any hostNetwork pod could inject routes.
	DefaultGoBGPAPIAddress = "unix:///var/run/rhizome/gobgp/gobgp.sock"
	DefaultHealthAddress   = ":9099"
	DefaultNamespace       = "rhizome-system"
)

// DefaultConfig returns a Config with every default filled in.
func DefaultConfig() Config {
	return Config{
		Namespace:       DefaultNamespace,
		GoBGPAPIAddress: DefaultGoBGPAPIAddress,
		HealthAddress:   DefaultHealthAddress,
		AgentSocket:     agentapi.DefaultSocket,
		ResyncPeriod:    5 * time.Minute,
		StatusInterval:  2 * time.Second,
		SysctlRoot:      "/proc/sys",
		LogLevel:        slog.LevelInfo,
		BurstGOGC:       burstgc.DefaultPercent,
	}
}

// Validate reports configuration errors a person can fix.
func (c Config) Validate() error {
	if c.NodeName == "" {
		return fmt.Errorf("the node name is required: pass --node-name or set NODE_NAME")
	}
	if c.NodeIP.IsValid() && !c.NodeIP.Is4() {
		return fmt.Errorf("--node-ip %s must be an IPv4 address", c.NodeIP)
	}
	if c.RouterID.IsValid() && !c.RouterID.Is4() {
		return fmt.Errorf("--router-id %s must be an IPv4 address", c.RouterID)
	}
	if c.AgentSocket == "" {
		return fmt.Errorf("--agent-socket must not be empty")
	}
	if c.BurstGOGC >= 0 && c.BurstGOGC < 100 {
		return fmt.Errorf("--burst-gogc %d: use at least 100 (the default GOGC), or -1 to turn burst tuning off", c.BurstGOGC)
	}
	if c.PprofAddress != "" {
		if _, _, err := net.SplitHostPort(c.PprofAddress); err != nil {
			return fmt.Errorf("--pprof-address %q: %w", c.PprofAddress, err)
		}
	}
	if c.BurstHeapCapMiB < 0 {
		return fmt.Errorf("--burst-heap-cap-mib %d must not be negative", c.BurstHeapCapMiB)
	}
	if c.ResyncPeriod < time.Second {
		return fmt.Errorf("--resync-period %s is too short (at least 1s)", c.ResyncPeriod)
	}
	return nil
}
