// Package doctor checks one node for the faults that pod networks suffer
// from most — missing routes, forwarding off, strict reverse-path filters,
// MTU black holes, BGP sessions down, overlapping pools, NAT rules missing,
// foreign routes in the way — and explains each finding in one sentence
// with the fix. rhizomectl doctor runs it on the node it is started on.
//
// It reads three sources, each behind a seam so that tests can point it at
// a network namespace and an API server of their own: the agent's local
// API (Status), the kernel (Kernel) and the cluster's objects (Cluster).
package doctor

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/rhizome-net/rhizome/agent/agentapi"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// Severity grades a finding; rhizomectl doctor's exit code follows the
// worst one (docs/troubleshooting.md).
type Severity string

const (
	// Error: pod traffic is broken or will be (no route, packets dropped).
	Error Severity = "error"
	// Warning: something is degraded, unverified or likely to break.
	Warning Severity = "warning"
)

// Finding is one problem, explained.
type Finding struct {
	// Check names the check that found it (see checks).
	Check string `json:"check"`
	// Severity is error or warning.
	Severity Severity `json:"severity"`
	// Message says what is wrong and how to fix it, in one sentence.
	Message string `json:"message"`
}

func (f Finding) String() string { return f.Check + ": " + f.Message }

// Input is what the doctor looks at.
type Input struct {
	// Node is this node's name.
	Node string
	// Agent is the agent's status; nil when the agent did not answer
	// (AgentErr says why).
	Agent    *agentapi.StatusResponse
	AgentErr error
	// Kernel of this node.
	Kernel Kernel
	// Cluster objects; nil without API access (the checks that need them
	// are skipped and a finding says so).
	Cluster *Cluster
	// ProbeTimeout bounds TCP probes of BGP peers and each ICMP probe
	// (default 2s).
	ProbeTimeout time.Duration
	// CNIConfDir is the container runtime's CNI configuration directory
	// (empty: the CNI check is skipped).
	CNIConfDir string
	// NoProbes skips the checks that send packets (probe, path-mtu).
	NoProbes bool
}

// Cluster are the objects the doctor needs from the API server.
type Cluster struct {
	Pools  []v1alpha1.IPPool
	Blocks []v1alpha1.IPAMBlock
}

// Run runs every check and returns the findings, sorted by check.
func Run(ctx context.Context, in Input) []Finding {
	if in.ProbeTimeout == 0 {
		in.ProbeTimeout = 2 * time.Second
	}
	var out []Finding
	add := func(check string, sev Severity, format string, args ...any) {
		out = append(out, Finding{Check: check, Severity: sev, Message: fmt.Sprintf(format, args...)})
	}
	if in.Agent == nil {
		add("agent", Error, "the rhizome agent of this node does not answer (%v): nothing is advertised or routed for this node until it runs; check its pod with kubectl -n rhizome-system get pods -o wide and its logs", in.AgentErr)
	}
	if in.Cluster == nil {
		add("cluster", Warning, "the API server could not be read, so pools, blocks and pod routes were not checked; pass --kubeconfig or run where in-cluster credentials exist")
	}
	for _, c := range checks {
		for _, f := range c.run(ctx, &in) {
			out = append(out, Finding{Check: c.name, Severity: c.severity, Message: f})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Check < out[j].Check })
	return out
}

type check struct {
	name     string
	severity Severity
	run      func(context.Context, *Input) []string
}

// checks run in this order; each returns one sentence per finding.
var checks = []check{
	{"forwarding", Error, checkForwarding},
	{"firewall", Error, checkFirewall},
	{"rp_filter", Warning, checkRPFilter},
	{"mtu", Error, checkMTU},
	{"kernel-modules", Error, checkModules},
	{"cni-config", Error, checkCNIConfig},
	{"bgp", Error, checkBGP},
	{"pools", Error, checkPools},
	{"nat", Error, checkNAT},
	{"return-path", Warning, checkReturnPath},
	{"peer-routes", Error, checkPeerRoutes},
	{"pod-routes", Error, checkPodRoutes},
	{"pod-interfaces", Error, checkPodInterfaces},
	{"route-conflict", Warning, checkConflicts},
	{"route-errors", Error, checkRouteErrors},
	{"probe", Error, checkProbe},
	{"path-mtu", Error, checkPathMTU},
}

// Worst is the worst severity among findings, "" for none.
func Worst(fs []Finding) Severity {
	var w Severity
	for _, f := range fs {
		if f.Severity == Error {
			return Error
		}
		w = f.Severity
	}
	return w
}

func joinLimited(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return strings.Join(items[:n], ", ") + fmt.Sprintf(" and %d more", len(items)-n)
}
