package reconcile

import (
	"fmt"
	"testing"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

func TestBoundSessions(t *testing.T) {
	mk := func(n int, down func(int) bool) []v1alpha1.BGPSessionStatus {
		var out []v1alpha1.BGPSessionStatus
		for i := range n {
			s := v1alpha1.BGPSessionStatus{Peer: fmt.Sprintf("p%03d", i), State: "Established"}
			if down(i) {
				s.State = "Active"
			}
			out = append(out, s)
		}
		return out
	}
	for _, c := range []struct {
		name              string
		all               []v1alpha1.BGPSessionStatus
		limit             int
		wantLen, wantOmit int
		wantFirst         string
	}{
		{"under the limit", mk(3, func(i int) bool { return i == 2 }), 5, 3, 0, "p000"},
		{"at the limit", mk(5, func(int) bool { return false }), 5, 5, 0, "p000"},
		{"down first", mk(10, func(i int) bool { return i >= 7 }), 4, 4, 6, "p007"},
		{"more down than fit", mk(10, func(i int) bool { return i%2 == 1 }), 3, 3, 7, "p001"},
		{"none", nil, 3, 0, 0, ""},
	} {
		got, omit := boundSessions(c.all, c.limit)
		if len(got) != c.wantLen || omit != c.wantOmit {
			t.Errorf("%s: %d listed, %d omitted; want %d, %d", c.name, len(got), omit, c.wantLen, c.wantOmit)
			continue
		}
		if len(got) > 0 && got[0].Peer != c.wantFirst {
			t.Errorf("%s: first %s, want %s", c.name, got[0].Peer, c.wantFirst)
		}
		seen := map[string]bool{}
		for _, s := range got {
			if seen[s.Peer] {
				t.Errorf("%s: %s listed twice", c.name, s.Peer)
			}
			seen[s.Peer] = true
		}
	}
}
