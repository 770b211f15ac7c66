package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Defaults of BGPConfiguration, applied when neither the `default` object nor
// the node's own object sets a field.
const (
	// DefaultBGPConfigurationName is the name of the cluster-wide object.
	DefaultBGPConfigurationName = "default"
	// NodeBGPConfigurationPrefix prefixes the name of a per-node object:
	// node.<node name>.
	NodeBGPConfigurationPrefix = "node."
	// DefaultASNumber is the private AS that nodes use when none is set.
	DefaultASNumber = 64512
	// DefaultListenPort is the BGP port.
	DefaultListenPort = 179
	// DefaultRouteProtocol marks kernel routes as Rhizome's: 114 is ASCII 'r'
	// and no other routing daemon registers it (zebra is 11, BIRD 12, FRR's
	// bgpd 186, Calico's Felix 80).
	DefaultRouteProtocol = 114
	// DefaultRouteTable is the kernel's main table.
	DefaultRouteTable = 254
)

// BGPConfigurationSpec holds BGP settings: cluster-wide in the object named
// `default`, per node in objects named `node.<node name>`. A per-node object
// overrides each field it sets; fields it leaves out come from `default`.
//
// +kubebuilder:validation:XValidation:rule="!has(self.keepaliveTime) || !has(self.holdTime) || duration(self.holdTime) == duration('0s') || duration(self.keepaliveTime) < duration(self.holdTime)",message="keepaliveTime must be shorter than holdTime (typically a third of it)"
type BGPConfigurationSpec struct {
	// ASNumber is the AS of the nodes. Default 64512.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	ASNumber *int64 `json:"asNumber,omitempty"`

	// NodeToNodeMesh peers every node with every other node over iBGP.
	// Turn it off when route reflectors or ToR routers carry the routes.
	// Default true.
	// +optional
	NodeToNodeMesh *bool `json:"nodeToNodeMesh,omitempty"`

	// NodeMeshPassword is the TCP MD5 password of the node-to-node mesh
	// sessions, from a Secret in the agents' namespace (as Calico's
	// nodeMeshPassword). A node that does not know it cannot join the mesh.
	// Cluster-wide: set it in BGPConfiguration default (a node.<name>
	// configuration's is ignored, with a problem reported). When the Secret
	// cannot be read, mesh sessions are not opened rather than opened
	// without the password.
	// +optional
	NodeMeshPassword *BGPPassword `json:"nodeMeshPassword,omitempty"`

	// NodeMeshTTLSecurity turns on the Generalized TTL Security Mechanism
	// (RFC 5082) on the sessions between nodes, meaning what BGPPeer
	// ttlSecurity means: a peer node is at most this many hops away, 1
	// being directly connected (its segments must arrive with TTL 255), 2
	// one router between (TTL 254 or more), and so on. Nodes in other racks,
	// behind the ToRs, need the number of routers between plus one. It
	// applies to the mesh and to route-reflector sessions (BGPPeer with
	// peerSelector) unless that BGPPeer sets ttlSecurity or ebgpMultihop
	// itself. Both ends of a session must agree, so it is cluster-wide: set
	// it in BGPConfiguration default. Turning it on or off changes the
	// live sessions in place, without a reset.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=254
	NodeMeshTTLSecurity *int32 `json:"nodeMeshTTLSecurity,omitempty"`

	// NodeToNodeMeshBFD configures BFD on the node-to-node mesh sessions
	// (BFD on route-reflector and external sessions is set in their
	// BGPPeer). Default off.
	// +optional
	NodeToNodeMeshBFD *BFD `json:"nodeToNodeMeshBFD,omitempty"`

	// ListenPort is the TCP port the nodes' BGP speakers listen on. Default 179.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	ListenPort *int32 `json:"listenPort,omitempty"`

	// KeepaliveTime is the BGP keepalive interval. Default 30s.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('21845s')",message="keepaliveTime must be between 1s and 21845s"
	KeepaliveTime *metav1.Duration `json:"keepaliveTime,omitempty"`

	// HoldTime is the BGP hold time: a session without messages for this
	// long is closed. 0s disables it; otherwise at least 3s. Default 90s.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) == duration('0s') || (duration(self) >= duration('3s') && duration(self) <= duration('65535s'))",message="holdTime must be 0s or between 3s and 65535s"
	HoldTime *metav1.Duration `json:"holdTime,omitempty"`

	// GracefulRestart configures RFC 4724 graceful restart, on by default: when
	// an agent restarts, its peers keep its routes until it is back.
	// +optional
	GracefulRestart *GracefulRestart `json:"gracefulRestart,omitempty"`

	// RouteReflectorClusterID makes the node a route reflector with this
	// cluster ID (an IPv4 address). Only in per-node objects.
	// +optional
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule="isIP(self) && ip(self).family() == 4",message="routeReflectorClusterID must be an IPv4 address such as 224.0.0.1"
	RouteReflectorClusterID string `json:"routeReflectorClusterID,omitempty"`

	// ServiceClusterIPs are Service cluster IP ranges that every node
	// advertises.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	ServiceClusterIPs []ServiceIPBlock `json:"serviceClusterIPs,omitempty"`

	// ServiceExternalIPs are Service external IP ranges that every node
	// advertises.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	ServiceExternalIPs []ServiceIPBlock `json:"serviceExternalIPs,omitempty"`

	// ServiceLoadBalancerIPs are Service load-balancer IP ranges that every
	// node advertises.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	ServiceLoadBalancerIPs []ServiceIPBlock `json:"serviceLoadBalancerIPs,omitempty"`

	// Communities are BGP communities attached to every route the node
	// advertises: standard (`64512:100`) or large (`64512:1:100`).
	// +optional
	// +kubebuilder:validation:MaxItems=32
	Communities []Community `json:"communities,omitempty"`

	// PrefixAdvertisements attach further communities to the advertised
	// routes inside a given CIDR.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	PrefixAdvertisements []PrefixAdvertisement `json:"prefixAdvertisements,omitempty"`

	// RouteProtocol is the kernel routing protocol number on every route the
	// agent installs; the agent only ever changes routes carrying it.
	// Default 114. Must not be one of the kernel's own (0-4) or another
	// daemon's (zebra 11, BIRD 12, bgpd 186...): pick a free number.
	// +optional
	// +kubebuilder:validation:Minimum=5
	// +kubebuilder:validation:Maximum=255
	// +kubebuilder:validation:XValidation:rule="!(self in [8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 42, 99, 186, 187, 188, 189, 192])",message="routeProtocol is registered to another routing daemon (see /etc/iproute2/rt_protos); pick a free number such as the default 114"
	RouteProtocol *int32 `json:"routeProtocol,omitempty"`

	// RouteTable is the kernel routing table the agent installs routes into.
	// Default 254 (main). Another table needs an ip rule that you manage.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	// +kubebuilder:validation:XValidation:rule="!(self in [0, 253, 255])",message="routeTable cannot be the kernel's unspec (0), default (253) or local (255) table"
	RouteTable *int64 `json:"routeTable,omitempty"`
}

// GracefulRestart configures BGP graceful restart (RFC 4724) and, optionally,
// long-lived graceful restart (RFC 9494).
type GracefulRestart struct {
	// Enabled turns graceful restart on. Default true.
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
	// RestartTime is how long peers keep this node's routes while it
	// restarts. Default 120s; at most 4095s.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('4095s')",message="restartTime must be between 1s and 4095s"
	RestartTime *metav1.Duration `json:"restartTime,omitempty"`
	// LongLivedStaleTime turns on long-lived graceful restart: after the
	// restart time, peers keep this node's routes as stale (least preferred)
	// for this much longer. Unset or 0s: off.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('16777215s')",message="longLivedStaleTime must be between 0s and 16777215s"
	LongLivedStaleTime *metav1.Duration `json:"longLivedStaleTime,omitempty"`
}

// ServiceIPBlock is a range of Service addresses to advertise.
type ServiceIPBlock struct {
	// CIDR is the range, e.g. 10.96.0.0/12.
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self) && cidr(self) == cidr(self).masked()",messageExpression="'cidr ' + self + ' must be a network address in CIDR notation with no host bits set, e.g. 10.96.0.0/12'"
	CIDR string `json:"cidr"`
}

// Community is a BGP standard community (`AS:value`, each 0-65535) or a large
// community (`global:local1:local2`, each 0-4294967295).
// +kubebuilder:validation:MaxLength=32
// +kubebuilder:validation:Pattern=`^[0-9]{1,10}:[0-9]{1,10}(:[0-9]{1,10})?$`
// +kubebuilder:validation:XValidation:rule="self.split(':').size() == 3 ? self.split(':').all(p, int(p) <= 4294967295) : self.split(':').all(p, int(p) <= 65535)",messageExpression="'community ' + self + ' is out of range: a standard community is AS:value with each part 0-65535, a large community global:local1:local2 with each part 0-4294967295'"
type Community string

// PrefixAdvertisement attaches communities to advertised routes inside CIDR.
type PrefixAdvertisement struct {
	// CIDR selects the advertised routes it contains.
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self) && cidr(self) == cidr(self).masked()",messageExpression="'cidr ' + self + ' must be a network address in CIDR notation with no host bits set'"
	CIDR string `json:"cidr"`
	// Communities to attach.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	Communities []Community `json:"communities"`
}

// BGPConfiguration holds BGP settings for the cluster (`default`) or one node
// (`node.<name>`).
//
// +genclient
// +genclient:nonNamespaced
// +genclient:noStatus
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=bgpconfig
// +kubebuilder:validation:XValidation:rule="self.metadata.name == 'default' || self.metadata.name.startsWith('node.')",message="a BGPConfiguration must be named 'default' (cluster-wide) or 'node.<node name>' (one node)"
// +kubebuilder:validation:XValidation:rule="!has(self.spec.routeReflectorClusterID) || self.metadata.name.startsWith('node.')",message="routeReflectorClusterID is per node: set it in the node's own BGPConfiguration named 'node.<node name>'"
// +kubebuilder:validation:XValidation:rule="!has(self.spec.nodeMeshTTLSecurity) || self.metadata.name == 'default'",message="nodeMeshTTLSecurity is cluster-wide (both ends of a session must agree): set it in BGPConfiguration default"
// +kubebuilder:printcolumn:name="AS",type=integer,JSONPath=`.spec.asNumber`
// +kubebuilder:printcolumn:name="Mesh",type=boolean,JSONPath=`.spec.nodeToNodeMesh`
// +kubebuilder:printcolumn:name="Port",type=integer,JSONPath=`.spec.listenPort`
// +kubebuilder:printcolumn:name="RR-Cluster",type=string,JSONPath=`.spec.routeReflectorClusterID`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BGPConfiguration struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec BGPConfigurationSpec `json:"spec,omitempty"`
}

// BGPConfigurationList is a list of BGPConfigurations.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
type BGPConfigurationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPConfiguration `json:"items"`
}
