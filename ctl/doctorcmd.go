package ctl

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/agent/agentapi"
	"github.com/rhizome-net/rhizome/ctl/doctor"
)

func (g *globals) doctorCommand() *cobra.Command {
	var node string
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check this node for common pod-network faults and say how to fix each; exit 1 if any",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in, err := g.doctorInput(cmd.Context(), node)
			if err != nil {
				return err
			}
			findings := doctor.Run(cmd.Context(), in)
			for _, f := range findings {
				fmt.Fprintf(g.out, "- [%s] %s\n", f.Check, f.Message)
			}
			if len(findings) > 0 {
				return fmt.Errorf("doctor: %d finding(s) on node %s", len(findings), in.Node)
			}
			fmt.Fprintf(g.out, "doctor: no problems found on node %s\n", in.Node)
			return nil
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "this node's name (default: what the agent reports, else the hostname)")
	return cmd
}

// doctorInput gathers the agent's status, the kernel and the cluster's
// pools and blocks. Sources that fail become findings, not errors.
func (g *globals) doctorInput(ctx context.Context, node string) (doctor.Input, error) {
	in := doctor.Input{Node: node}
	if client, conn, err := agentapi.Dial(g.socket); err != nil {
		in.AgentErr = err
	} else {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		in.Agent, in.AgentErr = client.Status(sctx, &agentapi.StatusRequest{})
		cancel()
		conn.Close()
	}
	if in.Node == "" && in.Agent != nil {
		in.Node = in.Agent.GetNodeName()
	}
	if in.Node == "" {
		in.Node, _ = os.Hostname()
	}
	k, err := doctor.NewKernel("")
	if err != nil {
		return in, err
	}
	in.Kernel = k
	if c, err := g.clients(); err == nil {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		pools, perr := c.rz.RhizomeV1alpha1().IPPools().List(cctx, metav1.ListOptions{})
		blocks, berr := c.rz.RhizomeV1alpha1().IPAMBlocks().List(cctx, metav1.ListOptions{})
		if perr == nil && berr == nil {
			in.Cluster = &doctor.Cluster{Pools: pools.Items, Blocks: blocks.Items}
		}
	}
	return in, nil
}
