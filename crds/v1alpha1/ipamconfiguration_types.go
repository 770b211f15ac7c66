package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IPAMConfigurationName is the name of the one IPAMConfiguration that the
// agents read; the API server refuses any other name.
const IPAMConfigurationName = "default"

// Defaults applied by the IPAM converter when a field is absent (the schema
// has no defaults, so that an absent object and an empty one mean the same).
const (
	// DefaultGCGracePeriodSeconds is how long an address must stay orphaned (its
	// pod gone) before the garbage collector releases it.
	DefaultGCGracePeriodSeconds = 15 * 60
	// DefaultEmptyBlockGracePeriodSeconds is how long an empty block keeps its
	// node's affinity before it is released.
	DefaultEmptyBlockGracePeriodSeconds = 10 * 60
)

// IPAMConfigurationSpec holds the cluster-wide IPAM settings.
type IPAMConfigurationSpec struct {
	// StrictAffinity forbids borrowing: a node takes addresses only from
	// blocks it owns, and an allocation fails with "pool ... exhausted" when
	// no free block is left instead of borrowing an address from another
	// node's block. Set it when the network cannot route single addresses
	// (/32, /128) to a node other than the block's owner.
	// +optional
	StrictAffinity bool `json:"strictAffinity,omitempty"`

	// GCGracePeriod is how long an allocated address whose pod no longer
	// exists must stay so before the garbage collector releases it: the
	// address is released only when it is seen orphaned twice, this far
	// apart. Default 15m; at least 1s.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s')",message="gcGracePeriod must be at least 1s (the default is 15m)"
	GCGracePeriod *metav1.Duration `json:"gcGracePeriod,omitempty"`

	// EmptyBlockGracePeriod is how long a block with no allocation keeps its
	// node's affinity before the node releases it, so that pods churning on
	// a node do not make it claim and release blocks in a loop. Default 10m;
	// 0s releases empty blocks at once.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s')",message="emptyBlockGracePeriod must not be negative (the default is 10m)"
	EmptyBlockGracePeriod *metav1.Duration `json:"emptyBlockGracePeriod,omitempty"`
}

// IPAMConfiguration is the singleton (named default) of cluster-wide IPAM
// settings. Without it the defaults apply.
//
// +genclient
// +genclient:nonNamespaced
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=ipamconfig
// +kubebuilder:validation:XValidation:rule="self.metadata.name == 'default'",message="an IPAMConfiguration must be named 'default'; there is one for the whole cluster"
// +kubebuilder:printcolumn:name="Strict",type=boolean,JSONPath=`.spec.strictAffinity`
// +kubebuilder:printcolumn:name="GC-Grace",type=string,JSONPath=`.spec.gcGracePeriod`
// +kubebuilder:printcolumn:name="Empty-Block-Grace",type=string,JSONPath=`.spec.emptyBlockGracePeriod`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type IPAMConfiguration struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec IPAMConfigurationSpec `json:"spec,omitempty"`
}

// IPAMConfigurationList is a list of IPAMConfigurations.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
type IPAMConfigurationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPAMConfiguration `json:"items"`
}
