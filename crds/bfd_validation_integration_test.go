//go:build integration

package crds_test

import (
	"strings"
	"testing"

	"github.com/rhizome-net/rhizome/test/controlplane"
)

// TestBFDFieldsValidated: BFD timers out of range are refused with a
// message naming the field; sane ones are accepted.
func TestBFDFieldsValidated(t *testing.T) {
	cp := controlplane.ForTest(t)
	bad := []struct {
		name, yaml string
		want       []string
	}{
		{"mesh: tx below 10ms", bgpConfig("default", `{nodeToNodeMeshBFD: {enabled: true, minTxInterval: 5ms}}`), []string{"minTxInterval must be between 10ms and 60s"}},
		{"mesh: rx above 60s", bgpConfig("node.n1", `{nodeToNodeMeshBFD: {minRxInterval: 2m}}`), []string{"minRxInterval must be between 10ms and 60s"}},
		{"mesh: multiplier 0", bgpConfig("default", `{nodeToNodeMeshBFD: {multiplier: 0}}`), []string{"spec.nodeToNodeMeshBFD.multiplier", "greater than or equal to 1"}},
		{"peer: multiplier 256", peer(`{peerIP: 10.0.0.1, asNumber: 65001, bfd: {enabled: true, multiplier: 256}}`), []string{"spec.bfd.multiplier", "less than or equal to 255"}},
		{"peer: negative interval", peer(`{peerIP: 10.0.0.1, asNumber: 65001, bfd: {minTxInterval: -300ms}}`), []string{"minTxInterval must be between 10ms and 60s"}},
		{"peer: enabled not a boolean", peer(`{peerIP: 10.0.0.1, asNumber: 65001, bfd: {enabled: "yes"}}`), []string{"spec.bfd.enabled", "boolean"}},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			out, err := cp.Kubectl(ctx(t), []byte(c.yaml), "create", "-f", "-")
			if err == nil {
				t.Fatalf("accepted:\n%s\n%s", c.yaml, out)
			}
			for _, w := range c.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("message lacks %q:\n%s", w, out)
				}
			}
		})
	}
	apply(t, cp, bgpConfig("node.bfd-ok", `{nodeToNodeMeshBFD: {enabled: true, minTxInterval: 100ms, minRxInterval: 10ms, multiplier: 1}}`))
	apply(t, cp, strings.Replace(peer(`{peerIP: 10.0.0.9, asNumber: 65001, bfd: {enabled: true, minTxInterval: 60s, multiplier: 255}}`), "invalid-peer", "bfd-ok", 1))
}
