//go:build integration

package crds_test

import (
	"strings"
	"testing"
	"time"

	"github.com/rhizome-net/rhizome/ipam/manifests"
	"github.com/rhizome-net/rhizome/test/controlplane"
)

// TestIPAMBlockPolicies plays an operator (or a compromised controller)
// creating blocks by hand against the admission policies that judge a block
// against the other objects: a block that does not fit the pool it lies in,
// and a block overlapping another block, are refused with a message naming
// both; a claim that collides on the name still fails as AlreadyExists (the
// agents' claim protocol); a block that fits is accepted.
func TestIPAMBlockPolicies(t *testing.T) {
	cp := controlplane.ForTest(t)
	if out, err := cp.Kubectl(ctx(t), manifests.IPAMBlockPolicies, "apply", "-f", "-"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := cp.Kubectl(ctx(t), manifests.IPAMBlockPolicies, "delete", "--ignore-not-found", "-f", "-"); err != nil {
			t.Errorf("%v\n%s", err, out)
		}
		_, _ = cp.Kubectl(ctx(t), nil, "delete", "--ignore-not-found", "ippool/policy-pool", "ippool/policy-pool6",
			"ipamblock/10-66-0-0-26", "ipamblock/10-67-0-0-24", "ipamblock/fd00-66--40-122")
	})
	apply(t, cp, `
apiVersion: rhizome.dev/v1alpha1
kind: IPPool
metadata: {name: policy-pool}
spec: {cidr: 10.66.0.0/16, blockSize: 26}
---
apiVersion: rhizome.dev/v1alpha1
kind: IPPool
metadata: {name: policy-pool6}
spec: {cidr: "fd00:66::/64"}
`)
	// Policies take effect asynchronously: wait until a block that cannot
	// fit is refused.
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := cp.Kubectl(ctx(t), []byte(namedBlock("10-66-0-0-24", `{cidr: 10.66.0.0/24}`)), "create", "--dry-run=server", "-f", "-")
		if err != nil && strings.Contains(string(out), "rhizome-ipamblock-fits-pools") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("policy not enforced after a minute: %v\n%s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	apply(t, cp, namedBlock("10-66-0-0-26", `{cidr: 10.66.0.0/26, affinity: node-a}`))
	apply(t, cp, namedBlock("fd00-66--40-122", `{cidr: "fd00:66::40/122", affinity: node-a}`))

	cases := []struct {
		name, yaml string
		want       []string // empty: accepted
	}{
		{"larger than the pool's blocks", namedBlock("10-66-1-0-24", `{cidr: 10.66.1.0/24}`),
			[]string{"IPAMBlock 10.66.1.0/24 overlaps IPPool policy-pool (10.66.0.0/16) but is not one of its blocks", "blockSize /26"}},
		{"smaller than the pool's blocks", namedBlock("10-66-2-0-28", `{cidr: 10.66.2.0/28}`), []string{"blockSize /26"}},
		{"IPv6 of the wrong size", namedBlock("fd00-66--1000-116", `{cidr: "fd00:66::1000/116"}`), []string{"policy-pool6", "blockSize /122"}},
		{"covers a pool", namedBlock("10-66-0-0-20", `{cidr: 10.66.0.0/20}`), []string{"IPAMBlock 10.66.0.0/20 overlaps"}}, // the pool, a block, or both,
		{"name not from cidr", namedBlock("10-66-0-128-26", `{cidr: 10.66.0.192/26}`), []string{"the name of an IPAMBlock must be derived from its cidr 10.66.0.192/26: 10-66-0-192-26"}},
		{"IPv6 name not from cidr", namedBlock("fd00-66-0-0-0-0-0-80-122", `{cidr: "fd00:66::80/122"}`), []string{"must be derived from its cidr fd00:66::80/122: fd00-66--80-122"}},
		{"IPv6 name from cidr", namedBlock("fd00-66--80-122", `{cidr: "fd00:66::80/122"}`), nil},
		{"name collision is AlreadyExists", namedBlock("10-66-0-0-26", `{cidr: 10.66.0.0/26, affinity: node-b}`), []string{"AlreadyExists"}},
		{"a block of the pool", namedBlock("10-66-0-64-26", `{cidr: 10.66.0.64/26, affinity: node-b}`), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := cp.Kubectl(ctx(t), []byte(c.yaml), "create", "--dry-run=server", "-f", "-")
			if len(c.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v\n%s", err, out)
				}
				return
			}
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

	// Outside every pool (a leftover range), blocks of any allowed size may
	// exist, but never two that overlap, larger or smaller.
	apply(t, cp, namedBlock("10-67-0-0-24", `{cidr: 10.67.0.0/24}`))
	for _, y := range []string{
		namedBlock("10-67-0-64-26", `{cidr: 10.67.0.64/26}`),
		namedBlock("10-67-0-0-23", `{cidr: 10.67.0.0/23}`),
	} {
		out, err := cp.Kubectl(ctx(t), []byte(y), "create", "--dry-run=server", "-f", "-")
		if err == nil || !strings.Contains(string(out), "overlaps IPAMBlock 10-67-0-0-24 (10.67.0.0/24): two blocks would hand out the same addresses") {
			t.Errorf("overlapping block not refused as such: %v\n%s", err, out)
		}
	}
}
