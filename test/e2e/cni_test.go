//go:build e2e

package e2e

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	rzclient "github.com/rhizome-net/rhizome/crds/client/clientset/versioned"
	"github.com/rhizome-net/rhizome/test/lab"
	"github.com/rhizome-net/rhizome/test/netns"
)

// allocationsOf counts the IPAM allocations held for a node's pods (tunnel
// addresses excluded), read from the API server.
func allocationsOf(t *testing.T, l *lab.Lab, node string) map[string]string {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", l.State.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	list, err := rzclient.NewForConfigOrDie(cfg).RhizomeV1alpha1().IPAMBlocks().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, b := range list.Items {
		for _, al := range b.Spec.Allocations {
			if al.Node == node && al.Pod != "" {
				out[al.Address] = al.Namespace + "/" + al.Pod
			}
		}
	}
	return out
}

// tcpBetween connects from one pod to a listener in another through their
// real data path.
func tcpBetween(t *testing.T, src, dst lab.PodRecord) {
	t.Helper()
	dns := &netns.NS{Name: dst.NetNS[strings.LastIndexByte(dst.NetNS, '/')+1:]}
	sns := &netns.NS{Name: src.NetNS[strings.LastIndexByte(src.NetNS, '/')+1:]}
	if err := netns.TCPEcho(sns, dns, netip.MustParseAddr(dst.Addresses[0])); err != nil {
		t.Fatalf("pod %s → pod %s: %v", src.Name, dst.Name, err)
	}
}

// TestCNIWithTheRealAgent drives the CNI plugin through libcni against the
// real agent and IPAM: TCP between pods on different nodes, an agent
// restart between ADD and DEL, DEL freeing the allocation in the API
// server, and 200 pods on one node.
func TestCNIWithTheRealAgent(t *testing.T) {
	l := up(t, lab.Options{Nodes: 2, Racks: 1, ToR: "none", Mode: "mesh", Encap: "vxlan"})
	ctx := ctxFor(t, 10*time.Minute)
	a, err := l.NewPod(ctx, "node-1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.NewPod(ctx, "node-2")
	if err != nil {
		t.Fatal(err)
	}
	tcpBetween(t, *a, *b)
	tcpBetween(t, *b, *a)

	// The agent restarts between ADD and DEL: DEL still frees everything.
	if err := l.StopAgentAndWait(ctx, "node-1"); err != nil {
		t.Fatal(err)
	}
	if err := l.StartAgent(ctx, "node-1"); err != nil {
		t.Fatal(err)
	}
	if err := l.RemovePod(ctx, a.Name); err != nil {
		t.Fatalf("DEL after an agent restart: %v", err)
	}
	if got := allocationsOf(t, l, "node-1"); len(got) != 0 {
		t.Fatalf("allocations left on node-1 after DEL: %v", got)
	}
	if out, _ := l.Exec(ctx, "node-1", "ip", "route", "show", a.Addresses[0]); strings.TrimSpace(string(out)) != "" {
		t.Fatalf("host route to %s left after DEL: %s", a.Addresses[0], out)
	}

	// 200 pods on one node: distinct addresses, all allocated in the API
	// server, all freed again.
	var names []string
	seen := map[string]bool{}
	for range 200 {
		p, err := l.NewPod(ctx, "node-2")
		if err != nil {
			t.Fatal(err)
		}
		if seen[p.Addresses[0]] {
			t.Fatalf("address %s handed out twice", p.Addresses[0])
		}
		seen[p.Addresses[0]] = true
		names = append(names, p.Name)
	}
	if got := len(allocationsOf(t, l, "node-2")); got != 201 {
		t.Fatalf("%d allocations on node-2, want 201", got)
	}
	for _, n := range names {
		if err := l.RemovePod(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(allocationsOf(t, l, "node-2")); got != 1 {
		t.Fatalf("%d allocations on node-2 after removing 200 pods, want 1", got)
	}
}
