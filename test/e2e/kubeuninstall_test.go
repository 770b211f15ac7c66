//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rhizome-net/rhizome/test/lab"
)

// kubeUninstall runs docs/install.md's uninstall on a kubelet lab and checks
// that it ends in under two minutes and leaves nothing of Rhizome: not on
// any node (lab.RhizomeStateOn), not in the cluster. On the way it watches
// the pools' status follow the pods out (only the agents' tunnel addresses
// may remain, until the pools are disabled). byHand cleans the hosts with
// the document's shell commands instead of deploy/cleanup's DaemonSet; with
// the DaemonSet, one node first gets the state an agent leaves when it is
// gone before its pools are (a node down during the uninstall): routes of
// protocol 114, a VXLAN device, the NAT table, which the DaemonSet removes.
func kubeUninstall(t *testing.T, l *lab.Lab, byHand bool) {
	ctx := ctxFor(t, 10*time.Minute)
	if err := l.DeleteWorkloads(ctx); err != nil {
		t.Fatal(err)
	}
	podsGone := time.Now()
	var use lab.PoolUse
	eventually(t, time.Minute, "the pools' status counts only the agents' tunnel addresses", func() (bool, string) {
		var err error
		if use, err = l.PoolUse(ctx); err != nil {
			return false, err.Error()
		}
		return use.Pods == 0 && use.StatusTotal() == int64(use.Tunnels), fmt.Sprintf("%+v", use)
	})
	t.Logf("uninstall: the pools' status counted no pod address %s after the last pod object was gone (%d tunnel addresses left)",
		time.Since(podsGone).Round(10*time.Millisecond), use.Tunnels)

	start := time.Now()
	steps, err := l.UninstallCluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !byHand {
		plantLeftovers(t, l, l.Plan.Nodes[len(l.Plan.Nodes)-1].Name)
	}
	hosts, err := l.CleanupHosts(ctx, byHand)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	for _, s := range append(steps, hosts...) {
		t.Logf("uninstall: %5.1fs  %s", s.Took.Seconds(), s.Step)
	}
	t.Logf("uninstall: the documented steps took %s", took.Round(100*time.Millisecond))
	if took > 2*time.Minute {
		t.Errorf("the uninstall took %s, over two minutes", took)
	}
	for _, n := range l.Plan.Nodes {
		if left := l.RhizomeStateOn(ctxFor(t, time.Minute), n.Name); len(left) > 0 {
			t.Errorf("%s after the uninstall:\n  %s", n.Name, strings.Join(left, "\n  "))
		}
	}
	for _, q := range [][]string{
		{"get", "crd", "-l", "app.kubernetes.io/part-of=rhizome", "-o", "name"},
		{"get", "namespaces", "-o", "name", "--field-selector", "metadata.name=rhizome-system"},
		{"get", "namespaces", "-o", "name", "--field-selector", "metadata.name=rhizome-cleanup"},
		{"get", "validatingadmissionpolicies,validatingadmissionpolicybindings,clusterroles,clusterrolebindings", "-o", "name"},
	} {
		out, err := l.Kubectl(ctx, q...)
		if err != nil {
			t.Errorf("kubectl %s: %v", strings.Join(q, " "), err)
		}
		for _, line := range strings.Fields(string(out)) {
			if strings.Contains(line, "rhizome") {
				t.Errorf("left in the cluster: %s", line)
			}
		}
	}
}

// plantLeftovers gives a node the kernel state its agent would have left
// had it stopped before the pools were deleted.
func plantLeftovers(t *testing.T, l *lab.Lab, node string) {
	t.Helper()
	script := `ip link add vxlan.rhizome type vxlan id 4096 dstport 4789 nolearning
ip link set vxlan.rhizome up
ip route add 10.244.200.0/26 dev vxlan.rhizome proto 114
ip route add blackhole 10.244.201.0/26 proto 114
nft add table inet rhizome-nat
nft add chain inet rhizome-nat postrouting '{ type nat hook postrouting priority srcnat; }'`
	if out, err := l.Exec(ctxFor(t, time.Minute), node, "sh", "-ec", script); err != nil {
		t.Fatalf("planting leftovers on %s: %v\n%s", node, err, out)
	}
	if left := l.RhizomeStateOn(ctxFor(t, time.Minute), node); len(left) < 3 {
		t.Fatalf("planted leftovers on %s not seen: %v", node, left)
	}
}
