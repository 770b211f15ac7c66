package agent

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// lastStatus decodes the last status apply the agent sent.
func lastStatus(t *testing.T, w *world) (nodeStatusApply, int) {
	t.Helper()
	w.apiMu.Lock()
	defer w.apiMu.Unlock()
	if len(w.statusPatches) == 0 {
		t.Fatal("no status written")
	}
	var s nodeStatusApply
	if err := json.Unmarshal([]byte(w.statusPatches[len(w.statusPatches)-1]), &s); err != nil {
		t.Fatal(err)
	}
	return s, len(w.statusPatches)
}

func cond(s nodeStatusApply, typ string) metav1.Condition {
	for _, c := range s.Status.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return metav1.Condition{}
}

func TestNodeStatus(t *testing.T) {
	w := newWorld(t)
	ag := a(w)
	ag.ready.Set("caches", "") // what Run sets before the loop starts
	ag.ready.Set("node", "")
	w.addNode(n2)
	w.setPool(v1alpha1.EncapCrossSubnet, v1alpha1.EncapNever, false)
	w.allocate("pod0.eth0")

	// Nothing is written before the first pass has published the
	// RhizomeNode (server-side apply of a missing object would create
	// it without its owner).
	ag.writeStatus(w.ctx)
	if n := len(w.statusPatches); n != 0 {
		t.Fatalf("%d status writes before the RhizomeNode exists", n)
	}
	w.pass()
	ag.writeStatus(w.ctx)
	s, n := lastStatus(t, w)
	if s.APIVersion != "rhizome.dev/v1alpha1" || s.Kind != "RhizomeNode" || s.Metadata["name"] != self {
		t.Errorf("apply object: %+v", s)
	}
	if strings.Join(s.Status.Blocks, ",") != "10.244.0.0/26" || s.Status.RoutesProgrammed != 1 ||
		len(s.Status.EncapDevices) != 1 || s.Status.EncapDevices[0].Name != "vxlan.rhizome" || s.Status.ObservedAt == nil {
		t.Errorf("status: %+v", s.Status)
	}
	if c := cond(s, "RoutesSynced"); c.Status != metav1.ConditionTrue || c.Message != "1 routes programmed" {
		t.Errorf("RoutesSynced: %+v", c)
	}
	// n2 is configured but has not sent its table: the first
	// synchronisation keeps the node not ready.
	if c := cond(s, "Ready"); c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "bgp: first synchronisation") {
		t.Errorf("Ready: %+v", c)
	}
	since := cond(s, "Ready").LastTransitionTime

	// Nothing changed: nothing written (the status tick runs every 2 s).
	ag.writeStatus(w.ctx)
	if _, n2 := lastStatus(t, w); n2 != n {
		t.Errorf("an unchanged status was written again")
	}

	// n2 up and its table sent: Ready, with a new transition time.
	w.peerUp(n2, "10.244.1.0/26")
	ag.writeStatus(w.ctx)
	s, _ = lastStatus(t, w)
	if c := cond(s, "Ready"); c.Status != metav1.ConditionTrue || c.Reason != "AgentReady" || c.LastTransitionTime.Before(&since) {
		t.Errorf("Ready after convergence: %+v (was since %v)", c, since)
	}
	rsSince := cond(s, "RoutesSynced").LastTransitionTime

	// n2 goes away (its node died): this node stays Ready. Its routes are
	// programmed and its data path works; a session down is another
	// node's trouble, shown by BGPReady and the session metrics. (Before,
	// one node down made every agent NotReady.)
	w.peerLost(n2)
	ag.writeStatus(w.ctx)
	s, _ = lastStatus(t, w)
	if c := cond(s, "Ready"); c.Status != metav1.ConditionTrue {
		t.Errorf("Ready with a peer down: %+v", c)
	}
	w.peerUp(n2, "10.244.1.0/26")

	// A desired state the route programmer refuses keeps RoutesSynced
	// false across status ticks, until a pass gives it one it accepts.
	// (The condition used to come back true at the next tick, from the
	// last kernel pass alone.)
	w.run.routes.mu.Lock()
	w.run.routes.refuse = errors.New(`desired state: pool 10.244.0.0/16: unknown encapsulation mode "Sometimes"`)
	w.run.routes.mu.Unlock()
	w.pass()
	for tick := range 2 {
		ag.writeStatus(w.ctx)
		s, _ = lastStatus(t, w)
		if c := cond(s, "RoutesSynced"); c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, `unknown encapsulation mode "Sometimes"`) {
			t.Errorf("tick %d: RoutesSynced with a refused state: %+v", tick, c)
		}
	}
	if c := cond(s, "Ready"); c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "routes: desired state") {
		t.Errorf("Ready with a refused state: %+v", c)
	}
	w.run.routes.mu.Lock()
	w.run.routes.refuse = nil
	w.run.routes.mu.Unlock()
	w.pass()
	ag.writeStatus(w.ctx)
	s, n = lastStatus(t, w)
	if c := cond(s, "RoutesSynced"); c.Status != metav1.ConditionTrue || c.LastTransitionTime.Before(&rsSince) {
		t.Errorf("RoutesSynced once the state is accepted: %+v", c)
	}

	// The API server fails the write: the next tick writes again.
	ag.ready.Set("caches", "resyncing") // a change to write
	w.failAPI("patch/status", 1, errAPI)
	ag.writeStatus(w.ctx)
	if _, got := lastStatus(t, w); got != n {
		t.Fatalf("a failed write was recorded")
	}
	ag.writeStatus(w.ctx)
	if s, got := lastStatus(t, w); got != n+1 || cond(s, "Ready").Status != metav1.ConditionFalse {
		t.Errorf("after a failed write: %d writes, Ready %+v", got-n, cond(s, "Ready"))
	}
}

func TestCondition(t *testing.T) {
	long := strings.Repeat("x", 1200)
	for _, c := range []struct {
		notReady string
		want     metav1.Condition
	}{
		{"", metav1.Condition{Type: "T", Status: metav1.ConditionTrue, Reason: "Ok", Message: "fine"}},
		{"down", metav1.Condition{Type: "T", Status: metav1.ConditionFalse, Reason: "Bad", Message: "down"}},
		{long, metav1.Condition{Type: "T", Status: metav1.ConditionFalse, Reason: "Bad", Message: long[:997] + "..."}},
	} {
		if got := condition("T", c.notReady, "Ok", "Bad", "fine"); got != c.want {
			t.Errorf("condition(%.20q) = %+v", c.notReady, got)
		}
	}
}

// TestStatusTickDoesNotWaitForTheSpeaker: the status tick runs on the
// agent's loop; while GoBGP's API waits behind its busy server loop (a
// reflector converging 5,000 clients: ~100 s) the tick must not wait, or
// no pass runs for that long (design 0018). The status writer's own
// snapshot is what waits, holding the status cache.
func TestStatusTickDoesNotWaitForTheSpeaker(t *testing.T) {
	w := newWorld(t)
	ag := a(w)
	ag.ready.Set("caches", "")
	ag.ready.Set("node", "")
	w.addNode(n2)
	w.pass()
	w.peerUp(n2, "10.244.1.0/26")
	if _, err := w.run.bgp.Status(w.ctx); err != nil { // the status writer's last snapshot
		t.Fatal(err)
	}

	entered, release := w.run.speaker.HoldPeers()
	t.Cleanup(release)
	snapshot := make(chan error, 1)
	go func() { _, err := w.run.bgp.Status(w.ctx); snapshot <- err }() // the status writer's next
	<-entered

	ticked := make(chan struct{})
	go func() { ag.writeStatus(w.ctx); close(ticked) }()
	select {
	case <-ticked:
	case <-time.After(10 * time.Second):
		t.Fatal("the status tick waited for the speaker's session list")
	}
	s, _ := lastStatus(t, w)
	if c := cond(s, "Ready"); c.Status != metav1.ConditionTrue {
		t.Errorf("Ready while the speaker is busy: %+v", c)
	}
	release()
	if err := <-snapshot; err != nil {
		t.Errorf("the status writer's snapshot: %v", err)
	}
}
