//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rhizome-net/rhizome/cni"
	"github.com/rhizome-net/rhizome/test/lab"
)

// The kubelet lab: real containerd and kubelets in the node namespaces,
// Rhizome installed from deploy/ the way docs/install.md says, pods from
// Deployments wired by rhizome-cni through containerd (design note 0013).

// imageArchive is the Rhizome image under test: $RHIZOME_IMAGE or what
// `make image` wrote.
func imageArchive(t testing.TB) string {
	if p := os.Getenv("RHIZOME_IMAGE"); p != "" {
		return p
	}
	p, err := filepath.Abs("../../bin/image/rhizome/rhizome.oci.tar")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("the Rhizome image is missing (%v): run make image first (make e2e does)", err)
	}
	return p
}

func upKubelet(t *testing.T, o lab.Options) *lab.Lab {
	t.Helper()
	o.Kubelet, o.Image = true, imageArchive(t)
	start := time.Now()
	l := up(t, o)
	t.Logf("kubelet lab up in %s; DaemonSet Ready on %d nodes %.1fs after the apply; the lab's processes use %.0f MiB", time.Since(start).Round(time.Second), o.Nodes, l.State.RolloutSeconds, l.MemoryMiB())
	return l
}

// TestKubeletMeshInstall is a user's first hour on the mesh overlay: one
// apply, pods across nodes and racks, 200 pods of churn, a rolling upgrade
// under 10 ms pings, and the uninstall with deploy/cleanup's DaemonSet.
func TestKubeletMeshInstall(t *testing.T) {
	l := upKubelet(t, lab.Options{Nodes: 3, Racks: 2, ToR: "none", Mode: "mesh", Pods: 2})
	steps := []struct {
		name string
		fn   func(*testing.T, *lab.Lab)
	}{
		{"matrix", requireKubeMatrix},
		{"node-address", requirePodsReachNode},
		{"churn", kubeChurn},
		{"upgrade", kubeUpgrade},
		{"uninstall", func(t *testing.T, l *lab.Lab) { kubeUninstall(t, l, false) }},
	}
	for _, s := range steps {
		if !t.Run(s.name, func(t *testing.T) { s.fn(t, l) }) {
			return
		}
	}
}

// TestKubeletToRInstall installs the tor overlay behind BIRD ToRs (MD5
// sessions with the overlay's example password): the DaemonSet rolls out,
// every node's session with its ToR is established and pods in different
// racks reach each other through the ToRs; then the uninstall, with the
// hosts cleaned by hand.
func TestKubeletToRInstall(t *testing.T) {
	l := upKubelet(t, lab.Options{Nodes: 3, Racks: 2, ToR: "bird", Mode: "mesh", Pods: 1})
	for _, r := range l.Plan.Racks {
		eventually(t, time.Minute, fmt.Sprintf("tor-%d's sessions with its nodes Established", r.Index), func() (bool, string) {
			out, err := l.Exec(ctxFor(t, 10*time.Second), fmt.Sprintf("tor-%d", r.Index), "birdc", "-s", filepath.Join(l.Dir, "tors", fmt.Sprint(r.Index), "bird.ctl"), "show", "protocols")
			if err != nil {
				return false, err.Error()
			}
			for _, n := range r.Nodes {
				line := ""
				for _, l := range strings.Split(string(out), "\n") {
					if strings.HasPrefix(l, strings.ReplaceAll(n, "-", "_")) {
						line = l
					}
				}
				if !strings.Contains(line, "Established") {
					return false, string(out)
				}
			}
			return true, ""
		})
	}
	requireKubeMatrix(t, l)
	t.Run("uninstall", func(t *testing.T) { kubeUninstall(t, l, true) })
}

// requireKubeMatrix pings every workload pod from every other one.
func requireKubeMatrix(t *testing.T, l *lab.Lab) {
	t.Helper()
	if err := l.SyncPods(ctxFor(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	racks := map[int]bool{}
	for _, p := range l.State.Pods {
		n, _ := l.Plan.Node(p.Node)
		racks[n.Rack] = true
	}
	if len(l.State.Pods) < len(l.Plan.Nodes) || len(racks) != len(l.Plan.Racks) {
		t.Fatalf("%d pods in %d racks: want pods on every node of every rack", len(l.State.Pods), len(racks))
	}
	requireMatrix(t, l)
}

// requirePodsReachNode pings a node's own address from every pod.
func requirePodsReachNode(t *testing.T, l *lab.Lab) {
	for _, n := range l.Plan.Nodes {
		for _, p := range l.State.Pods {
			argv := lab.InNetNS(p.NetNS, "ping", "-c1", "-W2", "-q", n.Addr.Addr().String())
			if out, err := execCtx(t, argv...); err != nil {
				t.Errorf("%s (%s) -> node %s (%s): %v\n%s", p.Name, p.Node, n.Name, n.Addr.Addr(), err, out)
			}
		}
	}
}

// kubeChurn creates and deletes 204 pods by scaling the Deployments (the
// kubelet's own CNI ADD and DEL calls), then checks that nothing leaked:
// rhizomectl ipam check is clean, every allocation belongs to a running pod,
// and each node has exactly one veth and one host route per pod.
func kubeChurn(t *testing.T, l *lab.Lab) {
	const rounds, extra = 2, 34 // 2 × 34 × 3 nodes = 204 pods
	base := l.State.Options.Pods
	start := time.Now()
	var peak float64
	for r := 1; r <= rounds; r++ {
		ctx := ctxFor(t, 10*time.Minute)
		if err := l.ScaleWorkloads(ctx, base+extra); err != nil {
			t.Fatal(err)
		}
		if err := l.WaitWorkloads(ctx, 8*time.Minute); err != nil {
			t.Fatalf("round %d up: %v", r, err)
		}
		peak = max(peak, l.MemoryMiB())
		if err := l.ScaleWorkloads(ctx, base); err != nil {
			t.Fatal(err)
		}
		if err := l.WaitWorkloads(ctx, 8*time.Minute); err != nil {
			t.Fatalf("round %d down: %v", r, err)
		}
	}
	t.Logf("churn: %d pods created and deleted in %s (the lab's processes used %.0f MiB at %d pods)", rounds*extra*len(l.Plan.Nodes), time.Since(start).Round(time.Second), peak, (base+extra)*len(l.Plan.Nodes))
	requireNoLeaks(t, l)
	requireKubeMatrix(t, l)
}

// requireNoLeaks checks IPAM against the running pods and each node's links
// and host routes against its pods.
func requireNoLeaks(t *testing.T, l *lab.Lab) {
	t.Helper()
	ctl := filepath.Join(binDir(t), "rhizomectl")
	eventually(t, time.Minute, "rhizomectl ipam check clean", func() (bool, string) {
		out, err := execCtx(t, ctl, "--kubeconfig", l.State.Kubeconfig, "ipam", "check")
		return err == nil && strings.Contains(string(out), "no leaks or inconsistencies"), string(out)
	})
	if err := l.SyncPods(ctxFor(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	for _, n := range l.Plan.Nodes {
		want := map[string]bool{}
		for _, p := range l.State.Pods {
			if p.Node == n.Name {
				want[p.Addresses[0]+"/32"] = true
			}
		}
		eventually(t, 30*time.Second, n.Name+": one veth and one host route per pod", func() (bool, string) {
			links, err := l.Exec(ctxFor(t, 10*time.Second), n.Name, "ip", "-o", "link", "show", "type", "veth")
			if err != nil {
				return false, err.Error()
			}
			veths := 0 // the pods' host sides (eth0, the node's uplink, is a veth too)
			for _, line := range strings.Split(string(links), "\n") {
				if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], cni.HostVethPrefix) {
					veths++
				}
			}
			routes, err := l.Exec(ctxFor(t, 10*time.Second), n.Name, "ip", "-4", "route", "show", "proto", "static")
			if err != nil {
				return false, err.Error()
			}
			got := map[string]bool{}
			for _, line := range strings.Split(strings.TrimSpace(string(routes)), "\n") {
				if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "10.244.") {
					dst := f[0]
					if !strings.Contains(dst, "/") {
						dst += "/32"
					}
					got[dst] = true
				}
			}
			ok := veths == len(want) && len(got) == len(want)
			for r := range got {
				ok = ok && want[r]
			}
			return ok, fmt.Sprintf("%d veths, host routes %v, pods %v", veths, got, want)
		})
	}
}

// kubeUpgrade rolls the DaemonSet to a second image tag while pods on
// different nodes and racks ping each other every 10 ms, and counts the
// lost pings.
func kubeUpgrade(t *testing.T, l *lab.Lab) {
	ctx := ctxFor(t, 10*time.Minute)
	old := l.State.Images.Rhizome
	name, _, _ := strings.Cut(old, ":")
	if i := strings.LastIndexByte(old, ':'); i > strings.LastIndexByte(old, '/') {
		name = old[:i]
	}
	next := name + ":upgrade-test"
	if err := l.TagImage(ctx, old, next); err != nil {
		t.Fatal(err)
	}
	if err := l.SyncPods(ctx); err != nil {
		t.Fatal(err)
	}
	// One pinger per ordered pair of nodes: across nodes in a rack and
	// across racks.
	type pair struct {
		from lab.PodRecord
		to   string
		p    *pinger
	}
	var pairs []pair
	for _, a := range l.Plan.Nodes {
		for _, b := range l.Plan.Nodes {
			if a.Name != b.Name {
				src, dst := podOn(t, l, a.Name), podOn(t, l, b.Name)
				pairs = append(pairs, pair{from: src, to: dst.Name, p: startPingEvery(t, src, dst.Addresses[0], "0.01")})
			}
		}
	}
	time.Sleep(2 * time.Second)
	before, _ := l.AgentPods(ctx)
	start := time.Now()
	if _, err := l.Kubectl(ctx, "-n", "rhizome-system", "set", "image", "daemonset/rhizome-agent", "install-cni="+next, "agent="+next); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitAgentRollout(ctx, 8*time.Minute); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	time.Sleep(5 * time.Second) // routes settle after the last restart
	after, _ := l.AgentPods(ctx)
	for node, p := range after {
		if p.Spec.Containers[0].Image != next || before[node].UID == p.UID {
			t.Errorf("%s: agent pod %s runs %s (uid changed: %v)", node, p.Name, p.Spec.Containers[0].Image, before[node].UID != p.UID)
		}
	}
	lost := 0
	for _, pr := range pairs {
		sent, recv := pr.p.stop(t)
		t.Logf("ping %s (%s) -> %s: %d sent, %d lost", pr.from.Name, pr.from.Node, pr.to, sent, sent-recv)
		lost += sent - recv
	}
	t.Logf("upgrade: rolling update of %d agents in %s, %d pings lost", len(after), took.Round(time.Second), lost)
	if lost != 0 {
		t.Errorf("%d pings lost during the rolling update", lost)
	}
}

func execCtx(t *testing.T, argv ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
}
