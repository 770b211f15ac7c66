package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RhizomeNodeSpec is what a node's agent publishes for the other agents. It
// is written by the agent, not by people.
type RhizomeNodeSpec struct {
	// IPv4Address is the node's own address with its subnet's prefix length,
	// e.g. 10.0.1.2/24, as the agent uses it for BGP and encapsulation.
	// +optional
	// +kubebuilder:validation:MaxLength=18
	// +kubebuilder:validation:XValidation:rule="isCIDR(self) && cidr(self).ip().family() == 4",message="ipv4Address must be an IPv4 address with prefix length, e.g. 10.0.1.2/24"
	IPv4Address string `json:"ipv4Address,omitempty"`
	// IPv6Address is the node's own IPv6 address with its prefix length.
	// +optional
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self) && cidr(self).ip().family() == 6",message="ipv6Address must be an IPv6 address with prefix length, e.g. fd00::2/64"
	IPv6Address string `json:"ipv6Address,omitempty"`
	// VXLANTunnelMACAddr is the MAC address of the node's VXLAN device, which
	// the other nodes write into their neighbour and FDB tables.
	// +optional
	// +kubebuilder:validation:Pattern=`^([0-9a-f]{2}:){5}[0-9a-f]{2}$`
	VXLANTunnelMACAddr string `json:"vxlanTunnelMACAddr,omitempty"`
	// VXLANTunnelAddress is the IPv4 address of the node's VXLAN device.
	// +optional
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule="isIP(self) && ip(self).family() == 4",message="vxlanTunnelAddress must be an IPv4 address"
	VXLANTunnelAddress string `json:"vxlanTunnelAddress,omitempty"`
	// VXLANTunnelMACAddrV6 is the MAC address of the node's IPv6 VXLAN device.
	// +optional
	// +kubebuilder:validation:Pattern=`^([0-9a-f]{2}:){5}[0-9a-f]{2}$`
	VXLANTunnelMACAddrV6 string `json:"vxlanTunnelMACAddrV6,omitempty"`
	// VXLANTunnelAddressV6 is the IPv6 address of the node's IPv6 VXLAN device.
	// +optional
	// +kubebuilder:validation:MaxLength=39
	// +kubebuilder:validation:XValidation:rule="isIP(self) && ip(self).family() == 6",message="vxlanTunnelAddressV6 must be an IPv6 address"
	VXLANTunnelAddressV6 string `json:"vxlanTunnelAddressV6,omitempty"`
}

// SessionKind says why a BGP session exists.
// +kubebuilder:validation:Enum=mesh;rr;external
type SessionKind string

const (
	// SessionMesh is a node-to-node full-mesh session.
	SessionMesh SessionKind = "mesh"
	// SessionRR is a session between a route reflector and a client, or two
	// route reflectors, built from a BGPPeer with peerSelector.
	SessionRR SessionKind = "rr"
	// SessionExternal is a session to a router outside the cluster, built
	// from a BGPPeer with peerIP.
	SessionExternal SessionKind = "external"
)

// BGPSessionStatus is the observed state of one BGP session.
type BGPSessionStatus struct {
	// Peer is the peer's address (and port, if not 179).
	Peer string `json:"peer"`
	// PeerAS is the peer's AS.
	// +optional
	PeerAS int64 `json:"peerAS,omitempty"`
	// Kind says why the session exists.
	Kind SessionKind `json:"kind"`
	// Source names the object the session comes from: a BGPPeer or, for the
	// mesh, the peer's node.
	// +optional
	Source string `json:"source,omitempty"`
	// State is the BGP finite-state-machine state: Idle, Connect, Active,
	// OpenSent, OpenConfirm or Established; or NotStarted when the agent did
	// not start the session (see LastError).
	State string `json:"state"`
	// Since is when the session entered its current state.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
	// PrefixesReceived counts the prefixes the peer sent.
	// +optional
	PrefixesReceived int64 `json:"prefixesReceived,omitempty"`
	// PrefixesAccepted counts the prefixes that passed import policy.
	// +optional
	PrefixesAccepted int64 `json:"prefixesAccepted,omitempty"`
	// PrefixesAdvertised counts the prefixes sent to the peer.
	// +optional
	PrefixesAdvertised int64 `json:"prefixesAdvertised,omitempty"`
	// PrefixesRejected counts the received prefixes that import policy
	// rejected, by reason: for our own nodes held (nothing in IPAM
	// justifies it yet), not-owner, not-originated, next-hop,
	// unknown-originator, not-in-pool; for every peer own-block,
	// own-address, next-hop-self, filter, no-filter-match, unknown-peer
	// (docs/design/0014). Reasons with none are left out.
	// +optional
	PrefixesRejected map[string]int64 `json:"prefixesRejected,omitempty"`
	// LastError explains why the session is not established, or why it
	// last went down.
	// +optional
	LastError string `json:"lastError,omitempty"`
	// BFD is the state of the session's BFD, when it has BFD on.
	// +optional
	BFD *BFDSessionStatus `json:"bfd,omitempty"`
}

// EncapDevice is a tunnel device the agent manages.
type EncapDevice struct {
	// Name of the device, e.g. vxlan.rhizome or tunl0.
	Name string `json:"name"`
	// Type is vxlan, vxlan6 or ipip.
	Type string `json:"type"`
	// MTU of the device.
	// +optional
	MTU int32 `json:"mtu,omitempty"`
	// Address of the device, if it has one.
	// +optional
	Address string `json:"address,omitempty"`
}

// RhizomeNodeStatus is the observed state of a node's agent.
type RhizomeNodeStatus struct {
	// RouterID is the BGP router ID of the node.
	// +optional
	RouterID string `json:"routerID,omitempty"`
	// ASNumber is the node's AS.
	// +optional
	ASNumber int64 `json:"asNumber,omitempty"`
	// SessionsEstablished summarises the sessions as established/total.
	// +optional
	SessionsEstablished string `json:"sessionsEstablished,omitempty"`
	// Sessions lists the BGP sessions the node should have: all of them on
	// a node with at most 100; on a larger one (a route reflector), those
	// not established first, then established ones, 100 in all, and
	// SessionsOmitted counts the rest (the object would otherwise outgrow
	// what the API server stores). The agent's /status lists them all.
	// +optional
	// +listType=map
	// +listMapKey=peer
	Sessions []BGPSessionStatus `json:"sessions,omitempty"`
	// SessionsOmitted counts the sessions left out of Sessions.
	// +optional
	SessionsOmitted int64 `json:"sessionsOmitted,omitempty"`
	// RoutesProgrammed is the number of kernel routes the agent owns.
	// +optional
	RoutesProgrammed int64 `json:"routesProgrammed,omitempty"`
	// Blocks lists the CIDRs of the IPAM blocks the node holds by affinity.
	// +optional
	Blocks []string `json:"blocks,omitempty"`
	// BorrowedAddresses lists addresses the node's pods hold in other nodes'
	// blocks; they are advertised as host routes.
	// +optional
	BorrowedAddresses []string `json:"borrowedAddresses,omitempty"`
	// EncapDevices lists the tunnel devices the agent manages.
	// +optional
	EncapDevices []EncapDevice `json:"encapDevices,omitempty"`
	// ObservedAt is when the agent last wrote this status.
	// +optional
	ObservedAt *metav1.Time `json:"observedAt,omitempty"`
	// Conditions include Ready, BGPReady (every session that should be up is
	// up) and RoutesSynced.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// RhizomeNode is the per-node record of a Rhizome agent: what it publishes
// for other nodes (spec) and what it observes (status). Its name is the
// node's name.
//
// +genclient
// +genclient:nonNamespaced
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=rzn
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Router-ID",type=string,JSONPath=`.status.routerID`
// +kubebuilder:printcolumn:name="AS",type=integer,JSONPath=`.status.asNumber`
// +kubebuilder:printcolumn:name="Sessions",type=string,JSONPath=`.status.sessionsEstablished`,description="Established/total BGP sessions"
// +kubebuilder:printcolumn:name="Routes",type=integer,JSONPath=`.status.routesProgrammed`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type RhizomeNode struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   RhizomeNodeSpec   `json:"spec,omitempty"`
	Status RhizomeNodeStatus `json:"status,omitempty"`
}

// RhizomeNodeList is a list of RhizomeNodes.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
type RhizomeNodeList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RhizomeNode `json:"items"`
}
