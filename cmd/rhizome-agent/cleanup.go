package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/rhizome-net/rhizome/agent"
	"github.com/rhizome-net/rhizome/agent/agentapi"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/routes"
)

// newCleanupCommand is `rhizome-agent cleanup`: the host's half of an
// uninstall (agent.Cleanup). deploy/cleanup runs it on every node.
func newCleanupCommand() *cobra.Command {
	cfg := agent.CleanupConfig{
		AgentSocket: agentapi.DefaultSocket, AgentTimeout: time.Minute,
		GoBGPSocket: strings.TrimPrefix(agent.DefaultGoBGPAPIAddress, "unix://"),
		RouteTable:  v1alpha1.DefaultRouteTable, RouteProtocol: v1alpha1.DefaultRouteProtocol, VXLANDevice: routes.DefaultVXLANDevice,
		CNIBinDir: "/opt/cni/bin", CNIConfDir: "/etc/cni/net.d",
	}
	var check, wait bool
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "Remove Rhizome's state from this host after an uninstall: its routes, VXLAN device, NAT table and CNI plugin",
		Long: `Remove what Rhizome leaves on a host when its agent stops (on purpose: a restart
or upgrade must not drop a route): the routes of its protocol and table, the
VXLAN device, the natOutgoing nftables table, the CNI plugin and its conflist.
Run it once the DaemonSet is gone (it waits for a running agent to stop, then
refuses); deploy/cleanup runs it on every node. Nothing else is touched.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cfg.DryRun = check
			rep, err := agent.Cleanup(ctx, cfg)
			verb := "removed"
			if check {
				verb = "found"
			}
			for _, l := range rep.Lines() {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", verb, l)
			}
			if err != nil {
				return err
			}
			switch {
			case check && !rep.Empty():
				return fmt.Errorf("this host still holds Rhizome's state")
			case rep.Empty():
				fmt.Fprintln(cmd.OutOrStdout(), "nothing of Rhizome on this host")
			}
			if wait {
				<-ctx.Done()
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&check, "check", false, "only look: print what is left and exit 1 if anything is")
	f.BoolVar(&wait, "wait", false, "after success, stay until SIGTERM (a DaemonSet's pod is then Ready on a clean node)")
	f.StringVar(&cfg.AgentSocket, "agent-socket", cfg.AgentSocket, "the agent's socket: while an agent answers there, wait for it to stop")
	f.StringVar(&cfg.GoBGPSocket, "gobgp-socket", cfg.GoBGPSocket, "GoBGP's API socket: removed with its directory if nobody answers on it")
	f.DurationVar(&cfg.AgentTimeout, "agent-timeout", cfg.AgentTimeout, "how long to wait for a running agent to stop")
	f.Uint32Var(&cfg.RouteTable, "route-table", cfg.RouteTable, "the agent's kernel route table (BGPConfiguration routeTable)")
	f.Uint8Var(&cfg.RouteProtocol, "route-protocol", cfg.RouteProtocol, "the agent's kernel route protocol (BGPConfiguration routeProtocol)")
	f.StringVar(&cfg.VXLANDevice, "vxlan-device", cfg.VXLANDevice, "the VXLAN device's name")
	f.StringVar(&cfg.CNIBinDir, "cni-bin-dir", cfg.CNIBinDir, "where the plugin binary (rhizome) is")
	f.StringVar(&cfg.CNIConfDir, "cni-conf-dir", cfg.CNIConfDir, "where 10-rhizome.conflist is")
	return cmd
}
