// Package deploy holds Rhizome's install manifests (kustomize bases and
// overlays, examples). It embeds the agent's RBAC so that the lab runs every
// agent with exactly the permissions an installed cluster grants.
package deploy

import (
	_ "embed"

	"sigs.k8s.io/yaml"
)

// RBAC is base/rbac.yaml: the agent's ServiceAccount, ClusterRole, Role and
// their bindings.
//
//go:embed base/rbac.yaml
var RBAC []byte

// AgentServiceAccount and AgentNamespace name the agent's identity.
const (
	AgentServiceAccount = "rhizome-agent"
	AgentNamespace      = "rhizome-system"
)

//go:embed base/kustomization.yaml
var baseKustomization []byte

// ImageName is the image the base's kustomization points the DaemonSet at
// (its images[0].newName): the name a kustomize image override of an overlay
// matches.
func ImageName() string {
	var k struct {
		Images []struct {
			Name    string `json:"name"`
			NewName string `json:"newName"`
		} `json:"images"`
	}
	if err := yaml.Unmarshal(baseKustomization, &k); err != nil || len(k.Images) == 0 {
		return ""
	}
	if k.Images[0].NewName != "" {
		return k.Images[0].NewName
	}
	return k.Images[0].Name
}
