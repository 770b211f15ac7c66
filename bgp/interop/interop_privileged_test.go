//go:build privileged

package interop

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

func sorted(s ...string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func waitRoutes(t *testing.T, h *helper, what string, want ...string) {
	t.Helper()
	want = sorted(want...)
	var got []string
	waitFor(t, what+": the node's routes to be "+strings.Join(want, "; "), 45*time.Second, func() bool {
		got = h.routes().Routes
		return slices.Equal(got, want) || (len(got) == 0 && len(want) == 0)
	})
}

func waitState(t *testing.T, h *helper, state string) {
	t.Helper()
	waitFor(t, "the ToR session to be "+state, 60*time.Second, func() bool { return h.session(torIP).State == state })
}

// expectNeverEstablished watches the session for a while (several connect
// retries of both sides) and fails if it comes up.
func expectNeverEstablished(t *testing.T, h *helper, window time.Duration) {
	t.Helper()
	for end := time.Now().Add(window); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if s := h.session(torIP); s.State == "Established" {
			t.Fatalf("the session came up with a wrong password: %+v", s)
		}
	}
}

// checkWrongPassword gives the node a wrong password and checks that the
// session never comes up and that the status says why. torDrops counts the
// ToR kernel's MD5 drops (our SYNs). A password change closes the session
// without a NOTIFICATION (design 0015): the ToR's routes are kept as for a
// restart of the ToR, and go when its restart time (10 s in these labs) is
// over without the session back.
func checkWrongPassword(t *testing.T, l *lab, h *helper, right string, torDrops func() uint64) {
	t.Helper()
	nodeBase, torBase := md5Failures(t, l.node), torDrops()
	held := h.routes().Routes
	h.reload(func(s *helperState) { s.Secrets["bgp-passwords/tor"] = "not-" + right })
	waitFor(t, "the session to go down", 30*time.Second, func() bool { return h.session(torIP).State != "Established" })
	if got := h.routes().Routes; !slices.Equal(got, held) {
		t.Errorf("routes right after the password change = %v, want %v kept for the ToR's restart time", got, held)
	}
	waitRoutes(t, h, "restart time over with the session down")
	// Both kernels drop the other side's segments: the ToR ours, ours the ToR's.
	waitFor(t, "the ToR's kernel to drop our signed SYNs", 30*time.Second, func() bool { return torDrops() > torBase })
	waitFor(t, "our kernel to drop the ToR's signed SYNs", 30*time.Second, func() bool { return md5Failures(t, l.node) > nodeBase })
	var s = h.session(torIP)
	waitFor(t, "the status to explain the failure", 30*time.Second, func() bool {
		s = h.session(torIP)
		return strings.Contains(s.LastError, "TCP MD5 password mismatch")
	})
	t.Logf("status with a wrong password: state %s, lastError %q", s.State, s.LastError)
	expectNeverEstablished(t, h, 8*time.Second)

	// The right password again: the session comes back.
	h.reload(func(s *helperState) { s.Secrets["bgp-passwords/tor"] = right })
	waitState(t, h, "Established")
	if s := h.session(torIP); s.LastError != "" && strings.Contains(s.LastError, "MD5") {
		t.Errorf("an established session still reports %q", s.LastError)
	}
}

func TestBIRDeBGPWithMD5(t *testing.T) {
	l := newLab(t)
	b := l.startBIRD("s3cret", torRoutes)
	st := nodeState(torPeer(acceptDefaultAndOffice...))
	st.Secrets["bgp-passwords/tor"] = "s3cret"
	h := l.startHelper(st)

	waitState(t, h, "Established")
	// The default route and the office range pass the filters; another
	// node's block does not (no filter accepts it) and our own block never
	// does.
	waitRoutes(t, h, "filters", "0.0.0.0/0 via "+torIP, "192.168.10.0/24 via "+torIP)
	s := h.session(torIP)
	if s.Kind != "external" || s.Source != "tor" || s.PeerAS != torAS || s.PrefixesReceived != 4 || s.PrefixesAccepted != 2 || s.Since == nil {
		t.Errorf("session status = %+v", s)
	}
	if rej := h.status().Rejected; rej["own-block"] != 1 || rej["no-filter-match"] != 1 {
		t.Errorf("rejected = %v, want one own-block and one no-filter-match", rej)
	}
	// BIRD gets our block and Service range, nothing else.
	waitFor(t, "BIRD to hold our routes", 30*time.Second, func() bool {
		return slices.Equal(sorted(b.received(t)...), sorted("10.244.1.0/26", "10.96.0.0/12"))
	})
	// The stock gobgp CLI inspects the node's speaker inside its namespace.
	out, err := l.node.Exec(context.Background(), "gobgp", "neighbor")
	if err != nil || !strings.Contains(string(out), torIP) || !strings.Contains(string(out), "Establ") {
		t.Errorf("gobgp neighbor: %v\n%s", err, out)
	}

	checkWrongPassword(t, l, h, "s3cret", func() uint64 { return md5Failures(t, l.tor) })
	waitRoutes(t, h, "password fixed", "0.0.0.0/0 via "+torIP, "192.168.10.0/24 via "+torIP)
}

func TestBIRDGracefulRestart(t *testing.T) {
	l := newLab(t)
	routes := []string{"0.0.0.0/0", "192.168.10.0/24", "192.168.11.0/24"}
	b := l.startBIRD("s3cret", routes)
	st := nodeState(torPeer(acceptDefaultAndOffice...))
	st.Secrets["bgp-passwords/tor"] = "s3cret"
	h := l.startHelper(st)
	all := []string{"0.0.0.0/0 via " + torIP, "192.168.10.0/24 via " + torIP, "192.168.11.0/24 via " + torIP}
	waitState(t, h, "Established")
	waitRoutes(t, h, "up", all...)
	waitFor(t, "convergence (End-of-RIB)", 30*time.Second, func() bool { return h.routes().Converged })

	// BIRD crashes: no notification, so its routes stay (stale) while it
	// is away.
	b.kill()
	waitFor(t, "the session to drop", 30*time.Second, func() bool { return h.session(torIP).State != "Established" })
	if got := h.routes().Routes; !slices.Equal(got, sorted(all...)) {
		t.Fatalf("routes during the restart = %v, want all kept: %v", got, all)
	}

	// It comes back without 192.168.11.0/24: after its End-of-RIB that
	// stale route goes and the others stay.
	b.restart("s3cret", routes[:2])
	waitState(t, h, "Established")
	waitRoutes(t, h, "after End-of-RIB", all[:2]...)

	// It crashes and stays away: the routes go when its restart time
	// (10s) runs out.
	b.kill()
	waitFor(t, "the session to drop", 30*time.Second, func() bool { return h.session(torIP).State != "Established" })
	if got := h.routes().Routes; len(got) != 2 {
		t.Fatalf("routes right after the second crash = %v", got)
	}
	waitRoutes(t, h, "restart time over")
}

func TestFRReBGPWithMD5(t *testing.T) {
	l := newLab(t)
	f := l.startFRR("s3cret", torRoutes)
	// First without import filters: nothing from an external peer is
	// accepted, neither the default route nor another node's block.
	st := nodeState(torPeer())
	st.Secrets["bgp-passwords/tor"] = "s3cret"
	h := l.startHelper(st)
	waitState(t, h, "Established")
	waitFor(t, "all four routes received", 30*time.Second, func() bool { return h.session(torIP).PrefixesReceived == 4 })
	waitRoutes(t, h, "no filters")
	if s := h.session(torIP); s.PrefixesAccepted != 0 {
		t.Errorf("accepted %d routes without filters", s.PrefixesAccepted)
	}
	if rej := h.status().Rejected; rej["own-block"] != 1 || rej["no-filter-match"] != 3 {
		t.Errorf("rejected = %v", rej)
	}
	// Filters added: the held routes are judged again, no session reset.
	since := h.session(torIP).Since
	h.reload(func(s *helperState) { s.Peers = []v1alpha1.BGPPeer{torPeer(acceptDefaultAndOffice...)} })
	waitRoutes(t, h, "filters added", "0.0.0.0/0 via "+torIP, "192.168.10.0/24 via "+torIP)
	if s := h.session(torIP); s.Since == nil || !s.Since.Equal(since) {
		t.Errorf("the session was reset by a filter change: since %v → %v", since, s.Since)
	}
	waitFor(t, "bgpd to hold our routes", 30*time.Second, func() bool {
		return slices.Equal(sorted(f.received(t)...), sorted("10.244.1.0/26", "10.96.0.0/12"))
	})

	checkWrongPassword(t, l, h, "s3cret", func() uint64 { return md5Failures(t, l.tor) })
	waitRoutes(t, h, "password fixed", "0.0.0.0/0 via "+torIP, "192.168.10.0/24 via "+torIP)
}

// TestAgentRestartKeepsRoutesAtBIRD stops the node's BGP stack the way the
// agent stops for a restart: BIRD, as graceful-restart helper, keeps the
// node's routes while it is away, and takes the fresh ones when it is back.
func TestAgentRestartKeepsRoutesAtBIRD(t *testing.T) {
	l := newLab(t)
	b := l.startBIRD("s3cret", []string{"0.0.0.0/0"})
	st := nodeState(torPeer(acceptDefaultAndOffice...))
	st.Secrets["bgp-passwords/tor"] = "s3cret"
	h := l.startHelper(st)
	ours := sorted("10.244.1.0/26", "10.96.0.0/12")
	waitFor(t, "BIRD to hold our routes", 60*time.Second, func() bool { return slices.Equal(sorted(b.received(t)...), ours) })

	h.stop()
	waitFor(t, "BIRD to see the session go", 30*time.Second, func() bool {
		out, _ := b.birdc("show", "protocols", "node")
		return !strings.Contains(out, "Established")
	})
	if got := sorted(b.received(t)...); !slices.Equal(got, ours) {
		t.Fatalf("BIRD dropped our routes when the agent stopped: %v (want them kept for graceful restart)", got)
	}

	// The agent is back, with a block fewer: BIRD ends with exactly the new
	// set once our End-of-RIB arrives.
	st.Blocks = nil
	h2 := l.startHelper(st)
	waitState(t, h2, "Established")
	waitFor(t, "BIRD to hold only the Service range", 60*time.Second, func() bool {
		return slices.Equal(sorted(b.received(t)...), []string{"10.96.0.0/12"})
	})
}
