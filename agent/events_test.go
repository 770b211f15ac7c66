package agent

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/bgp/reconcile"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/internal/kubecore"
)

// recordedEvents is a stateful fake eventSink: it keeps what was sent and
// fails the test on an event about another object than the node's.
type recordedEvents struct {
	t      *testing.T
	mu     sync.Mutex
	events []string // "Type Reason: message"
}

func (r *recordedEvents) Eventf(obj kubecore.Object, typ, reason, format string, args ...any) {
	if obj.GetName() != "node-1" {
		r.t.Errorf("event about %s, want the node's RhizomeNode", obj.GetName())
	}
	r.mu.Lock()
	r.events = append(r.events, typ+" "+reason+": "+fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *recordedEvents) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.events
	r.events = nil
	return out
}

func newTestEvents(t *testing.T) (*nodeEvents, *recordedEvents, *time.Time) {
	sink := &recordedEvents{t: t}
	node := &v1alpha1.RhizomeNode{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}
	e := newNodeEvents(sink, func() kubecore.Object { return node })
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	e.now = func() time.Time { return now }
	return e, sink, &now
}

func change(peer, from, to, reason string) reconcile.SessionChange {
	return reconcile.SessionChange{Peer: netip.MustParseAddr(peer), Kind: v1alpha1.SessionExternal, From: from, To: to, Reason: reason}
}

// A session that flaps 20 times in 10 s yields one event at once and one
// summary with its last state after the interval, not 40.
func TestSessionEventsAreRateLimited(t *testing.T) {
	e, sink, now := newTestEvents(t)
	e.sessionChanged(change("10.0.1.254", "Established", "Active", "hold timer expired"))
	for i := 0; i < 20; i++ {
		*now = now.Add(250 * time.Millisecond)
		e.sessionChanged(change("10.0.1.254", "Active", "Established", ""))
		*now = now.Add(250 * time.Millisecond)
		e.sessionChanged(change("10.0.1.254", "Established", "Idle", "connection reset"))
		e.sessionChanged(change("10.0.1.254", "Idle", "Active", "")) // not an event
	}
	e.flush()
	got := sink.take()
	if len(got) != 1 || !strings.Contains(got[0], "Warning BGPSessionDown: BGP session with 10.0.1.254 (external) went down: Active: hold timer expired") {
		t.Fatalf("events during the flapping: %q", got)
	}
	*now = now.Add(30 * time.Second)
	e.flush()
	got = sink.take()
	if len(got) != 1 || !strings.Contains(got[0], "BGPSessionDown") || !strings.Contains(got[0], "Idle: connection reset") || !strings.Contains(got[0], "after 39 more changes") {
		t.Fatalf("summary after the interval: %q", got)
	}
	*now = now.Add(time.Minute)
	e.flush()
	if got := sink.take(); len(got) != 0 {
		t.Fatalf("events once quiet: %q", got)
	}
	// Another peer is another subject.
	e.sessionChanged(change("10.0.2.254", "Active", "Established", ""))
	if got := sink.take(); len(got) != 1 || !strings.HasPrefix(got[0], "Normal BGPSessionEstablished") {
		t.Fatalf("another peer's event: %q", got)
	}
}

// A node session closed for its prefix limit is an event of its own kind,
// saying how many prefixes and when it is tried again.
func TestPrefixLimitEvent(t *testing.T) {
	e, sink, _ := newTestEvents(t)
	c := change("10.0.1.7", "Established", "Idle", "maximum prefix limit exceeded: the peer sent more than 261 prefixes; session closed, enabled again at 12:01:00")
	c.Kind, c.PrefixLimit = v1alpha1.SessionMesh, true
	e.sessionChanged(c)
	got := sink.take()
	if len(got) != 1 || !strings.HasPrefix(got[0], "Warning BGPPrefixLimitExceeded: BGP session with 10.0.1.7 (mesh) closed: maximum prefix limit exceeded: the peer sent more than 261 prefixes") {
		t.Fatalf("events: %q", got)
	}
}

// A partition taking down many sessions at once: the per-minute budget
// holds, the rest becomes one summary.
func TestEventBudget(t *testing.T) {
	e, sink, now := newTestEvents(t)
	for i := 0; i < 100; i++ {
		e.sessionChanged(change(fmt.Sprintf("10.0.%d.%d", i/200, i%200+1), "Established", "Idle", "hold timer expired"))
	}
	if got := sink.take(); len(got) != e.budget {
		t.Fatalf("%d events for 100 sessions down at once, want the budget of %d", len(got), e.budget)
	}
	*now = now.Add(time.Minute)
	e.flush()
	got := sink.take()
	if len(got) != 1 || !strings.Contains(got[0], "EventsSuppressed: 80 more") {
		t.Fatalf("summary: %q", got)
	}
}

func TestRouteErrorEvents(t *testing.T) {
	e, sink, now := newTestEvents(t)
	var st routeErrorState
	e.routeErrors(&st, map[string]string{})
	e.routeErrors(&st, map[string]string{"10.244.1.0/26": "no VTEP known for node-2"})
	e.routeErrors(&st, map[string]string{"10.244.1.0/26": "no VTEP known for node-2"}) // unchanged: nothing
	got := sink.take()
	if len(got) != 1 || !strings.Contains(got[0], "Warning RouteProgrammingFailed: 1 route(s) cannot be programmed: 10.244.1.0/26: no VTEP known for node-2") {
		t.Fatalf("route error events: %q", got)
	}
	*now = now.Add(time.Minute)
	e.routeErrors(&st, map[string]string{})
	if got := sink.take(); len(got) != 1 || !strings.Contains(got[0], "Normal RoutesProgrammed") {
		t.Fatalf("recovery: %q", got)
	}
}

// A node announcing what IPAM does not let it announce is a warning on
// this node's RhizomeNode when its count of such rejections grows: not
// for routes merely held until their IPAMBlock arrives, not for external
// peers' filters, not again while nothing grows.
func TestRoutesRejectedEvents(t *testing.T) {
	e, sink, now := newTestEvents(t)
	var st rejectedState
	mesh := func(rejected map[string]int64) []v1alpha1.BGPSessionStatus {
		return []v1alpha1.BGPSessionStatus{
			{Peer: "10.0.1.12", Kind: v1alpha1.SessionMesh, Source: "node-2", State: "Established", PrefixesRejected: rejected},
			{Peer: "10.0.1.254", Kind: v1alpha1.SessionExternal, Source: "tor", State: "Established", PrefixesRejected: map[string]int64{"no-filter-match": 40}},
		}
	}
	for i, c := range []struct {
		rejected map[string]int64
		after    time.Duration
		want     []string
	}{
		{rejected: map[string]int64{"held": 2}},
		{rejected: map[string]int64{"held": 1, "not-owner": 3, "next-hop": 1}, want: []string{
			"Warning RoutesRejected: 4 prefix(es) from 10.0.1.12 (mesh node-2) rejected: IPAM does not let that node announce them (next-hop=1,not-owner=3); they are neither installed nor passed on, its valid routes still are; 1 more held until an IPAMBlock justifies them"}},
		{rejected: map[string]int64{"held": 5, "not-owner": 3, "next-hop": 1}, after: time.Minute},
		{rejected: map[string]int64{"not-owner": 2}, after: time.Minute},
		{rejected: map[string]int64{"not-owner": 2, "unknown-originator": 1}, after: time.Minute, want: []string{
			"Warning RoutesRejected: 3 prefix(es) from 10.0.1.12 (mesh node-2) rejected: IPAM does not let that node announce them (not-owner=2,unknown-originator=1); they are neither installed nor passed on, its valid routes still are"}},
	} {
		*now = now.Add(c.after)
		e.routesRejected(&st, mesh(c.rejected))
		if got := sink.take(); !slices.Equal(got, c.want) {
			t.Errorf("step %d: events %q, want %q", i, got, c.want)
		}
	}
}
