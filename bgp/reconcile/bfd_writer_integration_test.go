//go:build integration

package reconcile

import (
	"context"
	"net/netip"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/bfd"
	rzclient "github.com/rhizome-net/rhizome/crds/client/clientset/versioned"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/internal/kubecore"
	"github.com/rhizome-net/rhizome/test/controlplane"
)

// TestStatusWriterBFD: the BFD state of each session reaches the
// RhizomeNode status on a real API server (the CRD schema keeps it).
func TestStatusWriterBFD(t *testing.T) {
	cp := controlplane.ForTest(t)
	client, err := rzclient.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	kc, err := kubecore.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const name = "bfd-writer-a"
	rzn := client.RhizomeV1alpha1().RhizomeNodes()
	if _, err := rzn.Create(ctx, &v1alpha1.RhizomeNode{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f, fb := newBFDFixture(t)
	f.reconcile(withMeshBFD(baseState(), &v1alpha1.BFD{Enabled: ptr(true)}))
	b := netip.MustParseAddr("10.0.1.2")
	fb.SetState(b, bfd.StateChange{To: bfd.Up})
	fb.SetState(b, bfd.StateChange{To: bfd.Down, Diag: bfd.DiagTimeExpired})
	w := NewStatusWriter(kc, name, 0, nil)
	if err := w.Write(ctx, f.status()); err != nil {
		t.Fatal(err)
	}
	n, err := rzn.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]v1alpha1.BFDSessionStatus{}
	for _, s := range n.Status.Sessions {
		if s.BFD == nil {
			t.Fatalf("session %s lost its BFD status", s.Peer)
		}
		got[s.Peer] = *s.BFD
	}
	if s := got["10.0.1.2"]; s.State != "Down" || s.Diagnostic != "ControlDetectionTimeExpired" || s.Failures != 1 || s.Since == nil {
		t.Fatalf("10.0.1.2: %+v", s)
	}
	if s := got["10.0.1.3"]; s.State != "Down" || s.Failures != 0 {
		t.Fatalf("10.0.1.3: %+v", s)
	}
}
