package ctl

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// A reflector's RhizomeNode lists only some sessions; the node row counts
// them all from the summary, and a node listing them all is counted from
// the list.
func TestNodeRowCountsOmittedSessions(t *testing.T) {
	rr := &v1alpha1.RhizomeNode{ObjectMeta: metav1.ObjectMeta{Name: "rr"}, Status: v1alpha1.RhizomeNodeStatus{
		SessionsEstablished: "4990/5000", SessionsOmitted: 4900,
		Sessions: []v1alpha1.BGPSessionStatus{{Peer: "10.0.0.1", State: "Active"}, {Peer: "10.0.0.2", State: "Established"}},
	}}
	if r := nodeRowOf(rr); r.SessionsEstablished != 4990 || r.Sessions != 5000 {
		t.Errorf("reflector row: %d/%d, want 4990/5000", r.SessionsEstablished, r.Sessions)
	}
	// A summary that disagrees with a complete list (written by hand): the
	// list wins.
	n := &v1alpha1.RhizomeNode{ObjectMeta: metav1.ObjectMeta{Name: "n"}, Status: v1alpha1.RhizomeNodeStatus{
		SessionsEstablished: "9/9",
		Sessions:            []v1alpha1.BGPSessionStatus{{Peer: "10.0.0.1", State: "Active"}, {Peer: "10.0.0.2", State: "Established"}},
	}}
	if r := nodeRowOf(n); r.SessionsEstablished != 1 || r.Sessions != 2 {
		t.Errorf("node row: %d/%d, want 1/2", r.SessionsEstablished, r.Sessions)
	}
}
