package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Defaults of BFD, applied by the agent when a field is unset.
const (
	// DefaultBFDMinTxIntervalMillis and DefaultBFDMinRxIntervalMillis: 300 ms.
	DefaultBFDMinTxIntervalMillis = 300
	DefaultBFDMinRxIntervalMillis = 300
	// DefaultBFDMultiplier: three missed intervals, a detection time just
	// under a second.
	DefaultBFDMultiplier = 3
)

// BFD configures Bidirectional Forwarding Detection (RFC 5880, single hop
// per RFC 5881) on BGP sessions: a peer whose path dies is detected within
// multiplier × interval (900 ms by default) instead of the BGP hold time,
// and the session is closed and its routes withdrawn at once. The peer
// must run BFD too (BIRD's `bfd on`, FRR's `neighbor X bfd`); until it
// does, the BFD session stays Down and nothing happens.
type BFD struct {
	// Enabled turns BFD on for the sessions this object configures.
	// Default false.
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
	// MinTxInterval is how often this node would like to send BFD packets
	// once the session is up (the peer's minRxInterval may make it
	// slower). Default 300ms; 10ms to 60s.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10ms') && duration(self) <= duration('60s')",message="minTxInterval must be between 10ms and 60s"
	MinTxInterval *metav1.Duration `json:"minTxInterval,omitempty"`
	// MinRxInterval is the shortest interval between BFD packets this node
	// accepts from the peer. Default 300ms; 10ms to 60s.
	// +optional
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10ms') && duration(self) <= duration('60s')",message="minRxInterval must be between 10ms and 60s"
	MinRxInterval *metav1.Duration `json:"minRxInterval,omitempty"`
	// Multiplier is the detection multiplier: the peer declares this node
	// down after this many of its intervals without a packet, and this
	// node uses the peer's. Default 3; 1 to 255.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=255
	Multiplier *int32 `json:"multiplier,omitempty"`
}

// BFDSessionStatus is the observed state of the BFD session that watches
// a BGP session.
type BFDSessionStatus struct {
	// State is Up, Down, Init or AdminDown; Unavailable when the agent
	// could not run BFD (see Diagnostic).
	State string `json:"state"`
	// Diagnostic says why the session last changed state, as RFC 5880
	// names it (e.g. ControlDetectionTimeExpired: the peer went silent;
	// NeighborSignaledSessionDown: the peer said so).
	// +optional
	Diagnostic string `json:"diagnostic,omitempty"`
	// Since is when the session entered its state.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
	// DetectionTime is how long the peer may stay silent before the
	// session goes down, as negotiated with it.
	// +optional
	DetectionTime *metav1.Duration `json:"detectionTime,omitempty"`
	// Failures counts the times the session went from Up to Down since the
	// agent started.
	// +optional
	Failures int64 `json:"failures,omitempty"`
}
