// Package v1alpha1 holds the rhizome.dev/v1alpha1 API: the custom resources
// through which operators configure Rhizome (IPPool, BGPConfiguration, BGPPeer)
// and through which the agents share state (IPAMBlock, RhizomeNode).
//
// The types carry only data and kubebuilder markers. Validation that a person
// can act on lives in the schema and in CEL rules, so that the API server
// rejects bad objects before any agent sees them; whatever cannot be checked
// there is checked by the converters in each component and reported in status.
// Field names follow Calico's where the concept is the same.
//
// +k8s:deepcopy-gen=package
// +groupName=rhizome.dev
package v1alpha1
