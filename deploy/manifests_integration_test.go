//go:build integration

// Package deploy holds the install manifests; its tests apply them to the
// local control plane.
package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

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

// TestMonitoringComponent renders the mesh overlay with the monitoring
// component, as docs/operations.md tells users to, and applies what this
// API server knows (the Service, the dashboard's ConfigMap) with
// --dry-run=server; the ServiceMonitor and PrometheusRule need the
// Prometheus Operator's CRDs, which make lint-monitoring checks against the
// operator's Go types instead.
func TestMonitoringComponent(t *testing.T) {
	cp := controlplane.ForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := cp.Kubectl(ctx, nil, "create", "namespace", "rhizome-system"); err != nil && !strings.Contains(string(out), "AlreadyExists") {
		t.Fatal(err)
	}
	dir := t.TempDir()
	abs, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	// kustomize takes relative paths only.
	mesh, err1 := filepath.Rel(dir, filepath.Join(abs, "overlays/mesh"))
	mon, err2 := filepath.Rel(dir, filepath.Join(abs, "components/monitoring"))
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	k := "resources:\n- " + mesh + "\ncomponents:\n- " + mon + "\n"
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	rendered, err := cp.Kubectl(ctx, nil, "kustomize", "--load-restrictor=LoadRestrictionsNone", dir)
	if err != nil {
		t.Fatalf("%v\n%s", err, rendered)
	}
	var known [][]byte
	kinds := map[string]bool{}
	for _, doc := range bytes.Split(rendered, []byte("\n---\n")) {
		var m struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name   string            `json:"name"`
				Labels map[string]string `json:"labels"`
			} `json:"metadata"`
			Data map[string]string `json:"data"`
		}
		if err := yaml.Unmarshal(doc, &m); err != nil {
			t.Fatal(err)
		}
		kinds[m.Kind+"/"+m.Metadata.Name] = true
		if m.Kind == "ConfigMap" && m.Metadata.Name == "rhizome-dashboard" {
			if m.Metadata.Labels["grafana_dashboard"] != "1" || !json.Valid([]byte(m.Data["rhizome.json"])) {
				t.Errorf("dashboard ConfigMap: labels %v, dashboard valid JSON: %v", m.Metadata.Labels, json.Valid([]byte(m.Data["rhizome.json"])))
			}
		}
		if !strings.HasPrefix(m.APIVersion, "monitoring.coreos.com/") {
			known = append(known, doc)
		}
	}
	for _, want := range []string{"Service/rhizome-agent-metrics", "ServiceMonitor/rhizome-agent", "PrometheusRule/rhizome", "ConfigMap/rhizome-dashboard", "DaemonSet/rhizome-agent"} {
		if !kinds[want] {
			t.Errorf("rendered install lacks %s", want)
		}
	}
	out, err := cp.Kubectl(ctx, bytes.Join(known, []byte("\n---\n")), "apply", "--dry-run=server", "--server-side", "--field-manager=rhizome-test", "-f", "-")
	if err != nil || !strings.Contains(string(out), "service/rhizome-agent-metrics") || !strings.Contains(string(out), "configmap/rhizome-dashboard") {
		t.Fatalf("%v\n%s", err, out)
	}
}
