package ctl

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/ctl/doctor"
)

// ExitError carries a process exit code other than 1 (rhizomectl doctor's
// severities); main exits with Code after printing Err, if any.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// Doctor exit codes: 0 nothing found, 1 the doctor could not run, 2 only
// warnings, 3 at least one error.
const (
	exitWarnings = 2
	exitErrors   = 3
)

// doctorDoc is rhizomectl doctor -o json|yaml.
type doctorDoc struct {
	Node     string           `json:"node"`
	Findings []doctor.Finding `json:"findings"`
}

// envCNIConfDir points the doctor at a CNI configuration directory (a lab
// node's); by default it is the agent pod's mount of the host's, else the
// host's own.
const envCNIConfDir = "RHIZOME_CNI_CONF_DIR"

func defaultCNIConfDir() string {
	if d := os.Getenv(envCNIConfDir); d != "" {
		return d
	}
	for _, d := range []string{"/host/etc/cni/net.d", "/etc/cni/net.d"} {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			return d
		}
	}
	return ""
}

func (g *globals) doctorCommand() *cobra.Command {
	var node, cniDir string
	var noProbes bool
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check this node for common pod-network faults and say how to fix each; exit 2 on warnings, 3 on errors",
		Long: `Check the node it runs on (run it in the node's agent pod:
kubectl -n rhizome-system exec <agent pod> -- rhizomectl doctor) for the faults
pod networks suffer from most, and say how to fix each. Exit code: 0 nothing
found, 1 the doctor could not run, 2 warnings only, 3 errors.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in, err := g.doctorInput(cmd.Context(), node)
			if err != nil {
				return err
			}
			in.CNIConfDir, in.NoProbes = cniDir, noProbes
			findings := doctor.Run(cmd.Context(), in)
			if err := g.printFindings(in.Node, findings); err != nil {
				return err
			}
			return doctorExit(in.Node, findings)
		},
	}
	cmd.Flags().StringVar(&node, "node", os.Getenv(envNode), "this node's name (default: $"+envNode+", what the agent reports, else the hostname)")
	cmd.Flags().StringVar(&cniDir, "cni-conf-dir", defaultCNIConfDir(), "the container runtime's CNI configuration directory ($"+envCNIConfDir+"; empty skips that check)")
	cmd.Flags().BoolVar(&noProbes, "no-probes", false, "send no packets (skips the probe and path-mtu checks)")
	return cmd
}

func (g *globals) printFindings(node string, findings []doctor.Finding) error {
	return g.emit(doctorDoc{Node: node, Findings: append([]doctor.Finding{}, findings...)}, func(w io.Writer, _ bool) error {
		for _, f := range findings {
			fmt.Fprintf(w, "- [%s] %s: %s\n", f.Check, f.Severity, f.Message)
		}
		if len(findings) == 0 {
			fmt.Fprintf(w, "doctor: no problems found on node %s\n", node)
		}
		return nil
	})
}

func doctorExit(node string, findings []doctor.Finding) error {
	switch doctor.Worst(findings) {
	case doctor.Error:
		return &ExitError{Code: exitErrors, Err: fmt.Errorf("doctor: %d finding(s) on node %s, errors among them", len(findings), node)}
	case doctor.Warning:
		return &ExitError{Code: exitWarnings, Err: fmt.Errorf("doctor: %d warning(s) on node %s", len(findings), node)}
	}
	return nil
}

// doctorInput gathers the agent's status, the kernel and the cluster's
// pools and blocks. Sources that fail become findings, not errors.
func (g *globals) doctorInput(ctx context.Context, node string) (doctor.Input, error) {
	in := doctor.Input{Node: node}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	in.Agent, in.AgentErr = g.localStatus(sctx)
	cancel()
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
