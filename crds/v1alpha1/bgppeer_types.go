package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SourceAddress says which local address a BGP session uses.
// +kubebuilder:validation:Enum=UseNodeIP;None
type SourceAddress string

const (
	// SourceAddressNodeIP binds the session to the node's own address.
	SourceAddressNodeIP SourceAddress = "UseNodeIP"
	// SourceAddressNone lets the kernel choose the source address.
	SourceAddressNone SourceAddress = "None"
)

// FilterAction is what a matching filter rule does with a route.
// +kubebuilder:validation:Enum=Accept;Reject
type FilterAction string

const (
	// FilterAccept accepts the route.
	FilterAccept FilterAction = "Accept"
	// FilterReject rejects the route.
	FilterReject FilterAction = "Reject"
)

// MatchOperator says how a filter rule's CIDR is compared with a route.
// +kubebuilder:validation:Enum=Equal;NotEqual;In;NotIn
type MatchOperator string

const (
	// MatchEqual matches a route exactly equal to the CIDR.
	MatchEqual MatchOperator = "Equal"
	// MatchNotEqual matches every route except the CIDR itself.
	MatchNotEqual MatchOperator = "NotEqual"
	// MatchIn matches routes inside the CIDR (including the CIDR itself).
	MatchIn MatchOperator = "In"
	// MatchNotIn matches routes outside the CIDR.
	MatchNotIn MatchOperator = "NotIn"
)

// BGPPeerSpec is a BGP session, or a set of them, that some of our nodes open.
//
// A peer is either an address (peerIP, with asNumber), typically a top-of-rack
// router, or a set of our own nodes (peerSelector), typically route reflectors.
// Which of our nodes open the session is chosen by node or nodeSelector; with
// neither, every node does.
//
// +kubebuilder:validation:XValidation:rule="has(self.peerIP) != has(self.peerSelector)",message="set exactly one of peerIP (an external router) and peerSelector (our own nodes, e.g. route reflectors)"
// +kubebuilder:validation:XValidation:rule="!has(self.peerIP) || has(self.asNumber)",message="asNumber is required with peerIP: set the peer's AS"
// +kubebuilder:validation:XValidation:rule="!(has(self.node) && has(self.nodeSelector))",message="set at most one of node and nodeSelector"
// +kubebuilder:validation:XValidation:rule="!(has(self.ebgpMultihop) && has(self.ttlSecurity))",message="ebgpMultihop and ttlSecurity cannot both be set: TTL security (GTSM) fixes the TTL at 255"
// +kubebuilder:validation:XValidation:rule="!has(self.keepaliveTime) || !has(self.holdTime) || duration(self.holdTime) == duration('0s') || duration(self.keepaliveTime) < duration(self.holdTime)",message="keepaliveTime must be shorter than holdTime (typically a third of it)"
type BGPPeerSpec struct {
	// PeerIP is the peer's address, optionally with a port:
	// 10.0.0.1, 10.0.0.1:1179, fd00::1 or [fd00::1]:1179.
	// +optional
	// +kubebuilder:validation:MaxLength=47
	// +kubebuilder:validation:XValidation:rule="isIP(self) || (self.matches('^[0-9.]+:[0-9]{1,5}$') && isIP(self.substring(0, self.lastIndexOf(':'))) && int(self.substring(self.lastIndexOf(':') + 1)) >= 1 && int(self.substring(self.lastIndexOf(':') + 1)) <= 65535) || (self.matches('^\\\\[[0-9a-fA-F:.]+\\\\]:[0-9]{1,5}$') && isIP(self.substring(1, self.lastIndexOf(']'))) && int(self.substring(self.lastIndexOf(':') + 1)) >= 1 && int(self.substring(self.lastIndexOf(':') + 1)) <= 65535)",messageExpression="'peerIP ' + self + ' is not an IP address, IP:port or [IPv6]:port with a port 1-65535'"
	PeerIP string `json:"peerIP,omitempty"`

	// ASNumber is the peer's AS. Equal to ours means iBGP, different eBGP.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	ASNumber *int64 `json:"asNumber,omitempty"`

	// Node is the name of the one node that opens this session.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Node string `json:"node,omitempty"`

	// NodeSelector chooses the nodes that open this session.
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// PeerSelector chooses our own nodes as the peers, for route-reflector
	// topologies: each selected node opens a session to each peer node.
	// +optional
	PeerSelector *metav1.LabelSelector `json:"peerSelector,omitempty"`

	// Password sets a TCP MD5 password (RFC 2385) from a Secret in the agent's
	// namespace. Without the Secret the session is not started and the
	// node's status says why.
	// +optional
	Password *BGPPassword `json:"password,omitempty"`

	// SourceAddress chooses the local address of the session. Default
	// UseNodeIP.
	// +optional
	// +kubebuilder:default=UseNodeIP
	SourceAddress SourceAddress `json:"sourceAddress,omitempty"`

	// EBGPMultihop allows an eBGP peer this many hops away (TTL 2-255).
	// +optional
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=255
	EBGPMultihop *int32 `json:"ebgpMultihop,omitempty"`

	// TTLSecurity turns on the Generalized TTL Security Mechanism (RFC 5082),
	// as Calico means it: the peer is at most this many hops away, 1 being
	// directly connected. We send with TTL 255 and accept packets from the
	// peer only with a TTL of at least 256 minus this value (255 for 1: no
	// router between).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=254
	TTLSecurity *int32 `json:"ttlSecurity,omitempty"`

	// Passive waits for the peer to connect instead of connecting to it.
	// +optional
	Passive bool `json:"passive,omitempty"`

	// KeepaliveTime overrides the BGPConfiguration keepalive interval.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('21845s')",message="keepaliveTime must be between 1s and 21845s"
	KeepaliveTime *metav1.Duration `json:"keepaliveTime,omitempty"`

	// HoldTime overrides the BGPConfiguration hold time.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) == duration('0s') || (duration(self) >= duration('3s') && duration(self) <= duration('65535s'))",message="holdTime must be 0s or between 3s and 65535s"
	HoldTime *metav1.Duration `json:"holdTime,omitempty"`

	// ConnectRetryTime is how long to wait between connection attempts.
	// Default 30s (GoBGP's default is 120s).
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('65535s')",message="connectRetryTime must be between 1s and 65535s"
	ConnectRetryTime *metav1.Duration `json:"connectRetryTime,omitempty"`

	// MaxPrefix closes the session and reports it when the peer sends more
	// than this many prefixes; it stays down until its configuration
	// changes (sessions between nodes: it is tried again a minute later).
	// 0: no limit. Unset: no limit on external peers; on sessions between
	// nodes (peerSelector), the default derived from the IP pools.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967295
	MaxPrefix *int64 `json:"maxPrefix,omitempty"`

	// BFD configures BFD on this peer's sessions. Default off.
	// +optional
	BFD *BFD `json:"bfd,omitempty"`

	// GracefulRestart overrides the BGPConfiguration graceful restart
	// settings for this peer.
	// +optional
	GracefulRestart *GracefulRestart `json:"gracefulRestart,omitempty"`

	// ImportFilters decide, first match wins, which routes from this peer are
	// accepted. From an external peer (peerIP) nothing is accepted unless a
	// rule accepts it. Routes covering this node's own blocks or address are
	// always rejected.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	ImportFilters []FilterRule `json:"importFilters,omitempty"`

	// ExportFilters decide, first match wins, which of the routes this node
	// advertises are sent to this peer. Routes that no rule matches are sent.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	ExportFilters []FilterRule `json:"exportFilters,omitempty"`
}

// BGPPassword is a reference to a TCP MD5 password.
type BGPPassword struct {
	// SecretKeyRef names the Secret, in the agent's namespace, and its key.
	SecretKeyRef *corev1.SecretKeySelector `json:"secretKeyRef"`
}

// FilterRule is one rule of an ordered prefix filter.
//
// +kubebuilder:validation:XValidation:rule="!has(self.prefixLength) || !has(self.prefixLength.min) || !has(self.prefixLength.max) || self.prefixLength.min <= self.prefixLength.max",message="prefixLength.min must not be larger than prefixLength.max"
// +kubebuilder:validation:XValidation:rule="!has(self.prefixLength) || !has(self.prefixLength.min) || !isCIDR(self.cidr) || self.prefixLength.min >= cidr(self.cidr).prefixLength()",message="prefixLength.min must be at least the cidr's own prefix length"
// +kubebuilder:validation:XValidation:rule="!has(self.prefixLength) || !isCIDR(self.cidr) || cidr(self.cidr).ip().family() == 6 || ((!has(self.prefixLength.min) || self.prefixLength.min <= 32) && (!has(self.prefixLength.max) || self.prefixLength.max <= 32))",message="prefixLength must be at most 32 for an IPv4 cidr"
type FilterRule struct {
	// CIDR is the prefix the rule compares routes with, e.g. 0.0.0.0/0.
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self) && cidr(self) == cidr(self).masked()",messageExpression="'cidr ' + self + ' must be a network address in CIDR notation with no host bits set'"
	CIDR string `json:"cidr"`
	// MatchOperator compares the route with CIDR. Default In.
	// +optional
	// +kubebuilder:default=In
	MatchOperator MatchOperator `json:"matchOperator,omitempty"`
	// PrefixLength further limits the matched routes by their prefix length.
	// +optional
	PrefixLength *PrefixLengthRange `json:"prefixLength,omitempty"`
	// Action is taken on a matching route.
	Action FilterAction `json:"action"`
}

// PrefixLengthRange is an inclusive range of prefix lengths.
type PrefixLengthRange struct {
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=128
	Min *int32 `json:"min,omitempty"`
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=128
	Max *int32 `json:"max,omitempty"`
}

// BGPPeer is a BGP session that some of our nodes open: to a router such as a
// ToR, or to other nodes such as route reflectors.
//
// +genclient
// +genclient:nonNamespaced
// +genclient:noStatus
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster
// +kubebuilder:printcolumn:name="Peer",type=string,JSONPath=`.spec.peerIP`
// +kubebuilder:printcolumn:name="AS",type=integer,JSONPath=`.spec.asNumber`
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.spec.node`
// +kubebuilder:printcolumn:name="Passive",type=boolean,JSONPath=`.spec.passive`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BGPPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec BGPPeerSpec `json:"spec"`
}

// BGPPeerList is a list of BGPPeers.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
type BGPPeerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPPeer `json:"items"`
}
