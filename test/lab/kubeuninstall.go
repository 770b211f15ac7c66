package lab

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/test/controlplane"
)

// UninstallCommands are docs/install.md's cluster-side uninstall steps, in
// order, for an overlay; "kubectl" is the user's. A test keeps the document
// and this list equal. The pools go first, while the agents still run: the
// elected agent removes a deleted pool's blocks and its finalizer once no
// address of it is allocated (the pods that used it are gone), so nothing is
// left Terminating when the DaemonSet and the CRDs go. The admission policy
// refuses to delete a pool whose status still counts addresses, so the
// first step waits for the status to catch up with the deleted pods.
func UninstallCommands(overlay string) [][]string {
	return [][]string{
		{"kubectl", "wait", "--for=jsonpath={.status.addressesInUse}=0", "ippools", "--all", "--timeout=60s"},
		{"kubectl", "delete", "ippools", "--all", "--wait", "--timeout=60s"},
		{"kubectl", "delete", "-k", "deploy/overlays/" + overlay, "--ignore-not-found", "--wait", "--timeout=60s"},
		{"kubectl", "delete", "-k", "deploy/crds", "--wait", "--timeout=60s"},
	}
}

// NodeCleanupScript is what docs/install.md has run on every node after
// the cluster-side steps: the state the agent leaves on a host when it stops
// (on purpose, so that a restart or an upgrade loses no route) and the
// plugin the init container installed.
const NodeCleanupScript = `rm -f /etc/cni/net.d/10-rhizome.conflist /opt/cni/bin/rhizome
ip -4 route flush proto 114
ip -6 route flush proto 114
ip link delete vxlan.rhizome 2>/dev/null || true
nft delete table inet rhizome-nat 2>/dev/null || true`

// Uninstall removes the lab's workloads (their pods use Rhizome's
// addresses, so an uninstall starts without them), then runs
// UninstallCommands with the control plane's kubectl and NodeCleanupScript
// on every node.
func (l *Lab) Uninstall(ctx context.Context) error {
	c, err := clientsFor(l.State.Kubeconfig)
	if err != nil {
		return err
	}
	for _, n := range l.Plan.Nodes {
		if err := c.kube.AppsV1().Deployments(WorkloadNamespace).Delete(ctx, workloadName(n.Name), metav1.DeleteOptions{}); err != nil {
			return err
		}
	}
	if err := poll(ctx, 2*time.Minute, func() (bool, error) {
		pods, err := c.kube.CoreV1().Pods(WorkloadNamespace).List(ctx, metav1.ListOptions{LabelSelector: workloadLabel})
		return err == nil && len(pods.Items) == 0, err
	}, func() string { return "workload pods still there" }); err != nil {
		return err
	}
	root, err := controlplane.RepoRoot()
	if err != nil {
		return err
	}
	for _, argv := range UninstallCommands(overlayFor(l.State.Options)) {
		args := argv[1:]
		for i, a := range args {
			if strings.HasPrefix(a, "deploy/") {
				args[i] = filepath.Join(root, a)
			}
		}
		if out, err := l.Kubectl(ctx, args...); err != nil {
			return fmt.Errorf("uninstall step %s: %w", strings.Join(argv, " "), err)
		} else {
			fmt.Fprintf(l.Out, "%s", out)
		}
	}
	for _, n := range l.Plan.Nodes {
		if out, err := l.Exec(ctx, n.Name, "sh", "-c", NodeCleanupScript); err != nil {
			return fmt.Errorf("cleaning up %s: %w: %s", n.Name, err, out)
		}
	}
	return nil
}

// RhizomeStateOn lists the Rhizome state left on a node: the CNI plugin and
// its configuration, routes of protocol 114, the VXLAN device, the nftables
// table, and a running agent.
func (l *Lab) RhizomeStateOn(ctx context.Context, node string) []string {
	var left []string
	check := func(what string, argv ...string) {
		out, err := l.Exec(ctx, node, argv...)
		if err != nil {
			left = append(left, fmt.Sprintf("%s: %v", what, err))
		} else if s := strings.TrimSpace(string(out)); s != "" {
			left = append(left, what+": "+s)
		}
	}
	check("CNI files", "sh", "-c", "ls /etc/cni/net.d/*rhizome* /opt/cni/bin/rhizome 2>/dev/null || true")
	check("IPv4 routes of protocol 114", "ip", "-4", "route", "show", "proto", "114")
	check("IPv6 routes of protocol 114", "ip", "-6", "route", "show", "proto", "114")
	check("tunnel devices", "sh", "-c", "ip -o link show vxlan.rhizome 2>/dev/null || true")
	check("nftables table", "sh", "-c", "nft list table inet rhizome-nat 2>/dev/null || true")
	check("agent", "sh", "-c", "ss -ltnH 'sport = :179' 2>/dev/null")
	return left
}
