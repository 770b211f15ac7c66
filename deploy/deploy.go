// Package deploy holds Rhizome's install manifests (kustomize bases and
// overlays, examples). It embeds the agent's RBAC so that the lab runs every
// agent with exactly the permissions an installed cluster grants.
package deploy

import _ "embed"

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
