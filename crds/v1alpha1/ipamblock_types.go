package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IPAMBlockSpec is one block of an IPPool: its owner and every address
// allocated from it. A block is a single object so that claiming it, and every
// allocation in it, is one compare-and-swap on its resourceVersion.
//
// +kubebuilder:validation:XValidation:rule="isCIDR(self.cidr) && cidr(self.cidr) == cidr(self.cidr).masked()",message="cidr must be a network address in CIDR notation with no host bits set"
// +kubebuilder:validation:XValidation:rule="!isCIDR(self.cidr) || cidr(self.cidr).prefixLength() >= (cidr(self.cidr).ip().family() == 4 ? 20 : 116)",messageExpression="'cidr ' + self.cidr + ' is larger than a block may be: a block holds at most 4096 addresses (IPv4 /20-/32, IPv6 /116-/128, the range of IPPool blockSize)'"
// +kubebuilder:validation:XValidation:rule="!isCIDR(self.cidr) || !has(self.allocations) || self.allocations.all(a, isIP(a.address) && cidr(self.cidr).containsIP(a.address))",message="every allocation address must be an IP address inside the block's cidr"
type IPAMBlockSpec struct {
	// CIDR is the block's range. The object's name is derived from it, so that
	// two nodes creating the same block collide on the name.
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="cidr is immutable"
	CIDR string `json:"cidr"`

	// Affinity is the name of the node that owns the block and advertises it,
	// or empty for a block that no node owns (it is freed once empty).
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == '' || self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",messageExpression="'affinity ' + self + ' is not a node name (lowercase letters, digits, - and ., as Kubernetes names nodes)'"
	Affinity string `json:"affinity,omitempty"`

	// Allocations lists the allocated addresses of the block.
	// +optional
	//
	// The list is atomic: the API server then treats it as one value when
	// it tracks field ownership, which halves the cost of an update of a
	// full block (measured: 14-17 ms → 8 ms for 63 allocations). That every
	// address appears once is kept by the allocator's compare-and-swap
	// writes, and checked by rhizomectl ipam check.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=4096
	Allocations []IPAMAllocation `json:"allocations,omitempty"`

	// EmptySince records when the block's last allocation was released, so
	// that its affinity is kept for a grace period before the block is freed.
	// +optional
	EmptySince *metav1.Time `json:"emptySince,omitempty"`
}

// IPAMAllocation is one allocated address and who holds it.
type IPAMAllocation struct {
	// Address is the allocated IP address.
	// +kubebuilder:validation:MaxLength=39
	Address string `json:"address"`
	// Handle identifies the holder: for a CNI attachment the network name,
	// '/', the container ID and the interface name joined by a dot.
	// Allocating twice with one handle returns one address.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	Handle string `json:"handle"`
	// Namespace of the pod holding the address, if any.
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// Pod is the name of the pod holding the address, if any.
	// +optional
	Pod string `json:"pod,omitempty"`
	// PodUID is the UID of the pod holding the address, if known: the
	// garbage collector frees the address of a pod that was re-created
	// under the same name (a new UID), which the name alone cannot tell.
	// +optional
	// +kubebuilder:validation:MaxLength=36
	PodUID string `json:"podUID,omitempty"`
	// Node is the node that allocated the address. It differs from the
	// block's affinity when the address is borrowed.
	// +optional
	Node string `json:"node,omitempty"`
}

// IPAMBlockStatus is a summary kept in step with the spec by the same write.
type IPAMBlockStatus struct {
	// Allocated is the number of allocated addresses.
	// +optional
	Allocated int32 `json:"allocated,omitempty"`
	// Borrowed is the number of addresses allocated by nodes other than the
	// block's affinity.
	// +optional
	Borrowed int32 `json:"borrowed,omitempty"`
}

// IPAMBlock is a block of pod addresses claimed by one node.
//
// It deliberately has no status subresource: the summary in status is written
// in the same update as the allocations, so one write stays one write.
//
// Its name is derived from its cidr (the address with '.' and ':' replaced by
// '-', a leading '-' prefixed with '0', then '-' and the prefix length), so
// that two nodes claiming the same block collide on the name.
//
// The API server checks that rule in the admission policy
// rhizome-ipamblock-fits-pools (ipam/manifests): as a CRD rule on an
// unbounded metadata.name its estimated cost is over the CRD budget.
//
// +genclient
// +genclient:nonNamespaced
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=ipb
// +kubebuilder:printcolumn:name="CIDR",type=string,JSONPath=`.spec.cidr`
// +kubebuilder:printcolumn:name="Affinity",type=string,JSONPath=`.spec.affinity`
// +kubebuilder:printcolumn:name="Allocated",type=integer,JSONPath=`.status.allocated`
// +kubebuilder:printcolumn:name="Borrowed",type=integer,JSONPath=`.status.borrowed`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type IPAMBlock struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   IPAMBlockSpec   `json:"spec"`
	Status IPAMBlockStatus `json:"status,omitempty"`
}

// IPAMBlockList is a list of IPAMBlocks.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
type IPAMBlockList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPAMBlock `json:"items"`
}
