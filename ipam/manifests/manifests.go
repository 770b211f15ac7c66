// Package manifests holds the cluster objects that IPAM needs besides its
// CRDs, for installers and the lab to apply: ValidatingAdmissionPolicies that
// refuse to delete an IPPool still in use and refuse IPAMBlocks that do not
// fit their pool or overlap another block.
package manifests

import (
	"bytes"
	_ "embed"
)

// IPPoolDeletionPolicy is a ValidatingAdmissionPolicy and its binding
// (multi-document YAML) that refuse to delete an IPPool whose
// status.addressesInUse is not 0.
//
//go:embed ippool-deletion-policy.yaml
var IPPoolDeletionPolicy []byte

// IPAMBlockPolicies are ValidatingAdmissionPolicies and their bindings that
// refuse to create an IPAMBlock that overlaps a pool without being one of
// its blocks, or that overlaps another block.
//
//go:embed ipamblock-policies.yaml
var IPAMBlockPolicies []byte

// All is every manifest of the package as one multi-document YAML.
func All() []byte {
	return bytes.Join([][]byte{IPPoolDeletionPolicy, IPAMBlockPolicies}, []byte("\n---\n"))
}
