package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/deploy"
	"github.com/rhizome-net/rhizome/test/controlplane"
)

// UninstallSteps are docs/install.md's cluster-side uninstall for an
// overlay, in order: shell command lines run from the repository's root,
// "kubectl" being the user's. A test keeps the document and this list equal.
//
// The pools go first, while the agents still run. Disabling them stops new
// allocations and makes every agent give back its tunnel addresses (agent,
// tunnel.go), so that once the pods are gone no address is in use: the
// admission policy refuses to delete a pool whose status counts addresses.
// The elected agent then removes the deleted pools' blocks and finalizers,
// and each agent its routes, VXLAN device and NAT table (no pool needs them
// any more), so nothing is left Terminating when the DaemonSet (foreground:
// its pods are gone before the command returns) and the CRDs go.
func UninstallSteps(overlay string) []string {
	return []string{
		`for p in $(kubectl get ippools -o name); do kubectl patch "$p" --type=merge -p '{"spec":{"disabled":true}}'; done`,
		"kubectl wait --for=jsonpath={.status.addressesInUse}=0 ippools --all --timeout=60s",
		"kubectl delete ippools --all --wait --timeout=60s",
		"kubectl delete -k deploy/overlays/" + overlay + " --cascade=foreground --ignore-not-found --wait --timeout=120s",
		"kubectl delete -k deploy/crds --wait --timeout=60s",
	}
}

// CleanupSteps are docs/install.md's host cleanup through deploy/cleanup's
// DaemonSet (`rhizome-agent cleanup` on every node; a pod is Ready once its
// node is clean), after UninstallSteps.
var CleanupSteps = []string{
	"kubectl apply -k deploy/cleanup",
	"kubectl -n rhizome-cleanup rollout status ds/rhizome-cleanup --timeout=120s",
	"kubectl delete -k deploy/cleanup --wait --timeout=60s",
}

// NodeCleanupScript is docs/install.md's alternative to CleanupSteps, run by
// hand on every node as root: the same removals as `rhizome-agent cleanup`
// with the default route protocol and table.
const NodeCleanupScript = `rm -f /etc/cni/net.d/10-rhizome.conflist /opt/cni/bin/rhizome
rm -rf /var/run/rhizome/agent.sock /var/run/rhizome/gobgp /var/run/rhizome/bfd-suspended.json
ip -4 route flush proto 114
ip -6 route flush proto 114
ip link delete vxlan.rhizome 2>/dev/null || true
nft delete table inet rhizome-nat 2>/dev/null || true`

// StepTime is how long one uninstall step took.
type StepTime struct {
	Step string
	Took time.Duration
}

// DeleteWorkloads deletes the lab's Deployments and waits until their pods
// are gone: an uninstall starts without pods that use Rhizome's addresses.
func (l *Lab) DeleteWorkloads(ctx context.Context) error {
	c, err := clientsFor(l.State.Kubeconfig)
	if err != nil {
		return err
	}
	for _, n := range l.Plan.Nodes {
		if err := c.kube.AppsV1().Deployments(WorkloadNamespace).Delete(ctx, workloadName(n.Name), metav1.DeleteOptions{}); err != nil {
			return err
		}
	}
	return poll(ctx, 2*time.Minute, func() (bool, error) {
		pods, err := c.kube.CoreV1().Pods(WorkloadNamespace).List(ctx, metav1.ListOptions{LabelSelector: workloadLabel})
		return err == nil && len(pods.Items) == 0, err
	}, func() string { return "workload pods still there" })
}

// UninstallCluster runs UninstallSteps with the control plane's kubectl and
// returns how long each took.
func (l *Lab) UninstallCluster(ctx context.Context) ([]StepTime, error) {
	return l.runSteps(ctx, UninstallSteps(overlayFor(l.State.Options)))
}

// CleanupHosts removes Rhizome's state from every node: through
// CleanupSteps (deploy/cleanup's DaemonSet, with the lab's image as a
// user's kustomization on top of it would name it), or byHand with
// NodeCleanupScript in each node.
func (l *Lab) CleanupHosts(ctx context.Context, byHand bool) ([]StepTime, error) {
	if !byHand {
		dir, err := l.writeCleanupKustomization()
		if err != nil {
			return nil, err
		}
		steps := make([]string, len(CleanupSteps))
		for i, s := range CleanupSteps {
			steps[i] = strings.ReplaceAll(s, "deploy/cleanup", dir)
		}
		return l.runSteps(ctx, steps)
	}
	start := time.Now()
	for _, n := range l.Plan.Nodes {
		if out, err := l.Exec(ctx, n.Name, "sh", "-c", NodeCleanupScript); err != nil {
			return nil, fmt.Errorf("cleaning up %s: %w: %s", n.Name, err, out)
		}
	}
	return []StepTime{{Step: "NodeCleanupScript on every node", Took: time.Since(start)}}, nil
}

// runSteps runs shell command lines from the repository's root with the
// control plane's kubectl first on PATH and the lab's kubeconfig.
func (l *Lab) runSteps(ctx context.Context, steps []string) ([]StepTime, error) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return nil, err
	}
	bins, err := controlplane.EnsureBinaries(ctx, nil)
	if err != nil {
		return nil, err
	}
	env := append(os.Environ(), "KUBECONFIG="+l.State.Kubeconfig, "PATH="+filepath.Dir(bins.Kubectl)+":"+os.Getenv("PATH"))
	var times []StepTime
	for _, s := range steps {
		start := time.Now()
		cmd := exec.CommandContext(ctx, "sh", "-ec", s)
		cmd.Dir, cmd.Env = root, env
		out, err := cmd.CombinedOutput()
		fmt.Fprintf(l.Out, "$ %s\n%s", s, out)
		if err != nil {
			return times, fmt.Errorf("uninstall step %q: %w: %s", s, err, out)
		}
		times = append(times, StepTime{Step: s, Took: time.Since(start)})
	}
	return times, nil
}

// CleanupKustomizationDir is where the lab's cleanup kustomization is
// written.
func (l *Lab) CleanupKustomizationDir() string { return filepath.Join(l.Dir, "cleanup") }

// writeCleanupKustomization writes a kustomization that takes
// deploy/cleanup as it is with the lab's image, as a user would.
func (l *Lab) writeCleanupKustomization() (string, error) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return "", err
	}
	dir := l.CleanupKustomizationDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	rel, err := filepath.Rel(dir, filepath.Join(root, "deploy", "cleanup"))
	if err != nil {
		return "", err
	}
	name, tag := splitRef(l.State.Images.Rhizome)
	k := fmt.Sprintf(`# rhizome-lab: deploy/cleanup with the lab's image; generated.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- %s
images:
- name: %s
  newName: %s
  newTag: %s
`, rel, deploy.ImageName(), name, tag)
	return dir, os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644)
}

// RhizomeStateOn lists the Rhizome state left on a node: the CNI plugin and
// its configuration, routes of protocol 114, the VXLAN device, the nftables
// table, pods' veths and host routes, the agent's socket, and a running
// agent.
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
	check("CNI files", "sh", "-c", "ls -A /etc/cni/net.d/ /opt/cni/bin/ | grep -i rhizome || true")
	check("IPv4 routes of protocol 114", "ip", "-4", "route", "show", "proto", "114", "table", "all")
	check("IPv6 routes of protocol 114", "ip", "-6", "route", "show", "proto", "114", "table", "all")
	check("tunnel devices", "sh", "-c", "ip -o link show vxlan.rhizome 2>/dev/null || true")
	check("nftables table", "sh", "-c", "nft list table inet rhizome-nat 2>/dev/null || true")
	check("pods' veths", "sh", "-c", "ip -o link show type veth | grep -v ' eth0@' || true")
	check("pods' host routes", "sh", "-c", "ip -4 route show proto static | grep '^10\\.244\\.' || true")
	check("agent socket", "sh", "-c", "ls -A /var/run/rhizome 2>/dev/null || true")
	check("agent", "sh", "-c", "ss -ltnH 'sport = :179' 2>/dev/null")
	return left
}

// PoolUse is what the pools' status says is in use, and what their blocks
// hold.
type PoolUse struct {
	// Status is each pool's status.addressesInUse, by name.
	Status map[string]int64
	// Pods and Tunnels count the allocations in the IPAMBlocks: pods', and
	// the agents' tunnel addresses (handles "rhizome-tunnel.*").
	Pods, Tunnels int
}

// StatusTotal is the sum of the pools' status.addressesInUse.
func (u PoolUse) StatusTotal() int64 {
	var n int64
	for _, v := range u.Status {
		n += v
	}
	return n
}

// PoolUse reads the pools and the blocks.
func (l *Lab) PoolUse(ctx context.Context) (PoolUse, error) {
	c, err := clientsFor(l.State.Kubeconfig)
	if err != nil {
		return PoolUse{}, err
	}
	u := PoolUse{Status: map[string]int64{}}
	pools, err := c.rz.RhizomeV1alpha1().IPPools().List(ctx, metav1.ListOptions{})
	if err != nil {
		return u, err
	}
	for _, p := range pools.Items {
		u.Status[p.Name] = p.Status.AddressesInUse
	}
	blocks, err := c.rz.RhizomeV1alpha1().IPAMBlocks().List(ctx, metav1.ListOptions{})
	if err != nil {
		return u, err
	}
	for _, b := range blocks.Items {
		for _, a := range b.Spec.Allocations {
			if strings.HasPrefix(a.Handle, "rhizome-tunnel.") {
				u.Tunnels++
			} else {
				u.Pods++
			}
		}
	}
	return u, nil
}
