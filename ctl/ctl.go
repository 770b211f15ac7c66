// Package ctl is rhizomectl, the operator's command line: the node's state
// from its agent's local API (status, bgp peers, routes), and cluster-wide
// views and repairs through the API server as later commands add them.
package ctl

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/rhizome-net/rhizome/agent/agentapi"
	"github.com/rhizome-net/rhizome/internal/version"
)

type globals struct {
	socket     string
	kubeconfig string
	output     string
	out        io.Writer
}

// NewCommand returns the rhizomectl root command.
func NewCommand() *cobra.Command {
	g := &globals{out: os.Stdout}
	root := &cobra.Command{
		Use:           "rhizomectl",
		Short:         "Inspect and operate Rhizome",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.Get().String(),
		PersistentPreRun: func(cmd *cobra.Command, _ []string) {
			g.out = cmd.OutOrStdout()
		},
	}
	root.SetVersionTemplate("{{.Name}} {{.Version}}\n")
	root.PersistentFlags().StringVar(&g.socket, "socket", agentapi.DefaultSocket, "the local agent's API socket")
	root.PersistentFlags().StringVar(&g.kubeconfig, "kubeconfig", "", "kubeconfig for the cluster-wide commands (default $KUBECONFIG, ~/.kube/config, in-cluster)")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "", "output format: json, or a table when empty")
	bgp := &cobra.Command{Use: "bgp", Short: "BGP state of this node"}
	bgp.AddCommand(&cobra.Command{
		Use:   "peers",
		Short: "This node's BGP sessions (like calicoctl node status)",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return g.withStatus(cmd.Context(), g.printPeers) },
	})
	root.AddCommand(
		&cobra.Command{
			Use:   "status",
			Short: "This node's agent, BGP sessions, routes and blocks",
			Args:  cobra.NoArgs,
			RunE:  func(cmd *cobra.Command, _ []string) error { return g.withStatus(cmd.Context(), g.printStatus) },
		},
		bgp,
		g.poolsCommand(),
		g.ipamCommand(),
		g.doctorCommand(),
		g.versionCommand(),
		&cobra.Command{
			Use:   "routes",
			Short: "The kernel routes this node's agent programs",
			Args:  cobra.NoArgs,
			RunE:  func(cmd *cobra.Command, _ []string) error { return g.withStatus(cmd.Context(), g.printRoutes) },
		},
	)
	return root
}

// withStatus fetches the node's status from its agent and renders it.
func (g *globals) withStatus(ctx context.Context, render func(*agentapi.StatusResponse) error) error {
	client, conn, err := agentapi.Dial(g.socket)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := client.Status(ctx, &agentapi.StatusRequest{})
	if err != nil {
		return fmt.Errorf("asking the agent at %s: %w", g.socket, err)
	}
	if g.output == "json" {
		b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(st)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(g.out, "%s\n", b)
		return err
	}
	if g.output != "" {
		return fmt.Errorf("-o %q: want json or nothing", g.output)
	}
	return render(st)
}

func (g *globals) printStatus(st *agentapi.StatusResponse) error {
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
	fmt.Fprintf(g.out, "Rhizome agent on %s is %s\n", st.GetNodeName(), ready)
	fmt.Fprintf(g.out, "Router ID %s, AS %d; %d/%d BGP sessions established; %d routes programmed\n",
		st.GetRouterId(), st.GetAsNumber(), established, len(st.GetSessions()), len(st.GetRoutes()))
	if len(st.GetBlocks()) > 0 {
		fmt.Fprintf(g.out, "Blocks: %s\n", strings.Join(st.GetBlocks(), " "))
	}
	if len(st.GetBorrowedAddresses()) > 0 {
		fmt.Fprintf(g.out, "Borrowed addresses: %s\n", strings.Join(st.GetBorrowedAddresses(), " "))
	}
	fmt.Fprintln(g.out)
	return g.printPeers(st)
}

func (g *globals) printPeers(st *agentapi.StatusResponse) error {
	sessions := append([]*agentapi.Session(nil), st.GetSessions()...)
	sort.Slice(sessions, func(i, j int) bool { return sessions[i].GetPeer() < sessions[j].GetPeer() })
	tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tAS\tKIND\tSTATE\tSINCE\tRECEIVED\tACCEPTED\tADVERTISED\tINFO")
	for _, s := range sessions {
		since := "-"
		if s.GetSinceUnix() > 0 {
			since = time.Since(time.Unix(s.GetSinceUnix(), 0)).Round(time.Second).String()
		}
		info := s.GetLastError()
		if info == "" {
			info = s.GetSource()
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", s.GetPeer(), s.GetPeerAs(), s.GetKind(), s.GetState(), since,
			s.GetPrefixesReceived(), s.GetPrefixesAccepted(), s.GetPrefixesAdvertised(), info)
	}
	return tw.Flush()
}

func (g *globals) printRoutes(st *agentapi.StatusResponse) error {
	tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PREFIX\tNEXT HOPS\tENCAPSULATION\tDEVICE")
	for _, r := range st.GetRoutes() {
		nh := strings.Join(r.GetNextHops(), ",")
		if nh == "" {
			nh = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.GetPrefix(), nh, r.GetEncapsulation(), r.GetDevice())
	}
	return tw.Flush()
}
