//go:build privileged

package interop

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/bgp/reconcile"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/test/netns"
)

// The BFD interval both ends use in these tests: 100 ms × 3, a 300 ms
// detection time against a 9 s hold time, so that anything BGP alone
// would do is far slower than what the tests wait for.
const (
	bfdInterval = 100 * time.Millisecond
	bfdMult     = 3
	bfdDetect   = bfdMult * bfdInterval
	// bfdSlack is what a withdrawal may take beyond the detection time: the
	// session reset, the RIB, the peer's own processing, and the polling of
	// birdc/vtysh and of the helper here (each a process start).
	bfdSlack = time.Second
)

func torPeerBFD() v1alpha1.BGPPeer {
	p := torPeer(acceptDefaultAndOffice...)
	iv := &metav1.Duration{Duration: bfdInterval}
	mult := int32(bfdMult)
	on := true
	p.Spec.BFD = &v1alpha1.BFD{Enabled: &on, MinTxInterval: iv, MinRxInterval: iv, Multiplier: &mult}
	return p
}

// router is the ToR as the BFD tests see it.
type router struct {
	name     string
	received func(t *testing.T) []string // the node's routes at the ToR
	bfdUp    func() bool                 // the ToR's BFD session to the node is Up
}

var ourRoutes = sorted("10.244.1.0/26", "10.96.0.0/12")

// cutPath drops everything on the node's link in both directions, without
// taking the link down (which the ToR would see at once): a silent path
// failure, the case BFD is for.
func cutPath(t *testing.T, n *netns.NS) {
	t.Helper()
	cmd := n.Cmd(context.Background(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(`table inet rzcut {
  chain in { type filter hook input priority -300; policy accept; iifname "eth0" drop; }
  chain out { type filter hook output priority -300; policy accept; oifname "eth0" drop; }
}
`)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
}

func restorePath(t *testing.T, n *netns.NS) {
	t.Helper()
	if out, err := n.Exec(context.Background(), "nft", "delete", "table", "inet", "rzcut"); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
}

// bfdUpBoth waits for BGP and BFD up on both sides and the routes in
// place both ways.
func bfdUpBoth(t *testing.T, h *helper, r router, what string) {
	t.Helper()
	waitState(t, h, "Established")
	waitFor(t, what+": our BFD Up", 30*time.Second, func() bool {
		s := h.session(torIP)
		return s.BFD != nil && s.BFD.State == "Up"
	})
	waitFor(t, what+": "+r.name+"'s BFD Up", 30*time.Second, r.bfdUp)
	waitRoutes(t, h, what, "0.0.0.0/0 via "+torIP, "192.168.10.0/24 via "+torIP)
	waitFor(t, what+": "+r.name+" to hold our routes", 30*time.Second, func() bool { return slices.Equal(sorted(r.received(t)...), ourRoutes) })
	// A BFD failure in the first seconds of a BGP session is looked at
	// again before it counts (reconcile.DefaultBFDSettle): the failures
	// below are measured on a settled session.
	waitFor(t, what+": the BGP session settled", 30*time.Second, func() bool {
		s := h.session(torIP)
		return s.Since != nil && time.Since(s.Since.Time) > reconcile.DefaultBFDSettle+time.Second
	})
}

// withdrawals measures, from now, when our routes from the ToR and the
// ToR's routes from us are gone, each within bound.
func withdrawals(t *testing.T, h *helper, r router, bound time.Duration) (ours, tor time.Duration) {
	t.Helper()
	start := time.Now()
	for ours == 0 || tor == 0 {
		el := time.Since(start)
		if el > bound {
			t.Fatalf("after %s: our routes gone after %s, %s's after %s (0: not yet); want both within %s", el, ours, r.name, tor, bound)
		}
		if ours == 0 && len(h.routes().Routes) == 0 {
			ours = time.Since(start)
		}
		if tor == 0 && len(r.received(t)) == 0 {
			tor = time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return ours, tor
}

// checkBFDFailover runs the failure cases against a ToR whose BFD is up:
// a silent path cut and a frozen agent, each detected by BFD long before
// the hold time, and each repaired.
func checkBFDFailover(t *testing.T, l *lab, h *helper, r router) {
	t.Helper()
	bfdUpBoth(t, h, r, "up")
	if s := h.session(torIP).BFD; s.DetectionTime == nil || s.DetectionTime.Duration != bfdDetect {
		t.Fatalf("negotiated detection time %+v, want %s", s.DetectionTime, bfdDetect)
	}

	before := h.session(torIP).BFD.Failures // FRR's re-created session may count one
	cutPath(t, l.node)
	ours, tor := withdrawals(t, h, r, bfdDetect+bfdSlack)
	t.Logf("%s, path cut: routes withdrawn at the node after %s, at the ToR after %s (detection time %s, hold time 9s)", r.name, ours, tor, bfdDetect)
	s := h.session(torIP)
	if s.BFD.State != "Down" || s.BFD.Diagnostic != "ControlDetectionTimeExpired" || s.BFD.Failures != before+1 {
		t.Errorf("BFD status after the cut: %+v", s.BFD)
	}
	restorePath(t, l.node)
	bfdUpBoth(t, h, r, "path restored")

	// A frozen agent keeps its connections open but stops answering: only
	// the ToR's BFD notices in time.
	must(t, h.p.cmd.Process.Signal(syscall.SIGSTOP))
	start := time.Now()
	waitFor(t, r.name+" to drop the frozen node's routes", bfdDetect+bfdSlack, func() bool { return len(r.received(t)) == 0 })
	t.Logf("%s, agent frozen: routes withdrawn at the ToR after %s", r.name, time.Since(start))
	must(t, h.p.cmd.Process.Signal(syscall.SIGCONT))
	bfdUpBoth(t, h, r, "agent thawed")
}

// keptDuring runs fn while polling the ToR every 20 ms, and fails if the
// ToR lacked our routes at any poll: a restart must not flap them.
func keptDuring(t *testing.T, r router, what string, fn func()) {
	t.Helper()
	stop, done := make(chan struct{}), make(chan struct{})
	var lost []string
	polls := 0
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if got := sorted(r.received(t)...); !slices.Equal(got, ourRoutes) {
				lost = append(lost, fmt.Sprintf("%v", got))
			}
			polls++
			time.Sleep(20 * time.Millisecond)
		}
	}()
	fn()
	close(stop)
	<-done
	if len(lost) > 0 {
		t.Fatalf("%s: %s lacked our routes in %d of %d polls (e.g. had %s)", what, r.name, len(lost), polls, lost[0])
	}
	t.Logf("%s: %s held our routes in all %d polls", what, r.name, polls)
}

// restartAgent stops the helper as the agent stops for a restart
// (SIGTERM: BFD handed over), waits past the normal detection time, and
// starts the next one. The ToR must keep our routes while the agent is
// away; through the whole restart if whole, else until the new agent's
// BGP session comes up (FRR flushes stale routes then, because GoBGP does
// not set the forwarding-state bit on a restart: a graceful-restart matter,
// not BFD's).
func restartAgent(t *testing.T, l *lab, h *helper, st helperState, r router, whole bool) *helper {
	t.Helper()
	waitFor(t, "convergence", 30*time.Second, func() bool { return h.routes().Converged })
	var h2 *helper
	start := func() {
		h2 = l.startHelper(st)
		waitFor(t, "the new agent's session", 60*time.Second, func() bool {
			s := h2.session(torIP)
			return s.State == "Established" && s.BFD != nil && s.BFD.State == "Up"
		})
		waitFor(t, "convergence", 30*time.Second, func() bool { return h2.routes().Converged })
	}
	keptDuring(t, r, "planned agent restart", func() {
		h.stop()
		time.Sleep(3 * bfdDetect)
		if whole {
			start()
		}
	})
	if !whole {
		start()
	}
	return h2
}

func birdRouter(b *bird) router {
	return router{
		name:     "BIRD",
		received: b.received,
		bfdUp: func() bool {
			out, err := b.birdc("show", "bfd", "sessions")
			return err == nil && strings.Contains(out, nodeIP) && strings.Contains(out, " Up ")
		},
	}
}

// bfdDowns reads FRR's count of down events of its BFD session to the node.
func (f *frr) bfdDowns(t *testing.T) int {
	t.Helper()
	out, err := f.vtysh("show bfd peer " + nodeIP + " counters")
	must(t, err)
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Session down events:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			must(t, err)
			return n
		}
	}
	t.Fatalf("no down count in:\n%s", out)
	return 0
}

func frrRouter(f *frr) router {
	return router{
		name:     "FRR",
		received: f.received,
		bfdUp: func() bool {
			out, err := f.vtysh("show bfd peer " + nodeIP)
			return err == nil && strings.Contains(out, "Status: up")
		},
	}
}

// TestBFDWithBIRD: BIRD's BFD (`bfd on`) and ours come Up, negotiate 300
// ms, and a silent path cut or a frozen agent moves the routes on both
// sides within the detection time. When BIRD restarts (its BFD stops with
// it, C bit clear) the node keeps BIRD's routes for graceful restart (RFC
// 5882 4.3.2). A planned agent restart hands its BFD session over and BIRD
// keeps the node's routes; after a crash, BIRD 2.0.12 (which closes the
// BGP session on any BFD Down) drops them until the agent is back.
func TestBFDWithBIRD(t *testing.T) {
	l := newLab(t)
	routes := []string{"0.0.0.0/0", "192.168.10.0/24"}
	b := l.startBIRDBFD("s3cret", routes, &routerBFD{mode: "on", interval: bfdInterval, multiplier: bfdMult})
	st := nodeState(torPeerBFD())
	st.Secrets["bgp-passwords/tor"] = "s3cret"
	h := l.startHelper(st)
	r := birdRouter(b)
	checkBFDFailover(t, l, h, r)

	// BIRD crashes and comes back: BGP sees the connection close first, then
	// BFD times out during the restart; the node keeps BIRD's routes.
	waitFor(t, "convergence", 30*time.Second, func() bool { return h.routes().Converged })
	b.kill()
	waitFor(t, "BGP down after BIRD's crash", 30*time.Second, func() bool { return h.session(torIP).State != "Established" })
	waitFor(t, "our BFD down after BIRD's crash", 5*time.Second, func() bool { return h.session(torIP).BFD.State == "Down" })
	if got := h.routes().Routes; len(got) != 2 {
		t.Fatalf("the node dropped BIRD's routes during its restart: %v", got)
	}
	b.restart("s3cret", routes)
	bfdUpBoth(t, h, r, "BIRD restarted")

	// A planned restart hands BFD over: BIRD keeps our routes throughout.
	h = restartAgent(t, l, h, st, r, true)
	bfdUpBoth(t, h, r, "agent restarted")

	// A crash hands nothing over: BIRD's BFD times out and BIRD 2.0.12, as
	// on any BFD Down, closes the session and drops our routes until the
	// next agent is back (design 0017).
	must(t, h.p.cmd.Process.Kill())
	waitFor(t, "the crashed agent gone", 10*time.Second, h.p.exited)
	crashed := time.Now()
	waitFor(t, "BIRD to drop the crashed node's routes", bfdDetect+bfdSlack, func() bool { return len(b.received(t)) == 0 })
	t.Logf("BIRD dropped the crashed node's routes after %s", time.Since(crashed))
	h = l.startHelper(st)
	bfdUpBoth(t, h, r, "agent back after the crash")
}

// TestBFDWithFRR: FRR's bfdd and ours, the same failures; a planned agent
// restart keeps the node's routes at FRR.
func TestBFDWithFRR(t *testing.T) {
	l := newLab(t)
	f := l.startFRRWith("s3cret", []string{"0.0.0.0/0", "192.168.10.0/24"},
		&routerBFD{interval: bfdInterval, multiplier: bfdMult})
	st := nodeState(torPeerBFD())
	st.Secrets["bgp-passwords/tor"] = "s3cret"
	h := l.startHelper(st)
	r := frrRouter(f)
	checkBFDFailover(t, l, h, r)

	downs := f.bfdDowns(t)
	h = restartAgent(t, l, h, st, r, false)
	bfdUpBoth(t, h, r, "agent restarted")
	if d := f.bfdDowns(t); d != downs {
		t.Fatalf("FRR's BFD session went down %d times during the planned restart", d-downs)
	}
}
