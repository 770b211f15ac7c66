//go:build integration

package reconcile

import (
	"context"
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/rhizome-net/rhizome/bgp"
	rzclient "github.com/rhizome-net/rhizome/crds/client/clientset/versioned"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/internal/kubecore"
	"github.com/rhizome-net/rhizome/test/controlplane"
)

func TestMain(m *testing.M) { controlplane.Main(m) }

// TestStatusWriter writes the BGP status into a RhizomeNode on a real API
// server, next to fields another writer (the agent) owns.
func TestStatusWriter(t *testing.T) {
	cp := controlplane.ForTest(t)
	client, err := rzclient.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	kc, err := kubecore.NewForConfig(cp.RESTConfig()) // what the agent writes status with
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const name = "bgp-writer-a"
	rzn := client.RhizomeV1alpha1().RhizomeNodes()
	if _, err := rzn.Create(ctx, &v1alpha1.RhizomeNode{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The agent's own writer owns other status fields and conditions.
	other := `{"apiVersion":"rhizome.dev/v1alpha1","kind":"RhizomeNode","metadata":{"name":"` + name + `"},
	  "status":{"routesProgrammed":42,"conditions":[{"type":"RoutesSynced","status":"True","reason":"Synced","message":"ok","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}`
	force := true
	if _, err := rzn.Patch(ctx, name, types.ApplyPatchType, []byte(other), metav1.PatchOptions{FieldManager: "rhizome-agent", Force: &force}, "status"); err != nil {
		t.Fatal(err)
	}

	f := newFixture(t)
	st := baseState()
	st.NodeName = "a"
	f.reconcile(st)
	w := NewStatusWriter(kc, name, 0, nil)
	s := f.status()
	if err := w.Write(ctx, s); err != nil {
		t.Fatal(err)
	}
	get := func() *v1alpha1.RhizomeNode {
		t.Helper()
		n, err := rzn.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	n := get()
	if n.Status.RouterID != "10.0.1.1" || n.Status.ASNumber != 64512 || n.Status.SessionsEstablished != "0/2" || len(n.Status.Sessions) != 2 {
		t.Fatalf("status after the first write: %+v", n.Status)
	}
	ready := findCondition(n, ConditionBGPReady)
	if ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != "SessionsDown" {
		t.Errorf("BGPReady = %+v", ready)
	}
	if n.Status.RoutesProgrammed != 42 || findCondition(n, "RoutesSynced") == nil {
		t.Errorf("the other writer's fields were lost: %+v", n.Status)
	}

	// Unchanged status: no write.
	if err := w.Write(ctx, f.status()); err != nil || w.Writes() != 1 {
		t.Errorf("second identical write: err %v, writes %d, want 1", err, w.Writes())
	}

	// Sessions come up, tables arrive: BGPReady turns True.
	for _, a := range []string{"10.0.1.2", "10.0.1.3"} {
		f.sp().SetState(netip.MustParseAddr(a), bgp.StateEstablished, false, "")
		f.sp().EndOfRIB(netip.MustParseAddr(a), bgp.IPv4)
	}
	if err := w.Write(ctx, f.status()); err != nil {
		t.Fatal(err)
	}
	n = get()
	ready = findCondition(n, ConditionBGPReady)
	if n.Status.SessionsEstablished != "2/2" || ready == nil || ready.Status != metav1.ConditionTrue {
		t.Errorf("after establishment: %s, BGPReady %+v", n.Status.SessionsEstablished, ready)
	}
	for _, s := range n.Status.Sessions {
		if s.State != "Established" || s.Kind != v1alpha1.SessionMesh || s.Since == nil {
			t.Errorf("session %+v", s)
		}
	}
	if n.Status.RoutesProgrammed != 42 {
		t.Errorf("the other writer's routesProgrammed was lost")
	}

	// A session removed from the desired state disappears from the status
	// (the list is ours alone).
	st.Nodes = st.Nodes[:2]
	f.reconcile(st)
	if err := w.Write(ctx, f.status()); err != nil {
		t.Fatal(err)
	}
	if n = get(); len(n.Status.Sessions) != 1 {
		b, _ := json.Marshal(n.Status.Sessions)
		t.Errorf("sessions after a node left: %s", b)
	}

	// Run: many changes, few writes.
	ctx2, cancel := context.WithCancel(ctx)
	w2 := NewStatusWriter(kc, name, 500*time.Millisecond, nil)
	done := make(chan struct{})
	go func() { w2.Run(ctx2, f.r); close(done) }()
	b := netip.MustParseAddr("10.0.1.2")
	start := time.Now()
	for i := range 40 {
		st := bgp.StateActive
		if i%2 == 1 {
			st = bgp.StateEstablished
		}
		f.sp().SetState(b, st, false, "")
		time.Sleep(25 * time.Millisecond)
	}
	cancel()
	<-done
	elapsed := time.Since(start)
	if max := int(elapsed/(500*time.Millisecond)) + 2; w2.Writes() > max || w2.Writes() == 0 {
		t.Errorf("%d writes in %s with a 500ms interval, want 1..%d", w2.Writes(), elapsed, max)
	}
}

func findCondition(n *v1alpha1.RhizomeNode, typ string) *metav1.Condition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == typ {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

// TestStatusWriterReflector writes the status of a reflector with 5,000
// sessions: the whole list would be more than the API server stores (the
// write failed every interval before the list was bounded); the object
// gets the sessions not established first, 100 in all, and the count of
// the others.
func TestStatusWriterReflector(t *testing.T) {
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
	const name = "bgp-writer-rr"
	rzn := client.RhizomeV1alpha1().RhizomeNodes()
	if _, err := rzn.Create(ctx, &v1alpha1.RhizomeNode{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	st := Status{RouterID: netip.MustParseAddr("10.0.0.1"), ASN: 64512, Running: true, Converged: true}
	since := metav1.NewTime(time.Now().Truncate(time.Second))
	a := netip.MustParseAddr("10.1.0.0")
	for i := range 5000 {
		a = a.Next()
		s := v1alpha1.BGPSessionStatus{Peer: a.String(), PeerAS: 64512, Kind: v1alpha1.SessionRR, Source: "to-route-reflectors",
			State: bgp.StateEstablished.String(), Since: &since, PrefixesReceived: 2, PrefixesAccepted: 2, PrefixesAdvertised: 5249}
		if i%1000 == 999 {
			s.State, s.LastError = bgp.StateActive.String(), "peer closed the connection"
		}
		st.Sessions = append(st.Sessions, s)
		st.Total++
		if s.State == bgp.StateEstablished.String() {
			st.Established++
		}
	}
	w := NewStatusWriter(kc, name, 0, nil)
	if err := w.Write(ctx, st); err != nil {
		t.Fatal(err)
	}
	n, err := rzn.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(n.Status.Sessions) != StatusSessionLimit || n.Status.SessionsOmitted != 5000-StatusSessionLimit || n.Status.SessionsEstablished != "4995/5000" {
		t.Fatalf("%d sessions listed, %d omitted, %s established", len(n.Status.Sessions), n.Status.SessionsOmitted, n.Status.SessionsEstablished)
	}
	for i, s := range n.Status.Sessions[:5] {
		if s.State != bgp.StateActive.String() {
			t.Errorf("session %d listed is %s %s, want the down ones first", i, s.Peer, s.State)
		}
	}
}
