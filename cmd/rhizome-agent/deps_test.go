package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoAllGroupsScheme keeps the packages that register every Kubernetes
// API group out of the agent: linked in, they cost ~10 MiB of resident
// memory on every node (docs/design/0008), and so do client-go's generic
// typed clients and event recorder through their OpenAPI dependencies. Use
// internal/kubecore (clients, events), internal/informers and
// internal/lease instead.
func TestNoAllGroupsScheme(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	banned := map[string]string{
		"k8s.io/client-go/kubernetes/scheme":                             "registers every API group",
		"k8s.io/client-go/kubernetes":                                    "the full clientset",
		"k8s.io/client-go/informers":                                     "every group's informers",
		"k8s.io/client-go/discovery":                                     "imports kubernetes/scheme",
		"github.com/rhizome-net/rhizome/crds/client/clientset/versioned": "imports discovery",
		"k8s.io/client-go/gentype":                                       "imports client-go/testing (managed fields, OpenAPI)",
		"k8s.io/client-go/testing":                                       "managed fields, strategic merge patch, OpenAPI models",
		"k8s.io/client-go/tools/record":                                  "strategic merge patch, OpenAPI models",
		"github.com/google/gnostic-models/openapiv2":                     "OpenAPI models",
		// The fakes that ship in non-test files (bgp/fake.go,
		// routes/fake.go, ipam/fake.go) take a small TB interface instead
		// of testing.TB, so that package testing (and its flags) stays out
		// of the agent.
		"testing": "test-only code in the binary (a fake taking testing.TB)",
	}
	for _, p := range strings.Fields(string(out)) {
		if why, ok := banned[p]; ok {
			t.Errorf("the agent links %s (%s)", p, why)
		}
	}
}
