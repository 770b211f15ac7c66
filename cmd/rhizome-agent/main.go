// Command rhizome-agent is Rhizome's node agent (a DaemonSet on every
// node); see package agent. Flags default from the environment where the
// DaemonSet sets it (NODE_NAME, POD_NAMESPACE).
//
// MPTCP stays off (also set in go.mod): with it, GoBGP's listener cannot set
// TCP MD5 or the GTSM TTL, and MD5 peers connecting to us fail.

//go:debug multipathtcp=0
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/rhizome-net/rhizome/agent"
	"github.com/rhizome-net/rhizome/internal/version"
)

func main() {
	if err := newCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "rhizome-agent:", err)
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	cfg := agent.DefaultConfig()
	cfg.NodeName = os.Getenv("NODE_NAME")
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		cfg.Namespace = ns
	}
	var nodeIP, routerID, logLevel string
	cmd := &cobra.Command{
		Use:           "rhizome-agent",
		Short:         "Rhizome's node agent: IPAM, BGP and kernel routes for one node",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		Version:       version.Get().String(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.NodeIP, err = parseOptionalAddr(nodeIP, "--node-ip"); err != nil {
				return err
			}
			if cfg.RouterID, err = parseOptionalAddr(routerID, "--router-id"); err != nil {
				return err
			}
			if err := cfg.LogLevel.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: use debug, info, warn or error", logLevel)
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			log := newLogger(os.Stderr, cfg.LogLevel, cfg.NodeName)
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return agent.Run(ctx, cfg, log)
		},
	}
	cmd.SetVersionTemplate("{{.Name}} {{.Version}}\n")
	cmd.AddCommand(newCleanupCommand())
	f := cmd.Flags()
	f.StringVar(&cfg.NodeName, "node-name", cfg.NodeName, "name of this node's Node object (default $NODE_NAME)")
	f.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig path; empty for in-cluster configuration")
	f.StringVar(&cfg.Namespace, "namespace", cfg.Namespace, "namespace of BGP password Secrets and of events (default $POD_NAMESPACE)")
	f.StringVar(&nodeIP, "node-ip", "", "this node's IPv4 address (default: the Node's InternalIP)")
	f.StringVar(&routerID, "router-id", "", "BGP router ID (default: the node's IPv4 address)")
	f.StringVar(&cfg.Interface, "interface", "", "underlay interface (default: the one holding the node's address)")
	f.StringVar(&cfg.GoBGPAPIAddress, "gobgp-api-address", cfg.GoBGPAPIAddress, "serve GoBGP's read-write gRPC API here for the gobgp CLI: unix:///path (its directory is made root-only; gobgp --target unix:///path) or host:port on TCP (open to every local process); empty to turn off")
	f.StringVar(&cfg.HealthAddress, "health-address", cfg.HealthAddress, "serve /healthz, /readyz and /metrics here")
	f.StringVar(&cfg.PprofAddress, "pprof-address", "", "serve Go's pprof endpoints here (e.g. 127.0.0.1:6060; off when empty)")
	f.StringVar(&cfg.AgentSocket, "agent-socket", cfg.AgentSocket, "unix socket of the local API (CNI plugin, rhizomectl)")
	f.DurationVar(&cfg.ResyncPeriod, "resync-period", cfg.ResyncPeriod, "longest time between two full reconcile passes")
	f.DurationVar(&cfg.StatusInterval, "status-interval", cfg.StatusInterval, "shortest time between two writes of this node's RhizomeNode status")
	f.StringVar(&cfg.SysctlRoot, "sysctl-root", cfg.SysctlRoot, "where network sysctls are written (the DaemonSet mounts the host's /proc/sys/net under /host/proc/sys)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.IntVar(&cfg.BurstGOGC, "burst-gogc", cfg.BurstGOGC, "Go GC target (GOGC) while a peer sends a large table; -1 keeps GOGC unchanged")
	f.IntVar(&cfg.BurstHeapCapMiB, "burst-heap-cap-mib", 0, "bound on the heap goal during such a burst, MiB (default: half of GOMEMLIMIT if set, else 1024)")
	return cmd
}

// newLogger is the agent's JSON logger. client-go logs through klog (watch
// errors, throttling, leader election); klog is routed into the same
// logger, so every line the agent writes is one JSON object with the same
// keys (component "client-go" for those).
func newLogger(w io.Writer, level slog.Level, node string) *slog.Logger {
	log := slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})).With("node", node)
	klog.SetSlogLogger(log.With("component", "client-go"))
	return log
}

func parseOptionalAddr(s, flag string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%s %q is not an IP address", flag, s)
	}
	return a, nil
}
