// Package crds holds Rhizome's API: the Go types (v1alpha1), the generated
// client (client/) and the generated CustomResourceDefinitions (bases/), which
// this package embeds so that the agent's tests, the lab and the installers
// use exactly the YAML that `make generate` wrote.
package crds

import (
	"embed"
	"io/fs"
	"path"
	"sort"
)

//go:embed bases/*.yaml
var bases embed.FS

// Manifests returns the CRD manifests, keyed by file name, in name order.
func Manifests() (names []string, docs [][]byte) {
	entries, err := fs.ReadDir(bases, "bases")
	if err != nil {
		panic(err) // embedded at build time
	}
	for _, e := range entries {
		if e.Name() == "kustomization.yaml" {
			continue
		}
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, n := range names {
		b, _ := bases.ReadFile(path.Join("bases", n))
		docs = append(docs, b)
	}
	return names, docs
}
