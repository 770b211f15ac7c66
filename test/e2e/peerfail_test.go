//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// Issue 16, item 6: peer failures with BIRD and FRR ToRs — a node's link
// cut and restored, a ToR restarted, a session flapped 20 times — timed
// from the watches, with the promise that nothing else is disturbed: no
// ping lost that does not need the failed part, no route deleted at a
// node, no agent NotReady, nothing leaked.

// torCLI runs the ToR's CLI of a rack: birdc, or vtysh with each argument
// as one -c command.
func (h *hitlessLab) torCLI(t *testing.T, rack int, cmds ...string) string {
	t.Helper()
	dir := filepath.Join(h.l.Dir, "tors", fmt.Sprint(rack))
	var args []string
	switch h.tor {
	case "bird":
		args = append([]string{"birdc", "-s", filepath.Join(dir, "bird.ctl")}, strings.Fields(cmds[0])...)
	case "frr":
		args = []string{"vtysh", "--vty_socket", filepath.Join(dir, "run")}
		for _, c := range cmds {
			args = append(args, "-c", c)
		}
	}
	out, err := h.l.Exec(context.Background(), fmt.Sprintf("tor-%d", rack), args...)
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return string(out)
}

// setSession takes the ToR's session to a node down (administratively) or
// up again.
func (h *hitlessLab) setSession(t *testing.T, node string, up bool) {
	t.Helper()
	n, _ := h.l.Plan.Node(node)
	rack := h.l.Plan.Racks[n.Rack-1]
	switch h.tor {
	case "bird":
		verb := "disable"
		if up {
			verb = "enable"
		}
		h.torCLI(t, rack.Index, verb+" "+strings.ReplaceAll(node, "-", "_"))
	case "frr":
		neg := ""
		if up {
			neg = "no "
		}
		h.torCLI(t, rack.Index, "configure terminal", fmt.Sprintf("router bgp %d", rack.ToRAS),
			fmt.Sprintf("%sneighbor %s shutdown", neg, n.Addr.Addr()))
	}
}

// torSessionUp reports whether the node's session to its ToR is
// established, as the node sees it.
func (h *hitlessLab) torSessionUp(node string) bool {
	n, _ := h.l.Plan.Node(node)
	out, _ := h.l.Exec(context.Background(), node, "gobgp", "neighbor", n.Gateway.String())
	return strings.Contains(strings.ToLower(string(out)), "bgp state = established")
}

// torRoutes is the ToR's kernel routes to pod blocks, as a set.
func (h *hitlessLab) torRoutes(rack int) []string {
	out, _ := h.l.Exec(context.Background(), fmt.Sprintf("tor-%d", rack), "ip", "-4", "route", "show", "10.244.0.0/16")
	var rs []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			rs = append(rs, f[0])
		}
	}
	sort.Strings(rs)
	return rs
}

// hasRoute reports whether a lab namespace has a route to prefix.
func (h *hitlessLab) hasRoute(where, prefix string) bool {
	out, _ := h.l.Exec(context.Background(), where, "ip", "-4", "route", "show", "exact", prefix)
	return strings.TrimSpace(string(out)) != ""
}

// pingPairs starts pings between the named pods' nodes.
func (h *hitlessLab) pingPairs(t *testing.T, pairs ...[2]string) map[string]*fastPing {
	out := map[string]*fastPing{}
	for _, pr := range pairs {
		name := pr[0] + "->" + pr[1]
		p := startFastPing(t, h.l, h.pods[pr[0]], h.pods[pr[1]].Addresses[0], name)
		h.watch.pings = append(h.watch.pings, p)
		out[name] = p
	}
	time.Sleep(500 * time.Millisecond)
	return out
}

// requirePings fails for every named ping that lost a packet.
func requirePings(t *testing.T, res scenarioResult, names ...string) {
	t.Helper()
	for _, p := range res.Pings {
		if slices.Contains(names, p.Name) && (p.Lost() > 0 || p.Sent == 0) {
			t.Errorf("%s: %s lost %d of %d pings; it does not cross the failed part", res.Name, p.Name, p.Lost(), p.Sent)
		}
	}
}

// requireNoDeletions fails for deletions seen at the named places.
func requireNoDeletions(t *testing.T, res scenarioResult, where ...string) {
	t.Helper()
	for _, w := range where {
		if d := res.Deletions[w]; len(d) > 0 {
			t.Errorf("%s: %d route deletions at %s (first: %s)", res.Name, len(d), w, d[0].Text)
		}
	}
}

// firstDeletion returns when prefix was first deleted at where since the
// scenario began.
func (h *hitlessLab) firstDeletion(where, prefix string) time.Time {
	for i, w := range h.watch.watches {
		if w.where == where {
			if d := w.deletions(h.watch.marks[i], prefix); len(d) > 0 {
				return d[0].At
			}
		}
	}
	return time.Time{}
}

func since(t0, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Sub(t0).Round(10 * time.Millisecond).String()
}

func testPeerFailures(t *testing.T, h *hitlessLab) {
	nodes := []string{"node-1", "node-2", "node-3", "node-4"}
	t.Run("cut-link", func(t *testing.T) {
		// node-3 (rack 2) loses its link for good, then gets it back.
		block3 := h.blocks[2]
		h.watch.begin()
		ready := watchReady(h.l, []string{"node-1", "node-2", "node-4"})
		pings := h.pingPairs(t, [2]string{"node-1", "node-2"}, [2]string{"node-4", "node-2"}, [2]string{"node-1", "node-3"}, [2]string{"node-4", "node-3"})
		ctx := ctxFor(t, 3*time.Minute)
		cut := time.Now()
		if _, err := h.l.Exec(ctx, "node-3", "ip", "link", "set", "eth0", "down"); err != nil {
			t.Fatal(err)
		}
		for _, where := range []string{"tor-1", "tor-2", "node-1", "node-4"} {
			eventually(t, 30*time.Second, where+" drops node-3's block", func() (bool, string) {
				return !h.hasRoute(where, block3), "still routed"
			})
		}
		time.Sleep(time.Second)
		restore := time.Now()
		n3, _ := h.l.Plan.Node("node-3")
		if _, err := h.l.Exec(ctx, "node-3", "ip", "link", "set", "eth0", "up"); err != nil {
			t.Fatal(err)
		}
		h.l.Exec(ctx, "node-3", "ip", "route", "replace", "default", "via", n3.Gateway.String())
		for _, where := range []string{"tor-1", "node-1", "node-4"} {
			eventually(t, 90*time.Second, where+" routes node-3's block again", func() (bool, string) {
				return h.hasRoute(where, block3), "no route"
			})
		}
		eventually(t, 90*time.Second, "pings to node-3 answered again", func() (bool, string) {
			return !pings["node-1->node-3"].firstReplyAfter(restore).IsZero() && !pings["node-4->node-3"].firstReplyAfter(restore).IsZero(), ""
		})
		time.Sleep(2 * time.Second)
		notReady := ready.end()
		res := h.watch.end(t, h.tor+"/node-3's link cut and restored", h.blocks)
		res.report(t)
		t.Logf("RESULT %s: node-3's block withdrawn after: tor-2 %s, tor-1 %s, node-4 %s, node-1 %s (hold time 9 s); "+
			"traffic back after the link: node-1->node-3 %s (across racks), node-4->node-3 %s (same rack)", res.Name,
			since(cut, h.firstDeletion("tor-2", block3)), since(cut, h.firstDeletion("tor-1", block3)),
			since(cut, h.firstDeletion("node-4", block3)), since(cut, h.firstDeletion("node-1", block3)),
			since(restore, pings["node-1->node-3"].firstReplyAfter(restore)), since(restore, pings["node-4->node-3"].firstReplyAfter(restore)))
		requirePings(t, res, "node-1->node-2", "node-4->node-2")
		for _, where := range []string{"tor-1", "tor-2", "node-1", "node-2", "node-4"} {
			for _, d := range res.Deletions[where] {
				if d.Prefix() != block3 {
					t.Errorf("%s: %s deleted a route to another block: %s", res.Name, where, d.Text)
				}
			}
		}
		for n, why := range notReady {
			t.Errorf("%s: %s went NotReady while node-3 was cut off: %s", res.Name, n, why)
		}
	})

	t.Run("restart-tor", func(t *testing.T) {
		// tor-2's routing daemons restart (as a ToR reboot would). Traffic
		// across racks through it stops; nothing else is disturbed.
		h.watch.begin()
		ready := watchReady(h.l, nodes)
		pings := h.pingPairs(t, [2]string{"node-1", "node-2"}, [2]string{"node-4", "node-3"}, [2]string{"node-1", "node-3"}, [2]string{"node-4", "node-2"})
		stop := time.Now()
		h.l.StopToR(2)
		time.Sleep(2 * time.Second)
		start := time.Now()
		if err := h.l.StartToR(2); err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"node-3", "node-4"} {
			eventually(t, 60*time.Second, n+"'s session to the restarted ToR", func() (bool, string) { return h.torSessionUp(n), "" })
		}
		eventually(t, 60*time.Second, "traffic across racks back", func() (bool, string) {
			return !pings["node-1->node-3"].firstReplyAfter(start).IsZero() && !pings["node-4->node-2"].firstReplyAfter(start).IsZero(), ""
		})
		sessions := time.Since(start)
		time.Sleep(2 * time.Second)
		notReady := ready.end()
		res := h.watch.end(t, h.tor+"/tor-2 restarted", h.blocks)
		res.report(t)
		t.Logf("RESULT %s: daemons down for %s; traffic across racks back %s and %s after the start (sessions up within %s)",
			res.Name, start.Sub(stop).Round(10*time.Millisecond),
			since(start, pings["node-1->node-3"].firstReplyAfter(start)), since(start, pings["node-4->node-2"].firstReplyAfter(start)),
			sessions.Round(10*time.Millisecond))
		requirePings(t, res, "node-1->node-2", "node-4->node-3")
		// Routes to the blocks of a node's own rack stay. Routes to the
		// other rack's blocks come from mesh sessions that cross the
		// restarting ToR: with the lab's 9 s hold time, TCP's
		// retransmission backoff across the outage can let their hold
		// timers run out, and their routes are then withdrawn (design
		// 0004's addendum); traffic to those blocks goes through the ToR
		// either way, so nothing is lost by it. Reported, not failed.
		for _, n := range h.l.Plan.Nodes {
			for j, o := range h.l.Plan.Nodes {
				if o.Rack != n.Rack {
					continue
				}
				for _, d := range res.Deletions[n.Name] {
					if d.Prefix() == h.blocks[j] {
						t.Errorf("%s: %s deleted the route to %s's block, in its own rack: %s", res.Name, n.Name, o.Name, d.Text)
					}
				}
			}
		}
		for n, why := range notReady {
			t.Errorf("%s: %s went NotReady while its ToR restarted: %s", res.Name, n, why)
		}
	})

	t.Run("flap20", func(t *testing.T) {
		// The ToR takes its session to node-3 down and up 20 times.
		ctx := ctxFor(t, 10*time.Minute)
		block3 := h.blocks[2]
		eventually(t, 60*time.Second, "settled", func() (bool, string) {
			return h.torSessionUp("node-3") && h.hasRoute("tor-1", block3), ""
		})
		time.Sleep(2 * time.Second)
		kernel0, _ := h.l.KernelRoutes(ctx, "node-3")
		tor0, tor1 := h.torRoutes(2), h.torRoutes(1)
		m0, err := h.l.AgentMetrics(ctx, "node-3")
		if err != nil {
			t.Fatal(err)
		}
		h.watch.begin()
		ready := watchReady(h.l, nodes)
		h.pingPairs(t, [2]string{"node-4", "node-3"}, [2]string{"node-1", "node-2"}, [2]string{"node-1", "node-3"})
		var back []time.Duration
		for i := range 20 {
			h.setSession(t, "node-3", false)
			eventually(t, 30*time.Second, fmt.Sprintf("flap %d: session down", i+1), func() (bool, string) { return !h.torSessionUp("node-3"), "" })
			on := time.Now()
			h.setSession(t, "node-3", true)
			eventually(t, 60*time.Second, fmt.Sprintf("flap %d: session up and tor-1 routing node-3's block", i+1), func() (bool, string) {
				return h.torSessionUp("node-3") && h.hasRoute("tor-1", block3), ""
			})
			back = append(back, time.Since(on))
		}
		time.Sleep(3 * time.Second)
		notReady := ready.end()
		res := h.watch.end(t, h.tor+"/node-3's ToR session flapped 20 times", h.blocks)
		res.report(t)
		slices.Sort(back)
		t.Logf("RESULT %s: session re-established and node-3's block at tor-1 again after the ToR's enable: median %s, max %s",
			res.Name, back[len(back)/2].Round(10*time.Millisecond), back[len(back)-1].Round(10*time.Millisecond))
		requirePings(t, res, "node-4->node-3", "node-1->node-2")
		requireNoDeletions(t, res, nodes...)
		for n, why := range notReady {
			t.Errorf("%s: %s went NotReady during the flaps: %s", res.Name, n, why)
		}
		kernel1, _ := h.l.KernelRoutes(ctx, "node-3")
		if fmt.Sprint(kernel1) != fmt.Sprint(kernel0) {
			t.Errorf("node-3's routes after 20 flaps differ: %v → %v", kernel0, kernel1)
		}
		if got := h.torRoutes(2); !slices.Equal(got, tor0) {
			t.Errorf("tor-2's routes after 20 flaps: %v, before %v", got, tor0)
		}
		if got := h.torRoutes(1); !slices.Equal(got, tor1) {
			t.Errorf("tor-1's routes after 20 flaps: %v, before %v", got, tor1)
		}
		m1, err := h.l.AgentMetrics(ctx, "node-3")
		if err != nil {
			t.Fatal(err)
		}
		g0, g1 := m0["go_goroutines"], m1["go_goroutines"]
		r0, r1 := m0["process_resident_memory_bytes"], m1["process_resident_memory_bytes"]
		t.Logf("RESULT %s: node-3's agent: goroutines %v → %v, RSS %.1f → %.1f MiB", res.Name, g0, g1, r0/(1<<20), r1/(1<<20))
		if g1 > g0+20 {
			t.Errorf("goroutines grew from %v to %v over 20 flaps", g0, g1)
		}
		if r1 > r0*1.5+16<<20 {
			t.Errorf("RSS grew from %.1f to %.1f MiB over 20 flaps", r0/(1<<20), r1/(1<<20))
		}
	})
}
