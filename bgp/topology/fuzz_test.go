package topology

import (
	"encoding/json"
	"errors"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// fuzzObjects is what FuzzCompute decodes its input into: the objects an
// operator (or anyone with write access to the rhizome.dev kinds and Nodes)
// can write, in any combination the API server might let through.
type fuzzObjects struct {
	Self         string
	Nodes        []*corev1.Node
	RhizomeNodes []*v1alpha1.RhizomeNode
	Configs      []*v1alpha1.BGPConfiguration
	Peers        []*v1alpha1.BGPPeer
	Pools        []*v1alpha1.IPPool
	Blocks       []string
	Borrowed     []string
}

// FuzzCompute turns arbitrary objects into desired BGP state, through every
// pure step the agent takes (Compute, Pools, Advertisements, ImportPolicy,
// ExportPolicy). No object may panic it; every session it wants has a valid
// peer address that is not this node's own. `make test-fuzz` runs it for a
// bounded time; seeds are in testdata/fuzz/FuzzCompute.
func FuzzCompute(f *testing.F) {
	f.Add([]byte(`{"Self":"n1","Nodes":[{"metadata":{"name":"n1"},"status":{"addresses":[{"type":"InternalIP","address":"10.0.0.1"}]}},{"metadata":{"name":"n2","labels":{"rack":"a"}},"status":{"addresses":[{"type":"InternalIP","address":"10.0.0.2"},{"type":"InternalIP","address":"fd00::2"}]}}],"Configs":[{"metadata":{"name":"default"},"spec":{"asNumber":64512,"nodeToNodeMeshEnabled":true,"serviceClusterIPs":[{"cidr":"10.96.0.0/12"}]}}],"Pools":[{"metadata":{"name":"p"},"spec":{"cidr":"10.244.0.0/16"}}],"Blocks":["10.244.0.0/26"],"Borrowed":["10.244.1.9"]}`))
	f.Add([]byte(`{"Self":"n1","Nodes":[{"metadata":{"name":"n1"},"status":{"addresses":[{"type":"InternalIP","address":"10.0.0.1"}]}}],"Peers":[{"metadata":{"name":"tor"},"spec":{"peerIP":"10.0.0.254:1179","asNumber":65001,"password":{"secretKeyRef":{"name":"s","key":"k"}},"maxPrefix":{"limit":10},"importFilters":[{"cidr":"0.0.0.0/0","action":"Reject"}]}},{"metadata":{"name":"rr"},"spec":{"peerSelector":{"matchLabels":{"rr":"true"}},"nodeSelector":{"matchExpressions":[{"key":"x","operator":"In","values":["y"]}]}}}]}`))
	f.Add([]byte(`{"Self":"n1","Nodes":[{"metadata":{"name":"n1"}}],"Configs":[{"metadata":{"name":"node.n1"},"spec":{"routeReflectorClusterID":"224.0.0.1","communities":["65536:1"],"holdTime":"1s"}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var o fuzzObjects
		if err := json.Unmarshal(data, &o); err != nil {
			return
		}
		for _, list := range [][]any{anys(o.Nodes), anys(o.RhizomeNodes), anys(o.Configs), anys(o.Peers), anys(o.Pools)} {
			for _, x := range list {
				if x == nil {
					return // a null list item is not an object the API could hold
				}
			}
		}
		d, err := Compute(Input{
			NodeName: o.Self, Nodes: o.Nodes, RhizomeNodes: o.RhizomeNodes, Configs: o.Configs, Peers: o.Peers,
			Secret: func(name, key string) (string, error) {
				if name == "s" {
					return "pw", nil
				}
				return "", errors.New("no such secret")
			},
		})
		if err != nil {
			return
		}
		self := map[netip.Addr]bool{d.NodeIPv4: true, d.NodeIPv6: true}
		for _, s := range d.Sessions {
			if !s.Peer.Address.IsValid() {
				t.Fatalf("session %+v has no valid peer address", s)
			}
			if self[s.Peer.Address] && s.NotStarted == "" {
				t.Fatalf("session to this node's own address %v", s.Peer.Address)
			}
		}
		pools, _ := Pools(o.Pools)
		var local Local
		for _, b := range o.Blocks {
			if p, err := netip.ParsePrefix(b); err == nil {
				local.Blocks = append(local.Blocks, p)
			}
		}
		for _, a := range o.Borrowed {
			if p, err := netip.ParseAddr(a); err == nil {
				local.Borrowed = append(local.Borrowed, p)
			}
		}
		ads := Advertisements(&d, pools, local)
		for _, a := range ads {
			if !a.Prefix.IsValid() {
				t.Fatalf("advertisement of an invalid prefix: %+v", a)
			}
		}
		_ = ImportPolicy(&d, pools, local)
		_ = ExportPolicy(&d, pools, ads)
	})
}

func anys[T any](in []*T) []any {
	out := make([]any, len(in))
	for i, x := range in {
		if x != nil {
			out[i] = x
		}
	}
	return out
}
