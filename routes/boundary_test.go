package routes

import (
	"os/exec"
	"strings"
	"testing"
)

// TestKernelSideKnowsNoBGP keeps the one boundary the design says must
// never be crossed: the route programmer (and anything under routes/) is
// fed by the agent, and imports nothing of the BGP side. The glue between
// the two (agent/ribsink) lives with the agent, which wires them.
func TestKernelSideKnowsNoBGP(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "./...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	const bgp = "github.com/rhizome-net/rhizome/bgp"
	for _, p := range strings.Fields(string(out)) {
		if p == bgp || strings.HasPrefix(p, bgp+"/") {
			t.Errorf("routes/... depends on %s", p)
		}
	}
}
