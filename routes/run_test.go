package routes

// The route programmer's Run loop with fakes: drift repair, retries, a dead
// kernel watch, pod routes and next-hop re-resolution (design 0002, issue 16).

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// runFixture runs a Reconciler with fakes and a watcher the test feeds.
type runFixture struct {
	*fakes
	r      *Reconciler
	w      *fakeWatcher
	cancel context.CancelFunc
	done   chan error
}

func startRun(t *testing.T, w Watcher, adjust func(*fakes)) *runFixture {
	t.Helper()
	f := &fakes{table: NewFakeTable(t), devs: &FakeDevices{UnderlayIndex: underlayIdx, UnderlayMTU: 1500},
		nat: &FakeNAT{}, sys: &FakeSysctls{Values: map[string]string{"net/ipv4/ip_forward": "1"}}}
	if adjust != nil {
		adjust(f)
	}
	fw, _ := w.(*fakeWatcher)
	r, err := NewWithKernel(Config{Interface: "eth0", Address: pfx("192.168.1.10/24"), ResyncInterval: time.Hour},
		Kernel{Table: f.table, Devices: f.devs, NAT: f.nat, Sysctls: f.sys, Watcher: w})
	must(t, err)
	must(t, r.SetState(State{Blocks: []OwnBlock{{Prefix: pfx("10.244.0.0/26")}}}))
	ctx, cancel := context.WithCancel(context.Background())
	rf := &runFixture{fakes: f, r: r, w: fw, cancel: cancel, done: make(chan error, 1)}
	go func() { rf.done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-rf.done; err != nil {
			t.Error(err)
		}
	})
	waitFor(t, "first pass", func() bool { return r.Status().Passes > 0 })
	return rf
}

func (rf *runFixture) route(p netip.Prefix) string {
	for _, r := range rf.table.Routes() {
		if r.Dst == p {
			return r.String()
		}
	}
	return ""
}

// TestRunPodRouteWins: the CNI plugin writes a pod's own /32 over a learned
// route to the same address (the address was another node's a moment ago).
// The pod's route wins: neither drift repair, nor a later BGP update of the
// /32, nor a periodic pass overwrites or deletes it (FakeTable fails the
// test on any write to a foreign route); when it goes, ours comes back.
func TestRunPodRouteWins(t *testing.T) {
	rf := startRun(t, &fakeWatcher{events: make(chan []Event)}, nil)
	pod := pfx("10.244.9.7/32")
	must(t, rf.r.Apply(Batch{Upserts: []RemoteRoute{{Prefix: pod, NextHops: []netip.Addr{node11}}}}))
	rf.r.WaitWritten()
	if rf.route(pod) == "" {
		t.Fatal("learned /32 not installed")
	}
	podRoute := Route{Dst: pod, NextHops: []NextHop{{Gateway: pod.Addr(), LinkIndex: 42}}}
	rf.table.AddForeign(podRoute) // RouteReplace by the CNI plugin, proto static
	rf.w.events <- []Event{{Kind: EventRoute, Table: 254, Protocol: 4, Route: podRoute}}
	// (Judging the event is asynchronous; a BGP update of this very /32
	// within microseconds of the CNI plugin's write could still replace
	// it before the event is judged.)
	waitFor(t, "the pod's route noticed", func() bool { return slices.Contains(rf.r.Status().Conflicts, pod) })
	// BGP changes the /32's next hop, and a full pass runs.
	must(t, rf.r.Apply(Batch{Upserts: []RemoteRoute{{Prefix: pod, NextHops: []netip.Addr{node12}}}}))
	rf.r.WaitWritten()
	rf.r.Trigger()
	passes := rf.r.Status().Passes
	waitFor(t, "a pass", func() bool { return rf.r.Status().Passes > passes })
	if got, ok := rf.table.Foreign(pod); !ok || !got.Equal(podRoute) {
		t.Fatalf("the pod's route is gone or changed: %v %v", got, ok)
	}
	if got := rf.route(pod); got != "" {
		t.Errorf("a route of ours holds the pod's address: %s", got)
	}
	if c := rf.r.Status().Conflicts; !slices.Contains(c, pod) {
		t.Errorf("conflicts = %v, want the pod's /32 listed", c)
	}
	// The pod goes: its route with it; ours takes the key again.
	rf.table.RemoveForeign(pod)
	rf.w.events <- []Event{{Kind: EventRoute, Deleted: true, Table: 254, Protocol: 4, Route: podRoute}}
	waitFor(t, "our /32 back after the pod's route went", func() bool { return rf.route(pod) != "" })
}

// TestRunReresolvesNextHops: a next hop outside our subnet is reached
// through the underlay's route to it. When that route changes (a new
// gateway, an ECMP route with two), or a link it leaves through changes,
// the routes through it follow without waiting for the resync.
func TestRunReresolvesNextHops(t *testing.T) {
	far := addr("192.168.7.20")
	gwA := NextHop{Gateway: addr("192.168.1.1"), LinkIndex: underlayIdx}
	gwB := NextHop{Gateway: addr("192.168.1.2"), LinkIndex: underlayIdx}
	gwC := NextHop{Gateway: addr("192.168.1.3"), LinkIndex: 3}
	rf := startRun(t, &fakeWatcher{events: make(chan []Event)}, func(f *fakes) { f.devs.SetResolved(far, gwA) })
	p := pfx("10.244.7.0/26")
	must(t, rf.r.Apply(Batch{Upserts: []RemoteRoute{{Prefix: p, NextHops: []netip.Addr{far}}}}))
	rf.r.WaitWritten()
	if got := rf.route(p); got != "10.244.7.0/26 via 192.168.1.1 dev#2" {
		t.Fatalf("route = %q", got)
	}
	// An unrelated foreign route changes: nothing to do.
	passes := rf.r.Status().Passes
	rf.w.events <- []Event{{Kind: EventRoute, Table: 254, Protocol: 3, Route: Route{Dst: pfx("172.16.0.0/16"), Kind: Blackhole}}}
	// The default route moves to another gateway.
	rf.devs.SetResolved(far, gwB)
	rf.w.events <- []Event{{Kind: EventRoute, Table: 254, Protocol: 3, Route: Route{Dst: pfx("0.0.0.0/0"), NextHops: []NextHop{gwB}}}}
	waitFor(t, "route through the new gateway", func() bool { return rf.route(p) == "10.244.7.0/26 via 192.168.1.2 dev#2" })
	if n := rf.r.Status().Passes - passes; n != 1 {
		t.Errorf("%d passes for one relevant and one unrelated event, want 1", n)
	}
	// A more specific ECMP route towards the next hop appears.
	rf.devs.SetResolved(far, gwB, gwC)
	rf.w.events <- []Event{{Kind: EventRoute, Table: 254, Protocol: 186, Route: Route{Dst: pfx("192.168.7.0/24"), NextHops: []NextHop{gwB, gwC}}}}
	waitFor(t, "ECMP route kept", func() bool {
		return rf.route(p) == "10.244.7.0/26 via 192.168.1.2 dev#2 via 192.168.1.3 dev#3"
	})
	// One of its links goes down: the kernel drops that path without a
	// route notification; the link event is enough.
	rf.devs.SetResolved(far, gwB)
	rf.w.events <- []Event{{Kind: EventLink, LinkIndex: 3, LinkName: "eth1"}}
	waitFor(t, "the path over the dead link gone", func() bool { return rf.route(p) == "10.244.7.0/26 via 192.168.1.2 dev#2" })
}

// TestRunRetriesFailedWrites: a route the kernel refuses is written again
// within seconds, not at the next resync (an hour here).
func TestRunRetriesFailedWrites(t *testing.T) {
	rf := startRun(t, &fakeWatcher{events: make(chan []Event)}, nil)
	p := pfx("10.244.5.0/26")
	rf.table.FailNext(p, syscall.ENOMEM)
	start := time.Now()
	must(t, rf.r.Apply(Batch{Upserts: []RemoteRoute{{Prefix: p, NextHops: []netip.Addr{node11}}}}))
	waitFor(t, "the refused route written again", func() bool { return rf.route(p) != "" })
	t.Logf("retried after %v", time.Since(start).Round(10*time.Millisecond))
	if st := rf.r.Status(); st.RouteErrorCount != 0 {
		t.Errorf("route errors after the retry: %v", st.RouteErrors)
	}
}

// flakyWatcher fails its first Watch at once, then works like fakeWatcher.
type flakyWatcher struct {
	fakeWatcher
	mu    sync.Mutex
	calls int
}

func (w *flakyWatcher) Watch(ctx context.Context, fn func([]Event)) error {
	w.mu.Lock()
	w.calls++
	first := w.calls == 1
	w.mu.Unlock()
	if first {
		return errors.New("reading notifications: no buffer space")
	}
	return w.fakeWatcher.Watch(ctx, fn)
}

// TestRunRestartsDeadWatch: a kernel watch that dies is started again, and
// drift is repaired through it afterwards.
func TestRunRestartsDeadWatch(t *testing.T) {
	w := &flakyWatcher{fakeWatcher: fakeWatcher{events: make(chan []Event)}}
	rf := startRun(t, w, nil)
	rf.w = &w.fakeWatcher
	rf.table.DeleteOurs(pfx("10.244.0.0/26"))
	select {
	case rf.w.events <- []Event{{Kind: EventRoute, Deleted: true, Table: 254, Protocol: 114, Route: Route{Dst: pfx("10.244.0.0/26"), Kind: Blackhole}}}:
	case <-time.After(10 * time.Second):
		t.Fatal("the watch was not restarted")
	}
	waitFor(t, "the deleted route restored through the restarted watch", func() bool { return rf.route(pfx("10.244.0.0/26")) != "" })
}

// TestUnbuildableRouteKept: a remote route through VXLAN whose node's VTEP
// disappears from the state (its RhizomeNode lost it for a moment) while
// BGP still announces it keeps the kernel route that works, through a
// full pass after convergence and through Apply; it is reported, and
// rebuilt when the VTEP is back. A withdrawal still deletes it.
func TestUnbuildableRouteKept(t *testing.T) {
	r, f := newTestReconciler(t)
	st := baseState()
	must(t, r.SetState(st))
	p := pfx("10.244.2.0/26")
	must(t, r.pass())
	must(t, r.Apply(Batch{Upserts: []RemoteRoute{{Prefix: p, NextHops: []netip.Addr{node21}}}}))
	r.WaitWritten()
	r.SetConverged()
	before := ""
	for _, rt := range f.table.Routes() {
		if rt.Dst == p {
			before = rt.String()
		}
	}
	if before == "" {
		t.Fatalf("no route to %s to begin with: %v", p, f.table.Routes())
	}
	kept := func(when string) {
		t.Helper()
		for _, rt := range f.table.Routes() {
			if rt.Dst == p {
				if rt.String() != before {
					t.Errorf("%s: route changed to %s", when, rt)
				}
				return
			}
		}
		t.Errorf("%s: the working route to %s was deleted", when, p)
	}
	noVTEP := st
	noVTEP.VTEPs = nil
	must(t, r.SetState(noVTEP))
	passTwice(t, r, f)
	kept("after a full pass without the VTEP")
	if e := r.Status().RouteErrors[p]; !strings.Contains(e, "no VTEP") {
		t.Errorf("route error %q, want the missing VTEP named", e)
	}
	must(t, r.Apply(Batch{Upserts: []RemoteRoute{{Prefix: p, NextHops: []netip.Addr{node21}}}}))
	r.WaitWritten()
	kept("after a BGP update of the route")
	must(t, r.SetState(st))
	passTwice(t, r, f)
	if r.Status().RouteErrorCount != 0 {
		t.Errorf("route errors with the VTEP back: %v", r.Status().RouteErrors)
	}
	must(t, r.Apply(Batch{Withdrawals: []netip.Prefix{p}}))
	r.WaitWritten()
	for _, rt := range f.table.Routes() {
		if rt.Dst == p {
			t.Errorf("withdrawn route still there: %s", rt)
		}
	}
}
