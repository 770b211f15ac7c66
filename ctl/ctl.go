// Package ctl is rhizomectl, the operator's command line, also installed as
// the kubectl plugin kubectl-rhizome: a node's own state from its agent
// (status, bgp peers, routes: through the local socket on the node, or
// through the API server with --node NAME), cluster-wide views from the
// API (nodes, bgp peers -A, pools, ipam), the doctor, version and a
// diagnostics bundle. Every command prints a table, or JSON or YAML with
// -o (output.go).
package ctl

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/agent/agentapi"
	"github.com/rhizome-net/rhizome/deploy"
	"github.com/rhizome-net/rhizome/internal/version"
)

type globals struct {
	socket     string
	kubeconfig string
	context    string
	output     string
	node       string
	namespace  string
	out        io.Writer
	errOut     io.Writer
	cc         *clusterClients
}

// PluginName is the executable name kubectl runs for `kubectl rhizome`.
const PluginName = "kubectl-rhizome"

// NewCommand returns the rhizomectl root command. Invoked as
// kubectl-rhizome, its help and completion say `kubectl rhizome`.
func NewCommand() *cobra.Command {
	g := &globals{out: os.Stdout, errOut: os.Stderr}
	root := &cobra.Command{
		Use:           "rhizomectl",
		Short:         "Inspect and operate Rhizome",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.Get().String(),
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			g.out, g.errOut = cmd.OutOrStdout(), cmd.ErrOrStderr()
			return g.checkOutput()
		},
	}
	if filepath.Base(os.Args[0]) == PluginName {
		root.Annotations = map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl rhizome"}
	}
	root.SetVersionTemplate("{{.Name}} {{.Version}}\n")
	pf := root.PersistentFlags()
	pf.StringVar(&g.socket, "socket", defaultSocket(), "the local agent's API socket ($"+envSocket+")")
	pf.StringVar(&g.kubeconfig, "kubeconfig", "", "kubeconfig for the cluster-wide commands and --node (default $KUBECONFIG, ~/.kube/config, in-cluster)")
	pf.StringVar(&g.context, "context", "", "the kubeconfig context to use (default: its current context)")
	pf.StringVarP(&g.output, "output", "o", "", "output format: json, yaml, wide, or a table when empty")
	pf.StringVarP(&g.namespace, "namespace", "n", deploy.AgentNamespace, "the namespace of the agent pods")
	bgp := &cobra.Command{Use: "bgp", Short: "BGP sessions of a node, or of every node (-A)"}
	var allPeers bool
	peers := &cobra.Command{
		Use:   "peers",
		Short: "BGP sessions: this node's (from its agent), --node NAME's, or every node's (-A, from the RhizomeNode status)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if allPeers {
				return g.clusterPeers(cmd.Context())
			}
			st, err := g.nodeStatus(cmd.Context())
			if g.node == "" && errNoLocalAgent(err) {
				return g.fallBackToCluster(err, func() error { return g.clusterPeers(cmd.Context()) })
			}
			if err != nil {
				return err
			}
			return g.printPeers(peerRowsFromAgent(st))
		},
	}
	peers.Flags().BoolVarP(&allPeers, "all-nodes", "A", false, "every node's sessions, from the API server")
	g.nodeFlag(peers)
	bgp.AddCommand(peers)

	var allStatus bool
	status := &cobra.Command{
		Use:   "status",
		Short: "A node's agent, BGP sessions, routes and blocks; with -A every node's summary",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if allStatus {
				return g.printNodes(cmd.Context())
			}
			st, err := g.nodeStatus(cmd.Context())
			if g.node == "" && errNoLocalAgent(err) {
				return g.fallBackToCluster(err, func() error { return g.printNodes(cmd.Context()) })
			}
			if err != nil {
				return err
			}
			return g.emitProto(st, func(w io.Writer, wide bool) error { return g.printStatus(w, st, wide) })
		},
	}
	status.Flags().BoolVarP(&allStatus, "all-nodes", "A", false, "every node's summary, from the API server (as rhizomectl nodes)")
	g.nodeFlag(status)

	routes := &cobra.Command{
		Use:   "routes",
		Short: "The kernel routes a node's agent programs (this node, or --node NAME)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := g.nodeStatus(cmd.Context())
			if err != nil {
				return err
			}
			return g.printRoutes(st)
		},
	}
	g.nodeFlag(routes)

	nodes := &cobra.Command{
		Use:   "nodes",
		Short: "Every node: readiness, BGP sessions, routes and blocks (from the RhizomeNode status)",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return g.printNodes(cmd.Context()) },
	}
	root.AddCommand(status, bgp, routes, nodes,
		g.poolsCommand(),
		g.ipamCommand(),
		g.doctorCommand(),
		g.versionCommand(),
		g.diagsCommand(),
	)
	return root
}

// nodeFlag adds --node NAME, completed from the cluster's RhizomeNodes.
func (g *globals) nodeFlag(cmd *cobra.Command) {
	cmd.Flags().StringVar(&g.node, "node", "", "ask this node's agent, through the API server (default: the agent on this node, through its socket)")
	cmd.RegisterFlagCompletionFunc("node", func(cmd *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
		c, err := g.clients()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		l, err := c.rz.RhizomeV1alpha1().RhizomeNodes().List(cmd.Context(), metav1.ListOptions{})
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, n := range l.Items {
			if strings.HasPrefix(n.Name, prefix) {
				out = append(out, n.Name)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	})
}

// fallBackToCluster: without an agent on this machine (a workstation, the
// kubectl plugin) the node-local commands show every node instead, when
// the cluster can be read; otherwise both reasons are given.
func (g *globals) fallBackToCluster(local error, view func() error) error {
	if _, err := g.clients(); err != nil {
		return fmt.Errorf("%w; and no cluster for a cluster-wide view: %v (use --node NAME or -A with --kubeconfig)", local, err)
	}
	return view()
}

func (g *globals) printStatus(w io.Writer, st *agentapi.StatusResponse, wide bool) error {
	ready := "ready"
	if !st.GetReady() {
		ready = "NOT READY: " + st.GetNotReadyReason()
	}
	established := 0
	for _, s := range st.GetSessions() {
		if s.GetState() == "Established" {
			established++
		}
	}
	fmt.Fprintf(w, "Rhizome agent on %s is %s\n", st.GetNodeName(), ready)
	fmt.Fprintf(w, "Router ID %s, AS %d; %d/%d BGP sessions established; %d routes programmed\n",
		st.GetRouterId(), st.GetAsNumber(), established, len(st.GetSessions()), len(st.GetRoutes()))
	if len(st.GetBlocks()) > 0 {
		fmt.Fprintf(w, "Blocks: %s\n", strings.Join(st.GetBlocks(), " "))
	}
	if len(st.GetBorrowedAddresses()) > 0 {
		fmt.Fprintf(w, "Borrowed addresses: %s\n", strings.Join(st.GetBorrowedAddresses(), " "))
	}
	if wide {
		fmt.Fprintf(w, "Underlay %s on %s (MTU %d), pod MTU %d, route protocol %d table %d\n", st.GetNodeAddress(), st.GetUnderlayInterface(),
			st.GetUnderlayMtu(), st.GetPodMtu(), st.GetRouteProtocol(), st.GetRouteTable())
		for _, d := range st.GetDevices() {
			fmt.Fprintf(w, "Device %s (%s, MTU %d, %s)\n", d.GetName(), d.GetType(), d.GetMtu(), orDash(d.GetAddress()))
		}
		for _, c := range st.GetConflicts() {
			fmt.Fprintf(w, "Conflict: %s is held by another protocol's route\n", c)
		}
		for _, e := range st.GetRouteErrors() {
			fmt.Fprintf(w, "Route error: %s\n", e)
		}
	}
	fmt.Fprintln(w)
	return writePeerTable(w, peerRowsFromAgent(st), false, wide)
}

// routeRow is one line of rhizomectl routes -o json|yaml.
type routeRow struct {
	Node          string   `json:"node"`
	Prefix        string   `json:"prefix"`
	NextHops      []string `json:"nextHops"`
	Encapsulation string   `json:"encapsulation"`
	Device        string   `json:"device,omitempty"`
}

func (g *globals) printRoutes(st *agentapi.StatusResponse) error {
	rows := make([]routeRow, 0, len(st.GetRoutes()))
	for _, r := range st.GetRoutes() {
		nh := r.GetNextHops()
		if nh == nil {
			nh = []string{}
		}
		rows = append(rows, routeRow{Node: st.GetNodeName(), Prefix: r.GetPrefix(), NextHops: nh, Encapsulation: r.GetEncapsulation(), Device: r.GetDevice()})
	}
	sort.SliceStable(rows, func(i, j int) bool { return lessCIDR(rows[i].Prefix, rows[j].Prefix) })
	return g.emit(listOf(rows), func(w io.Writer, wide bool) error {
		head := "PREFIX\tNEXT HOPS\tENCAPSULATION\tDEVICE"
		if wide {
			head = "NODE\t" + head
		}
		fmt.Fprintln(w, head)
		for _, r := range rows {
			nh := strings.Join(r.NextHops, ",")
			if nh == "" {
				nh = "-"
			}
			line := fmt.Sprintf("%s\t%s\t%s\t%s", r.Prefix, nh, r.Encapsulation, orDash(r.Device))
			if wide {
				line = r.Node + "\t" + line
			}
			fmt.Fprintln(w, line)
		}
		return nil
	})
}

// since renders how long ago t was, "-" for never.
func since(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return time.Since(*t).Round(time.Second).String()
}
