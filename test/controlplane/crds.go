package controlplane

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/rhizome-net/rhizome/crds"
)

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// InstallCRDs applies Rhizome's CRDs (server-side apply, so it also upgrades
// them) and returns once every one is Established and served by discovery.
func InstallCRDs(ctx context.Context, cfg *rest.Config) error {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	names, docs := crds.Manifests()
	var plurals []string
	for i, doc := range docs {
		var obj unstructured.Unstructured
		if err := yaml.Unmarshal(doc, &obj.Object); err != nil {
			return fmt.Errorf("parsing %s: %w", names[i], err)
		}
		plural, _, _ := unstructured.NestedString(obj.Object, "spec", "names", "plural")
		plurals = append(plurals, plural)
		if _, err := dyn.Resource(crdGVR).Apply(ctx, obj.GetName(), &obj, metav1.ApplyOptions{FieldManager: "rhizome", Force: true}); err != nil {
			return fmt.Errorf("applying CRD %s: %w", obj.GetName(), err)
		}
	}
	for i, doc := range docs {
		var obj unstructured.Unstructured
		_ = yaml.Unmarshal(doc, &obj.Object)
		if err := waitEstablished(ctx, dyn, obj.GetName()); err != nil {
			return fmt.Errorf("CRD %s (%s): %w", obj.GetName(), names[i], err)
		}
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := disc.ServerResourcesForGroupVersion("rhizome.dev/v1alpha1")
		if err != nil {
			return false, nil
		}
		served := map[string]bool{}
		for _, r := range list.APIResources {
			served[r.Name] = true
		}
		for _, p := range plurals {
			if !served[p] {
				return false, nil
			}
		}
		return true, nil
	})
}

func waitEstablished(ctx context.Context, dyn dynamic.Interface, name string) error {
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		obj, err := dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
		for _, c := range conds {
			m, _ := c.(map[string]any)
			if m["type"] == "Established" && m["status"] == "True" {
				return true, nil
			}
			if m["type"] == "NamesAccepted" && m["status"] == "False" {
				return false, fmt.Errorf("names not accepted: %v", m["message"])
			}
		}
		return false, nil
	})
}
