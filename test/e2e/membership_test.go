//go:build e2e

package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/rhizome-net/rhizome/test/lab"
)

// TestNodeJoinAndLeave: a node joins a running cluster, gets a block and
// pods that every other pod reaches; then it leaves, and every other node
// drops the route to its block.
func TestNodeJoinAndLeave(t *testing.T) {
	l := up(t, lab.Options{Nodes: 2, Racks: 1, ToR: "bird", Mode: "mesh", Encap: "none", Pods: 1})
	ctx := ctxFor(t, 5*time.Minute)
	n, err := l.JoinNode(ctx, 1)
	if err != nil {
		t.Fatalf("joining a node: %v", err)
	}
	if _, err := l.NewPod(ctx, n.Name); err != nil {
		t.Fatal(err)
	}
	block := blockOf(t, l, n.Name)
	for _, o := range []string{"node-1", "node-2"} {
		eventually(t, 30*time.Second, o+" learns the new node's block", func() (bool, string) {
			r := routeTo(t, l, o, block)
			return r != "", fmt.Sprintf("no route to %s", block)
		})
	}
	requireMatrix(t, l)

	if err := l.RemoveNode(ctx, n.Name); err != nil {
		t.Fatalf("removing %s: %v", n.Name, err)
	}
	for _, o := range []string{"node-1", "node-2"} {
		eventually(t, 30*time.Second, o+" drops the departed node's block", func() (bool, string) {
			r := routeTo(t, l, o, block)
			return r == "", fmt.Sprintf("still routes %s: %s", block, r)
		})
	}
	requireMatrix(t, l)
}
