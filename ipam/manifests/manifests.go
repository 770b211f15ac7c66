// Package manifests holds the cluster objects that IPAM needs besides its
// CRDs, for installers and the lab to apply: the ValidatingAdmissionPolicy
// that refuses to delete an IPPool still in use.
package manifests

import _ "embed"

// IPPoolDeletionPolicy is a ValidatingAdmissionPolicy and its binding
// (multi-document YAML) that refuse to delete an IPPool whose
// status.addressesInUse is not 0.
//
//go:embed ippool-deletion-policy.yaml
var IPPoolDeletionPolicy []byte
