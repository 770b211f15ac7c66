//go:build integration

// Package deploy holds the install manifests; its tests apply them to the
// local control plane.
package deploy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rhizome-net/rhizome/test/controlplane"
)

func TestMain(m *testing.M) { controlplane.Main(m) }

// TestOverlaysApplyServerSide renders each overlay with kustomize and applies
// it with --dry-run=server: the API server validates every object (CRD
// schemas and CEL rules, RBAC objects, the DaemonSet) without keeping them.
func TestOverlaysApplyServerSide(t *testing.T) {
	cp := controlplane.ForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Namespaced objects need their namespace to exist even in a dry run.
	if out, err := cp.Kubectl(ctx, nil, "create", "namespace", "rhizome-system"); err != nil && !strings.Contains(string(out), "AlreadyExists") {
		t.Fatal(err)
	}
	// deploy/cleanup, the host half of an uninstall, in its own namespace.
	if out, err := cp.Kubectl(ctx, nil, "create", "namespace", "rhizome-cleanup"); err != nil && !strings.Contains(string(out), "AlreadyExists") {
		t.Fatal(err)
	}
	t.Run("cleanup", func(t *testing.T) {
		rendered, err := cp.Kubectl(ctx, nil, "kustomize", "cleanup")
		if err != nil {
			t.Fatal(err)
		}
		out, err := cp.Kubectl(ctx, rendered, "apply", "--dry-run=server", "--server-side", "--field-manager=rhizome-test", "-f", "-")
		if err != nil || !strings.Contains(string(out), "daemonset.apps/rhizome-cleanup") {
			t.Fatalf("%v\n%s", err, out)
		}
	})
	for _, overlay := range []string{"mesh", "route-reflector", "tor"} {
		t.Run(overlay, func(t *testing.T) {
			rendered, err := cp.Kubectl(ctx, nil, "kustomize", "overlays/"+overlay)
			if err != nil {
				t.Fatal(err)
			}
			out, err := cp.Kubectl(ctx, rendered, "apply", "--dry-run=server", "--server-side", "--field-manager=rhizome-test", "-f", "-")
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			for _, want := range []string{"daemonset.apps/rhizome-agent", "clusterrole.rbac.authorization.k8s.io/rhizome-agent", "ippool.rhizome.dev/default-ipv4", "bgpconfiguration.rhizome.dev/default"} {
				if !strings.Contains(string(out), want) {
					t.Errorf("%s not applied:\n%s", want, out)
				}
			}
		})
	}
}

// TestInstallOnAFreshCluster applies the install as docs/install.md says, on
// an API server that has never seen Rhizome's CRDs and with an empty
// discovery cache: the CRDs on their own, then one apply of an overlay
// creates every object, the IPPool and BGPConfiguration included. (With the
// CRDs inside the overlay, as before, that apply left both out: "no matches
// for kind IPPool ... ensure CRDs are installed first".)
func TestInstallOnAFreshCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp, err := controlplane.Start(ctx, controlplane.Options{SkipCRDs: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Stop()
	cache := "--cache-dir=" + t.TempDir()
	steps := [][]string{
		{"apply", "-k", "crds"},
		{"wait", "--for=condition=Established", "--timeout=60s", "crd", "-l", "app.kubernetes.io/part-of=rhizome"},
		{"apply", "-k", "overlays/mesh"},
	}
	for _, s := range steps {
		if out, err := cp.Kubectl(ctx, nil, append([]string{cache}, s...)...); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	for _, obj := range []string{"ippool/default-ipv4", "bgpconfiguration/default", "-n=rhizome-system daemonset/rhizome-agent"} {
		if out, err := cp.Kubectl(ctx, nil, append([]string{"get"}, strings.Fields(obj)...)...); err != nil {
			t.Errorf("%s not created: %v\n%s", obj, err, out)
		}
	}
	out, err := cp.Kubectl(ctx, nil, "kustomize", "overlays/mesh")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "kind: CustomResourceDefinition") {
		t.Error("the mesh overlay holds CRDs again: its first apply on a fresh cluster cannot create the IPPool")
	}
}
