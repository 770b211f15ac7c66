package reconcile

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/rhizome-net/rhizome/bgp/topology"
	rzlisters "github.com/rhizome-net/rhizome/crds/client/listers/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

func indexer(t *testing.T, objs ...any) cache.Indexer {
	t.Helper()
	i := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, o := range objs {
		if err := i.Add(o); err != nil {
			t.Fatal(err)
		}
	}
	return i
}

func TestListersState(t *testing.T) {
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bgp", Namespace: "rhizome-system"}, Data: map[string][]byte{"tor": []byte("pw")}}
	l := Listers{
		Nodes:        corelisters.NewNodeLister(indexer(t, node("a", "10.0.1.1"), node("b", "10.0.1.2"))),
		RhizomeNodes: rzlisters.NewRhizomeNodeLister(indexer(t, &v1alpha1.RhizomeNode{ObjectMeta: metav1.ObjectMeta{Name: "a"}})),
		Configs:      rzlisters.NewBGPConfigurationLister(indexer(t, &v1alpha1.BGPConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "default"}})),
		Peers:        rzlisters.NewBGPPeerLister(indexer(t, torPeer())),
		Pools:        rzlisters.NewIPPoolLister(indexer(t, &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "p"}})),
		Secrets:      corelisters.NewSecretLister(indexer(t, secret)).Secrets("rhizome-system"),
	}
	st, err := l.State(topology.Input{NodeName: "a"}, topology.Local{})
	if err != nil {
		t.Fatal(err)
	}
	if st.NodeName != "a" || len(st.Nodes) != 2 || len(st.RhizomeNodes) != 1 || len(st.Configs) != 1 || len(st.Peers) != 1 || len(st.Pools) != 1 {
		t.Errorf("state = %+v", st)
	}
	if v, err := st.Secret("bgp", "tor"); v != "pw" || err != nil {
		t.Errorf("Secret(bgp, tor) = %q, %v", v, err)
	}
	if _, err := st.Secret("bgp", "nope"); err == nil || !strings.Contains(err.Error(), "key nope is missing from Secret bgp") {
		t.Errorf("missing key: %v", err)
	}
	if _, err := st.Secret("other", "tor"); err == nil || !strings.Contains(err.Error(), "no Secret other") {
		t.Errorf("missing Secret: %v", err)
	}
}
