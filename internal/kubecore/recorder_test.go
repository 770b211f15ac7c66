package kubecore

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

func TestRecorderEvent(t *testing.T) {
	now := time.Unix(1700000000, 5)
	r := &Recorder{Component: "rhizome-ipam", Host: "node-1"}
	for _, tc := range []struct {
		name      string
		obj       Object
		wantNS    string
		wantKind  string
		wantAPI   string
		wantError bool
	}{
		{"cluster-scoped pool goes to default", &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "p", UID: "u1"}}, "default", "IPPool", "rhizome.dev/v1alpha1", false},
		{"namespaced pod stays in its namespace", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "ns"}}, "ns", "Pod", "v1", false},
		{"unknown kind is an error", &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, "", "", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := r.event(tc.obj, corev1.EventTypeWarning, "PoolNearlyFull", "90 % used", now)
			if tc.wantError {
				if err == nil {
					t.Fatalf("want an error, got %+v", ev)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			io := ev.InvolvedObject
			if ev.Namespace != tc.wantNS || io.Kind != tc.wantKind || io.APIVersion != tc.wantAPI || io.Name != tc.obj.GetName() || io.UID != tc.obj.GetUID() {
				t.Fatalf("event %+v", ev)
			}
			if ev.Reason != "PoolNearlyFull" || ev.Message != "90 % used" || ev.Type != corev1.EventTypeWarning || ev.Count != 1 ||
				ev.Source.Component != "rhizome-ipam" || ev.Source.Host != "node-1" || !ev.FirstTimestamp.Time.Equal(now) {
				t.Fatalf("event %+v", ev)
			}
			if want := tc.obj.GetName() + ".17979cfe362a0005"; ev.Name != want {
				t.Fatalf("name %s, want %s", ev.Name, want)
			}
		})
	}
}
