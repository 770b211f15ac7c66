package reconcile

import (
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/rhizome-net/rhizome/bgp/topology"
	rzlisters "github.com/rhizome-net/rhizome/crds/client/listers/crds/v1alpha1"
)

// Listers are the informer caches a State is read from. RhizomeNodes is
// optional (nil: node addresses come from the Nodes' InternalIPs).
type Listers struct {
	Nodes        corelisters.NodeLister
	RhizomeNodes rzlisters.RhizomeNodeLister
	Configs      rzlisters.BGPConfigurationLister
	Peers        rzlisters.BGPPeerLister
	Pools        rzlisters.IPPoolLister
	// Secrets of the agent's namespace, for BGP passwords. The agent
	// should re-run Reconcile when one changes.
	Secrets corelisters.SecretNamespaceLister
}

// State reads the current cluster state from the caches. in carries what
// the agent knows itself (NodeName, detected addresses, router ID
// override); local is its IPAM's blocks and borrowed addresses. The
// objects are the caches' own: read-only, as topology treats them.
func (l Listers) State(in topology.Input, local topology.Local) (State, error) {
	var err error
	st := State{Input: in, Local: local}
	if st.Nodes, err = l.Nodes.List(labels.Everything()); err != nil {
		return st, fmt.Errorf("listing Nodes: %w", err)
	}
	if l.RhizomeNodes != nil {
		if st.RhizomeNodes, err = l.RhizomeNodes.List(labels.Everything()); err != nil {
			return st, fmt.Errorf("listing RhizomeNodes: %w", err)
		}
	}
	if st.Configs, err = l.Configs.List(labels.Everything()); err != nil {
		return st, fmt.Errorf("listing BGPConfigurations: %w", err)
	}
	if st.Peers, err = l.Peers.List(labels.Everything()); err != nil {
		return st, fmt.Errorf("listing BGPPeers: %w", err)
	}
	if st.Pools, err = l.Pools.List(labels.Everything()); err != nil {
		return st, fmt.Errorf("listing IPPools: %w", err)
	}
	if l.Secrets != nil {
		secrets := l.Secrets
		st.Secret = func(name, key string) (string, error) {
			s, err := secrets.Get(name)
			if apierrors.IsNotFound(err) {
				return "", fmt.Errorf("no Secret %s in the agent's namespace", name)
			}
			if err != nil {
				return "", err
			}
			v, ok := s.Data[key]
			if !ok {
				return "", fmt.Errorf("key %s is missing from Secret %s", key, name)
			}
			return string(v), nil
		}
	}
	return st, nil
}
