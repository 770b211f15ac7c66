// Package lab is the rhizome-lab command: a whole Rhizome cluster on one
// machine, built from a real control plane, network namespaces as nodes and
// routers (real BIRD or FRR ToRs), real agent processes and pods created
// through the CNI plugin exactly as a runtime would. It is both the demo and
// the end-to-end test bed (package test/e2e drives it as a library).
package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// DefaultDir is where the lab keeps its state unless RHIZOME_LAB_DIR says
// otherwise.
const DefaultDir = "/tmp/rhizome-lab"

// Dir returns the lab's state directory.
func Dir() string {
	if d := os.Getenv("RHIZOME_LAB_DIR"); d != "" {
		return d
	}
	return DefaultDir
}

func controlPlaneDir() string { return filepath.Join(Dir(), "controlplane") }

// binDir is where the lab finds rhizome-agent, rhizome-cni and rhizomectl:
// $RHIZOME_BIN, or next to the rhizome-lab executable (bin/).
func binDir() string {
	if d := os.Getenv("RHIZOME_BIN"); d != "" {
		return d
	}
	self, err := os.Executable()
	if err != nil {
		return "bin"
	}
	return filepath.Dir(self)
}

// NewCommand returns the rhizome-lab root command.
func NewCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "rhizome-lab",
		Short:         "Run a whole Rhizome cluster on one machine",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newUpCommand(), newDownCommand(), newStatusCommand(), newExecCommand(),
		newPodsCommand(), newEnvCommand(), newMatrixCommand(), newControlPlaneCommand(), newAPIProxyCommand(), newEgressCommand())
	return root
}

func newUpCommand() *cobra.Command {
	o := Options{Nodes: 3, Racks: 1, ToR: "none", Mode: "mesh", Encap: "none", Pods: 0}
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start the control plane, namespaces, ToRs, agents and pods (cleans up an earlier lab first)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Kubelet && !cmd.Flags().Changed("encap") {
				o.Encap = "" // what the overlay's IPPool says
			}
			l := New(Dir(), binDir(), DefaultPrefix, os.Stdout)
			return l.Up(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Nodes, "nodes", o.Nodes, "number of nodes")
	f.IntVar(&o.Racks, "racks", o.Racks, "number of racks (one L2 subnet and ToR each)")
	f.StringVar(&o.ToR, "tor", o.ToR, "ToR routers: bird, frr or none (plain routers)")
	f.StringVar(&o.Mode, "mode", o.Mode, "mesh (node-to-node full mesh) or rr (route reflectors)")
	f.StringVar(&o.Encap, "encap", o.Encap, "none, vxlan or ipip (CrossSubnet with several racks)")
	f.IntVar(&o.Pods, "pods", o.Pods, "pods per node")
	f.IntVar(&o.BlockSize, "block-size", 26, "block size of the default pool")
	f.BoolVar(&o.Kubelet, "kubelet", false, "real nodes: containerd and a kubelet per node namespace, Rhizome installed from a deploy/ overlay, pods from Deployments")
	f.StringVar(&o.Image, "image", "bin/image/rhizome/rhizome.oci.tar", "with --kubelet: the Rhizome image archive (make image)")
	f.StringVar(&o.BFD, "bfd", "", "BFD on every session, as TXxMULT (e.g. 300x3: 300 ms, multiplier 3), the ToRs' too; empty: off")
	return cmd
}

func newDownCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Remove everything the lab made: processes (by PID), namespaces, files",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return New(Dir(), binDir(), DefaultPrefix, os.Stdout).Down()
		},
	}
}

func newEnvCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "env",
		Short: "Print export KUBECONFIG=<path> for the lab's control plane",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			st, err := loadState(Dir())
			if err != nil {
				return err
			}
			fmt.Printf("export KUBECONFIG=%s\n", st.Kubeconfig)
			return nil
		},
	}
}

func newPodsCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "pods",
		Short: "List the lab's pods (name, node, namespace path, addresses)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := loadState(Dir())
			if err != nil {
				return err
			}
			if st.Options.Kubelet {
				l, err := Open(Dir(), binDir(), os.Stdout)
				if err != nil {
					return err
				}
				if err := l.SyncPods(cmd.Context()); err != nil {
					return err
				}
				st = l.State
			}
			switch output {
			case "json":
				pods := st.Pods
				if pods == nil {
					pods = []PodRecord{}
				}
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(pods)
			case "", "wide":
				tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tNODE\tADDRESSES\tNETNS")
				for _, p := range st.Pods {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Name, p.Node, strings.Join(p.Addresses, ","), p.NetNS)
				}
				return tw.Flush()
			}
			return fmt.Errorf("-o %q: want json or wide", output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json or wide")
	return cmd
}

func newExecCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "exec NODE|POD -- CMD [ARGS...]",
		Short: "Run a command in a node's or a pod's network namespace",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := Open(Dir(), binDir(), os.Stdout)
			if err != nil {
				return err
			}
			if l.State.Options.Kubelet {
				if err := l.SyncPods(cmd.Context()); err != nil {
					return err
				}
			}
			target := args[0]
			known := strings.HasPrefix(target, "tor-") || target == "spine"
			if _, ok := l.Plan.Node(target); ok {
				known = true
			}
			for _, p := range l.State.Pods {
				known = known || p.Name == target
			}
			if !known {
				return fmt.Errorf("no node, pod or router named %q in the lab", target)
			}
			argv := l.execArgv(target, args[1:]...)
			bin, err := exec.LookPath(argv[0])
			if err != nil {
				return err
			}
			return syscall.Exec(bin, argv, execEnv(l, target))
		},
	}
}

// execEnv is the environment of rhizome-lab exec: the lab's binaries first
// on PATH, and for a node what rhizomectl reads to find that node's agent
// socket, log and CNI directory and the lab's API server (reachable from
// the node's namespace through its API proxy) without flags.
func execEnv(l *Lab, target string) []string {
	env := append(os.Environ(), "PATH="+binDir()+":"+os.Getenv("PATH"))
	if l.State.Kubeconfig != "" {
		env = append(env, "KUBECONFIG="+l.State.Kubeconfig)
	}
	if _, ok := l.Plan.Node(target); ok {
		env = append(env, "RHIZOME_AGENT_SOCKET="+l.agentSocket(target), "RHIZOME_NODE_NAME="+target, "RHIZOME_CNI_CONF_DIR="+l.cniConfDir(target))
		if !l.State.Options.Kubelet {
			env = append(env, "RHIZOME_AGENT_LOG="+l.agentLog(target))
		}
	}
	return env
}

func newStatusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Print BGP sessions and routes per node (through rhizomectl)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := Open(Dir(), binDir(), os.Stdout)
			if err != nil {
				return err
			}
			return l.Status(cmd.Context(), os.Stdout)
		},
	}
}

// Status prints each node's state through rhizomectl, run inside the node's
// namespace against its agent's socket, and each ToR's BGP summary.
func (l *Lab) Status(ctx context.Context, w *os.File) error {
	ctl := filepath.Join(l.BinDir, "rhizomectl")
	for _, n := range l.Plan.Nodes {
		fmt.Fprintf(w, "=== %s (%s, rack %d)\n", n.Name, n.Addr.Addr(), n.Rack)
		argv := InNetNS(l.nodeNS(n.Name), ctl, "--socket", l.agentSocket(n.Name), "status")
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
		w.Write(out)
		if err != nil {
			fmt.Fprintf(w, "  (rhizomectl: %v)\n", err)
		}
	}
	if l.State.Options.ToR != "none" {
		for _, r := range l.Plan.Racks {
			fmt.Fprintf(w, "=== tor-%d (AS %d, %s)\n", r.Index, r.ToRAS, l.State.Options.ToR)
			cmd := "show protocols"
			if l.State.Options.ToR == "frr" {
				cmd = "show bgp summary"
			}
			out, _ := l.torShow(r.Index, cmd)
			w.Write(out)
		}
	}
	return nil
}
