package reconcile

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/bfd"
	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// newBFDFixture: a reconciler with a fake BFD; failures act at once
// (no settle time) unless a settle time is given.
func newBFDFixture(t *testing.T, settleTime ...time.Duration) (*fixture, *bfd.Fake) {
	settle := time.Duration(-1)
	if len(settleTime) > 0 {
		settle = settleTime[0]
	}
	fb := bfd.NewFake(t)
	f := &fixture{t: t, sink: &sink{}, reg: prometheus.NewRegistry()}
	f.r = New(Config{
		NewSpeaker: func() bgp.Speaker {
			sp := bgp.NewFake(t)
			f.speakers = append(f.speakers, sp)
			return sp
		},
		Sink:       f.sink,
		TCPStats:   func() (MD5Stats, error) { return f.md5, nil },
		Registerer: f.reg,
		BFD:        fb,
		BFDSettle:  settle,
	})
	t.Cleanup(func() { _ = f.r.Stop(context.Background()) })
	return f, fb
}

// withMeshBFD turns BFD on for the mesh in the default BGPConfiguration.
func withMeshBFD(st State, b *v1alpha1.BFD) State {
	c := st.Configs[0].DeepCopy()
	c.Spec.NodeToNodeMeshBFD = b
	st.Configs = []*v1alpha1.BGPConfiguration{c}
	return st
}

func wantBFDOps(t *testing.T, fb *bfd.Fake, step string, want ...string) {
	t.Helper()
	if diff := cmp.Diff(want, fb.Ops()); diff != "" {
		t.Errorf("%s: BFD calls (-want +got):\n%s", step, diff)
	}
}

// TestBFDSessionsFollowConfiguration: BFD sessions are started,
// reconfigured and removed with the BGP sessions and their configuration,
// and a pass that changes nothing calls nothing (the fake fails on a Set
// that changes nothing).
func TestBFDSessionsFollowConfiguration(t *testing.T) {
	f, fb := newBFDFixture(t)
	st := baseState()
	f.reconcile(st)
	wantBFDOps(t, fb, "BFD off")

	st = withMeshBFD(st, &v1alpha1.BFD{Enabled: ptr(true)})
	f.reconcile(st)
	wantBFDOps(t, fb, "mesh BFD on", "set 10.0.1.2", "set 10.0.1.3")
	p, _ := fb.Peer(netip.MustParseAddr("10.0.1.2"))
	if want := (bfd.Peer{Remote: netip.MustParseAddr("10.0.1.2"), Local: netip.MustParseAddr("10.0.1.1"),
		Timers: bfd.Timers{MinTx: 300 * time.Millisecond, MinRx: 300 * time.Millisecond, Multiplier: 3}}); p != want {
		t.Fatalf("BFD peer %+v, want %+v", p, want)
	}
	f.reconcile(st)
	wantBFDOps(t, fb, "same again")

	st = withMeshBFD(st, &v1alpha1.BFD{Enabled: ptr(true), MinTxInterval: &metav1.Duration{Duration: 100 * time.Millisecond}})
	f.reconcile(st)
	wantBFDOps(t, fb, "timers changed", "set 10.0.1.2", "set 10.0.1.3")

	tor := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "tor"}, Spec: v1alpha1.BGPPeerSpec{
		PeerIP: "10.0.1.254", ASNumber: ptr(int64(65001)), BFD: &v1alpha1.BFD{Enabled: ptr(true), Multiplier: ptr(int32(5))}}}
	st.Peers = []*v1alpha1.BGPPeer{tor}
	st.Nodes = st.Nodes[:2] // node c leaves
	f.reconcile(st)
	wantBFDOps(t, fb, "ToR with BFD, node c gone", "remove 10.0.1.3", "set 10.0.1.254")

	st = withMeshBFD(st, &v1alpha1.BFD{Enabled: ptr(false)})
	f.reconcile(st)
	wantBFDOps(t, fb, "mesh BFD off", "remove 10.0.1.2")

	s, err := f.r.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, ss := range s.Sessions {
		switch ss.Peer {
		case "10.0.1.254":
			if ss.BFD == nil || ss.BFD.State != "Down" {
				t.Errorf("ToR session status %+v, want BFD Down", ss.BFD)
			}
		default:
			if ss.BFD != nil {
				t.Errorf("%s: BFD status %+v without BFD", ss.Peer, ss.BFD)
			}
		}
	}
}

// TestBFDFailureAndBGP: what a BFD change does to the BGP session and the
// peer's routes, by what BGP knows at that moment (RFC 5882; design 0017).
func TestBFDFailureAndBGP(t *testing.T) {
	b := netip.MustParseAddr("10.0.1.2")
	block := netip.MustParsePrefix("10.244.5.0/26")
	cases := []struct {
		name string
		// bgpDown: the BGP session already left Established, keeping the
		// peer's paths stale (graceful) or not.
		bgpDown, graceful bool
		change            []bfd.StateChange // from Up
		wantReset         bool
	}{
		{"path dead, BGP still established", false, false, []bfd.StateChange{{To: bfd.Down, Diag: bfd.DiagTimeExpired}}, true},
		{"peer says the path is down", false, false, []bfd.StateChange{{To: bfd.Down, Diag: bfd.DiagNeighborDown}}, true},
		{"peer took BFD administratively down (RFC 5882 4.2)", false, false, []bfd.StateChange{{To: bfd.Down, Diag: bfd.DiagNeighborDown, RemoteAdminDown: true}}, false},
		{"peer restarting, its BFD shares fate (C=0, RFC 5882 4.3.2)", true, true, []bfd.StateChange{{To: bfd.Down, Diag: bfd.DiagTimeExpired}}, false},
		{"peer restarting, its BFD independent (C=1, RFC 5882 4.3.1)", true, true, []bfd.StateChange{{To: bfd.Down, Diag: bfd.DiagTimeExpired, RemoteCPI: true}}, true},
		{"BGP down without graceful restart: nothing held", true, false, []bfd.StateChange{{To: bfd.Down, Diag: bfd.DiagTimeExpired}}, false},
		{"Init to Down is no failure", false, false, []bfd.StateChange{{To: bfd.Init}, {To: bfd.Down, Diag: bfd.DiagTimeExpired}}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, fb := newBFDFixture(t)
			f.reconcile(withMeshBFD(baseState(), &v1alpha1.BFD{Enabled: ptr(true)}))
			sp := f.sp()
			sp.SetState(b, bgp.StateEstablished, false, "")
			sp.Receive(bgp.Update{Peer: b, Announced: []bgp.ReceivedPath{{Prefix: block, NextHop: b, Attrs: &bgp.Attrs{}}}})
			waitFor(t, "the block is learned", func() bool { return f.sink.has(block) })
			fb.SetState(b, bfd.StateChange{To: bfd.Up})
			if c.bgpDown {
				sp.SetState(b, bgp.StateActive, c.graceful, "session down: the connection was closed or lost (read-failed)")
			}
			kept := f.sink.has(block)
			sp.Ops()
			for _, ch := range c.change {
				fb.SetState(b, ch)
			}
			// The fake delivers BFD events synchronously and onBFD acts
			// before SetState returns.
			ops := sp.Ops()
			reset := slices.Equal(ops, []string{"delete-peer 10.0.1.2", "add-peer 10.0.1.2"})
			if reset != c.wantReset || (!reset && len(ops) != 0) {
				t.Fatalf("speaker calls %q; want a reset: %t", ops, c.wantReset)
			}
			if c.wantReset {
				waitFor(t, "the block is withdrawn", func() bool { return !f.sink.has(block) })
			} else if f.sink.has(block) != kept {
				t.Fatalf("routes changed without a reset: had the block %t, now %t", kept, !kept)
			}
		})
	}
}

// TestBFDStatusAndMetrics: BFD state in the session status; aggregate
// series for node sessions, per-peer ones only for external peers; an
// agent without BFD says so in the status.
func TestBFDStatusAndMetrics(t *testing.T) {
	f, fb := newBFDFixture(t)
	tor := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "tor"}, Spec: v1alpha1.BGPPeerSpec{
		PeerIP: "10.0.1.254", ASNumber: ptr(int64(65001)), BFD: &v1alpha1.BFD{Enabled: ptr(true)}}}
	st := withMeshBFD(baseState(), &v1alpha1.BFD{Enabled: ptr(true)})
	st.Peers = []*v1alpha1.BGPPeer{tor}
	f.reconcile(st)
	for _, p := range []string{"10.0.1.2", "10.0.1.254"} {
		fb.SetState(netip.MustParseAddr(p), bfd.StateChange{To: bfd.Up})
	}
	fb.SetState(netip.MustParseAddr("10.0.1.254"), bfd.StateChange{To: bfd.Down, Diag: bfd.DiagTimeExpired})

	s, err := f.r.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, ss := range s.Sessions {
		if ss.BFD != nil {
			got[ss.Peer] = ss.BFD.State + "/" + ss.BFD.Diagnostic
		}
	}
	want := map[string]string{"10.0.1.2": "Up/", "10.0.1.3": "Down/", "10.0.1.254": "Down/ControlDetectionTimeExpired"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("BFD status (-want +got):\n%s", diff)
	}

	m := gather(t, f.reg)
	wantSeries := map[string][]string{
		"rhizome_bfd_failures_total": {`rhizome_bfd_failures_total{kind="external"} 1`, `rhizome_bfd_failures_total{kind="mesh"} 0`, `rhizome_bfd_failures_total{kind="rr"} 0`},
		"rhizome_bfd_session_up":     {`rhizome_bfd_session_up{peer="10.0.1.254"} 0`},
	}
	for name, want := range wantSeries {
		var got []string
		for _, x := range m[name] {
			got = append(got, fmt.Sprintf("%s %v", x.key, x.value))
		}
		slices.Sort(got)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", name, diff)
		}
	}
	if n := len(m["rhizome_bfd_sessions"]); n != 15 {
		t.Errorf("rhizome_bfd_sessions: %d series, want kinds × states = 15", n)
	}
	for _, x := range m["rhizome_bfd_sessions"] {
		want := 0.0
		switch x.key {
		case `rhizome_bfd_sessions{kind="mesh",state="Up"}`, `rhizome_bfd_sessions{kind="mesh",state="Down"}`, `rhizome_bfd_sessions{kind="external",state="Down"}`:
			want = 1
		}
		if x.value != want {
			t.Errorf("%s = %v, want %v", x.key, x.value, want)
		}
	}

	// An agent without BFD: the sessions that want it say why not.
	f2 := newFixture(t)
	f2.r.cfg.BFDUnavailable = "listening on UDP 3784: address already in use"
	f2.reconcile(st)
	s, err = f2.r.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, ss := range s.Sessions {
		if ss.BFD == nil || ss.BFD.State != "Unavailable" || !strings.Contains(ss.BFD.Diagnostic, "address already in use") {
			t.Fatalf("%s: BFD status %+v, want Unavailable with the reason", ss.Peer, ss.BFD)
		}
	}
}

// TestBFDFailureRightAfterEstablishment: a BFD failure within the settle
// time of the BGP session coming up (a peer re-creating its BFD session)
// is ignored if BFD is Up again by the end of it, and acted on if not.
func TestBFDFailureRightAfterEstablishment(t *testing.T) {
	b := netip.MustParseAddr("10.0.1.2")
	for _, c := range []struct {
		name      string
		upAgain   bool
		wantReset bool
	}{{"BFD Up again: ignored", true, false}, {"BFD still down: reset when settled", false, true}} {
		t.Run(c.name, func(t *testing.T) {
			f, fb := newBFDFixture(t, 300*time.Millisecond)
			f.reconcile(withMeshBFD(baseState(), &v1alpha1.BFD{Enabled: ptr(true)}))
			sp := f.sp()
			sp.SetState(b, bgp.StateEstablished, false, "")
			fb.SetState(b, bfd.StateChange{To: bfd.Up})
			sp.Ops()
			fb.SetState(b, bfd.StateChange{To: bfd.Down, Diag: bfd.DiagNeighborDown})
			if ops := sp.Ops(); len(ops) != 0 {
				t.Fatalf("acted at once on a failure right after establishment: %q", ops)
			}
			if c.upAgain {
				fb.SetState(b, bfd.StateChange{To: bfd.Init})
				fb.SetState(b, bfd.StateChange{To: bfd.Up})
				time.Sleep(500 * time.Millisecond) // past the settle time: nothing may happen
				if ops := sp.Ops(); len(ops) != 0 {
					t.Fatalf("reset although BFD came back: %q", ops)
				}
				return
			}
			waitFor(t, "the session reset after the settle time", func() bool {
				return slices.Contains(sp.Ops(), "delete-peer 10.0.1.2")
			})
		})
	}
}

// TestBFDRestartHold: a planned restart stretches a peer's BFD detection
// time to the session's graceful-restart time, and not at all without
// graceful restart (the peer drops our routes when the connection closes).
func TestBFDRestartHold(t *testing.T) {
	f, _ := newBFDFixture(t)
	st := withMeshBFD(baseState(), &v1alpha1.BFD{Enabled: ptr(true)})
	off := false
	st.Peers = []*v1alpha1.BGPPeer{
		{ObjectMeta: metav1.ObjectMeta{Name: "tor"}, Spec: v1alpha1.BGPPeerSpec{PeerIP: "10.0.1.254", ASNumber: ptr(int64(65001)),
			GracefulRestart: &v1alpha1.GracefulRestart{Enabled: &off}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "tor2"}, Spec: v1alpha1.BGPPeerSpec{PeerIP: "10.0.1.253", ASNumber: ptr(int64(65001)),
			GracefulRestart: &v1alpha1.GracefulRestart{RestartTime: &metav1.Duration{Duration: 30 * time.Second}}}},
	}
	f.reconcile(st)
	for peer, want := range map[string]time.Duration{
		"10.0.1.2": 120 * time.Second, "10.0.1.254": 0, "10.0.1.253": 30 * time.Second, "10.9.9.9": 0,
	} {
		if got := f.r.BFDRestartHold(netip.MustParseAddr(peer)); got != want {
			t.Errorf("%s: hold %s, want %s", peer, got, want)
		}
	}
}
