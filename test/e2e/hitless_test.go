//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rhizome-net/rhizome/test/lab"
)

// Issue 16: restarts and faults lose nothing, watched while they happen.
// One lab per ToR kind (two racks of two nodes, native routing between
// racks through the ToRs, so that a route the ToR drops is a packet lost)
// runs every scenario in turn.

// hitlessLab is the shared lab of the scenarios and its watchers.
type hitlessLab struct {
	l     *lab.Lab
	tor   string
	watch watchSet
	// blocks are every node's block (the prefixes watched).
	blocks []string
	pods   map[string]lab.PodRecord // node → its pod
}

func newHitlessLab(t *testing.T, tor string) *hitlessLab {
	l := up(t, lab.Options{Nodes: 4, Racks: 2, ToR: tor, Mode: "mesh", Encap: "none", Pods: 1})
	h := &hitlessLab{l: l, tor: tor, pods: map[string]lab.PodRecord{}}
	for _, n := range l.Plan.Nodes {
		h.blocks = append(h.blocks, blockOf(t, l, n.Name))
		h.pods[n.Name] = podOn(t, l, n.Name)
	}
	// The pods' blocks were claimed after the agents were ready; FRR takes
	// a few seconds more than BIRD to pass them on.
	eventually(t, 60*time.Second, "every pod reaches every pod", func() (bool, string) {
		f := lab.PingMatrix(ctxFor(t, time.Minute), l.State.Pods).Failures()
		return len(f) == 0, strings.Join(f, "; ")
	})
	for _, where := range []string{"tor-1", "tor-2", "node-1", "node-2", "node-3", "node-4"} {
		h.watch.watches = append(h.watch.watches, monitorRoutes(t, l, where))
	}
	// Every ToR route to a pod block is in place before anything starts.
	for _, r := range []int{1, 2} {
		eventually(t, 60*time.Second, fmt.Sprintf("tor-%d routes every block", r), func() (bool, string) {
			out, _ := l.Exec(context.Background(), fmt.Sprintf("tor-%d", r), "ip", "-4", "route")
			for _, b := range h.blocks {
				if !strings.Contains(string(out), b) {
					return false, "no route to " + b + ":\n" + string(out)
				}
			}
			return true, ""
		})
	}
	return h
}

// pingAll starts the scenario's pings: within each rack and across racks in
// both directions, so that every node's pod is a destination.
func (h *hitlessLab) pingAll(t *testing.T) {
	for _, pr := range [][2]string{{"node-1", "node-2"}, {"node-4", "node-3"}, {"node-1", "node-3"}, {"node-4", "node-2"}} {
		from, to := h.pods[pr[0]], h.pods[pr[1]]
		name := fmt.Sprintf("%s->%s", pr[0], pr[1])
		h.watch.pings = append(h.watch.pings, startFastPing(t, h.l, from, to.Addresses[0], name))
	}
	time.Sleep(500 * time.Millisecond) // the pings are flowing before anything happens
}

// waitSessions waits until every session the node's speaker has is
// Established.
func waitSessions(t *testing.T, l *lab.Lab, node string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, node+"'s BGP sessions established", func() (bool, string) {
		out, err := l.Exec(context.Background(), node, "gobgp", "neighbor")
		if err != nil {
			return false, err.Error()
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) < 2 {
			return false, string(out)
		}
		for _, line := range lines[1:] {
			if !strings.Contains(line, "Establ") {
				return false, string(out)
			}
		}
		return true, ""
	})
}

// restartAgent stops a node's agent (SIGKILL or SIGTERM), starts it again
// and waits until it is ready and its sessions are back.
func (h *hitlessLab) restartAgent(t *testing.T, node string, kill bool) {
	t.Helper()
	ctx := ctxFor(t, 3*time.Minute)
	if kill {
		h.l.StopAgent(node, true)
	} else if err := h.l.StopAgentAndWait(ctx, node); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // a restart takes a moment: the peers notice the closed sessions first
	if err := h.l.StartAgent(ctx, node); err != nil {
		t.Fatal(err)
	}
	waitSessions(t, h.l, node, 60*time.Second)
	// The peers' stale routes go at our End-of-RIB, after our routes came:
	// give that time to show in the watches.
	time.Sleep(3 * time.Second)
}

func testAgentRestarts(t *testing.T, h *hitlessLab) {
	t.Run("kill9", func(t *testing.T) {
		h.watch.begin()
		h.pingAll(t)
		h.restartAgent(t, "node-3", true)
		h.watch.end(t, h.tor+"/agent kill -9 (node-3)", h.blocks).requireNoLoss(t)
	})
	t.Run("sigterm", func(t *testing.T) {
		h.watch.begin()
		h.pingAll(t)
		h.restartAgent(t, "node-2", false)
		h.watch.end(t, h.tor+"/agent SIGTERM (node-2)", h.blocks).requireNoLoss(t)
	})
	t.Run("rolling", func(t *testing.T) {
		// A DaemonSet's rolling update with maxUnavailable 1: each agent
		// in turn is stopped, started, and waited for before the next.
		h.watch.begin()
		h.pingAll(t)
		for _, n := range h.l.Plan.Nodes {
			h.restartAgent(t, n.Name, false)
		}
		h.watch.end(t, h.tor+"/rolling restart of 4 agents", h.blocks).requireNoLoss(t)
	})
}

// TestHitlessBIRD runs issue 16's scenarios with BIRD ToRs.
func TestHitlessBIRD(t *testing.T) {
	h := newHitlessLab(t, "bird")
	testAgentRestarts(t, h)
	testPeerFailures(t, h)
	testConfigChanges(t, h)
}

// TestHitlessFRR runs issue 16's scenarios with FRR ToRs.
func TestHitlessFRR(t *testing.T) {
	h := newHitlessLab(t, "frr")
	testAgentRestarts(t, h)
	testPeerFailures(t, h)
	testConfigChanges(t, h)
}
