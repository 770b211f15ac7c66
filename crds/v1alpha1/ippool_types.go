package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// EncapMode says when traffic between nodes is encapsulated.
// +kubebuilder:validation:Enum=Never;Always;CrossSubnet
type EncapMode string

const (
	// EncapNever routes natively: the next hop must be reachable at layer 2 or
	// through routers that know the pod routes (for example ToRs peering BGP).
	EncapNever EncapMode = "Never"
	// EncapAlways encapsulates all traffic to other nodes.
	EncapAlways EncapMode = "Always"
	// EncapCrossSubnet encapsulates only towards nodes outside this node's
	// own subnet and routes natively inside it.
	EncapCrossSubnet EncapMode = "CrossSubnet"
)

// Default block sizes, as in Calico: 64 addresses per block in either family.
const (
	DefaultBlockSizeIPv4 = 26
	DefaultBlockSizeIPv6 = 122
)

// IPPoolFinalizer is set on every IPPool by the IPAM controller and removed
// only once no address of the pool is allocated any more, so that deleting a
// pool in use leaves it Terminating (and disabled) instead of orphaning its
// addresses.
const IPPoolFinalizer = "rhizome.dev/ipam"

// Condition types of IPPool status.
const (
	// IPPoolExhausted is True when no address of the pool can be allocated.
	IPPoolExhausted = "Exhausted"
	// IPPoolValid is False when the agents ignore the pool, for example
	// because its cidr overlaps an older pool.
	IPPoolValid = "Valid"
	// IPPoolDeletionBlocked is True while a deleted pool waits for its
	// allocated addresses to be released.
	IPPoolDeletionBlocked = "DeletionBlocked"
)

// IPPoolSpec is the desired state of an IPPool.
//
// +kubebuilder:validation:XValidation:rule="isCIDR(self.cidr)",messageExpression="'cidr ' + self.cidr + ' is not an IPv4 or IPv6 network in CIDR notation; write it like 10.244.0.0/16 or fd00:10:244::/56'"
// +kubebuilder:validation:XValidation:rule="!isCIDR(self.cidr) || cidr(self.cidr) == cidr(self.cidr).masked()",messageExpression="'cidr ' + self.cidr + ' has host bits set; use the network address (the lowest address of the range), e.g. 10.244.0.0/16 rather than 10.244.1.0/16'"
// +kubebuilder:validation:XValidation:rule="!isCIDR(self.cidr) || !has(self.blockSize) || (cidr(self.cidr).ip().family() == 4 ? (self.blockSize >= 20 && self.blockSize <= 32) : (self.blockSize >= 116 && self.blockSize <= 128))",message="blockSize must be 20-32 for an IPv4 pool and 116-128 for an IPv6 pool"
// +kubebuilder:validation:XValidation:rule="!isCIDR(self.cidr) || !has(self.blockSize) || self.blockSize >= cidr(self.cidr).prefixLength()",messageExpression="'blockSize is shorter than the prefix of the pool ' + self.cidr + '; a block cannot be larger than its pool'"
// +kubebuilder:validation:XValidation:rule="!isCIDR(self.cidr) || has(self.blockSize) || cidr(self.cidr).prefixLength() <= (cidr(self.cidr).ip().family() == 4 ? 26 : 122)",message="the pool is smaller than one default block (/26 for IPv4, /122 for IPv6); set blockSize to at least the pool prefix length"
// +kubebuilder:validation:XValidation:rule="has(self.blockSize) == has(oldSelf.blockSize) && (!has(self.blockSize) || self.blockSize == oldSelf.blockSize)",message="blockSize is immutable; create a new IPPool to change it"
// +kubebuilder:validation:XValidation:rule="self.ipipMode == 'Never' || self.vxlanMode == 'Never'",message="ipipMode and vxlanMode cannot both be enabled; set one of them to Never"
// +kubebuilder:validation:XValidation:rule="!isCIDR(self.cidr) || cidr(self.cidr).ip().family() == 4 || self.ipipMode == 'Never'",message="ipipMode is IPv4 only; use vxlanMode for an IPv6 pool"
type IPPoolSpec struct {
	// CIDR is the pool's address range, IPv4 or IPv6, e.g. 10.244.0.0/16.
	// It cannot be changed: to renumber, create a new pool and disable this one.
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="cidr is immutable; create a new IPPool and disable this one to migrate"
	CIDR string `json:"cidr"`

	// BlockSize is the prefix length of the blocks that nodes claim from this
	// pool. Defaults to 26 for IPv4 (64 addresses) and 122 for IPv6. Allowed:
	// 20-32 (IPv4) and 116-128 (IPv6), and never shorter than the pool prefix.
	// It cannot be changed while blocks exist, so it is immutable.
	// +optional
	BlockSize *int32 `json:"blockSize,omitempty"`

	// NodeSelector chooses the nodes that may claim blocks from this pool.
	// Empty or absent selects every node.
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// IPIPMode says when traffic to this pool's addresses on other nodes is
	// encapsulated in IP-in-IP (IPv4 only).
	// +kubebuilder:default=Never
	// +optional
	IPIPMode EncapMode `json:"ipipMode,omitempty"`

	// VXLANMode says when traffic to this pool's addresses on other nodes is
	// encapsulated in VXLAN.
	// +kubebuilder:default=Never
	// +optional
	VXLANMode EncapMode `json:"vxlanMode,omitempty"`

	// NATOutgoing masquerades traffic from this pool's addresses to
	// destinations outside every IPPool behind the node's own address.
	// +optional
	NATOutgoing bool `json:"natOutgoing,omitempty"`

	// Disabled stops new allocations from this pool. Existing allocations,
	// blocks and routes stay.
	// +optional
	Disabled bool `json:"disabled,omitempty"`

	// DisableBGPExport keeps this pool's blocks out of BGP advertisements, for
	// pools that are reached only through encapsulation or not at all.
	// +optional
	DisableBGPExport bool `json:"disableBGPExport,omitempty"`
}

// IPPoolStatus is the observed use of an IPPool, written by the agents. Its
// counts are always present, 0 included.
type IPPoolStatus struct {
	// The counts have no omitempty: 0 addresses in use is what an uninstall
	// waits for (`kubectl wait --for=jsonpath={.status.addressesInUse}=0`,
	// docs/install.md), and kubectl's JSONPath wait never matches a field
	// that is absent.

	// Blocks is the number of blocks the pool can hold.
	// +optional
	Blocks int64 `json:"blocks"`
	// BlocksInUse is the number of blocks that exist (claimed by a node or
	// still holding addresses).
	// +optional
	BlocksInUse int64 `json:"blocksInUse"`
	// AddressesInUse is the number of allocated addresses.
	// +optional
	AddressesInUse int64 `json:"addressesInUse"`
	// AddressesFree is the number of addresses that can still be allocated.
	// +optional
	AddressesFree int64 `json:"addressesFree"`
	// Conditions include Exhausted (no address left) and Valid.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// IPPool is a range of pod addresses that Rhizome cuts into blocks for nodes.
//
// +genclient
// +genclient:nonNamespaced
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=ipp
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="CIDR",type=string,JSONPath=`.spec.cidr`
// +kubebuilder:printcolumn:name="Block",type=integer,JSONPath=`.spec.blockSize`,description="Block prefix length (empty: 26 for IPv4, 122 for IPv6)"
// +kubebuilder:printcolumn:name="IPIP",type=string,JSONPath=`.spec.ipipMode`
// +kubebuilder:printcolumn:name="VXLAN",type=string,JSONPath=`.spec.vxlanMode`
// +kubebuilder:printcolumn:name="NAT",type=boolean,JSONPath=`.spec.natOutgoing`
// +kubebuilder:printcolumn:name="Disabled",type=boolean,JSONPath=`.spec.disabled`
// +kubebuilder:printcolumn:name="Used",type=integer,JSONPath=`.status.addressesInUse`
// +kubebuilder:printcolumn:name="Free",type=integer,JSONPath=`.status.addressesFree`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type IPPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   IPPoolSpec   `json:"spec"`
	Status IPPoolStatus `json:"status,omitempty"`
}

// IPPoolList is a list of IPPools.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
type IPPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPPool `json:"items"`
}
