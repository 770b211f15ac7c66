//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/rhizome-net/rhizome/bgp/reconcile"
	"github.com/rhizome-net/rhizome/test/lab"
)

// withdrawWatch polls, through a netlink handle in each lab namespace, whether
// a route to a prefix is there (every 2 ms: far finer than what is
// measured) and records when it went and came back.
type withdrawWatch struct {
	prefix  *net.IPNet
	targets []string
	handles []*netlink.Handle
	start   time.Time
	mu      sync.Mutex
	gone    map[string]time.Duration
	back    map[string]time.Duration
	stop    chan struct{}
	done    chan struct{}
}

func newWithdrawWatch(t testing.TB, l *lab.Lab, prefix string, targets ...string) *withdrawWatch {
	t.Helper()
	p := netip.MustParsePrefix(prefix)
	w := &withdrawWatch{
		prefix:  &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)},
		targets: targets, gone: map[string]time.Duration{}, back: map[string]time.Duration{},
	}
	for _, n := range targets {
		nsh, err := netns.GetFromPath(filepath.Join("/run/netns", l.NodeNS(n)))
		if err != nil {
			t.Fatal(err)
		}
		h, err := netlink.NewHandleAt(nsh)
		nsh.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.Close)
		w.handles = append(w.handles, h)
	}
	return w
}

func (w *withdrawWatch) present(i int) bool {
	rs, err := w.handles[i].RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: w.prefix}, netlink.RT_FILTER_DST)
	return err == nil && len(rs) > 0
}

// waitPresent waits until every target holds the route: a fault is only
// measured from a state where all of them do.
func (w *withdrawWatch) waitPresent(t testing.TB, bound time.Duration) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for i, n := range w.targets {
		for !w.present(i) {
			if time.Now().After(deadline) {
				t.Fatalf("%s holds no route to %s after %s", n, w.prefix, bound)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// begin starts watching from now: the moment of the fault.
func (w *withdrawWatch) begin() {
	w.start = time.Now()
	w.stop, w.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			for i, n := range w.targets {
				ok := w.present(i)
				el := time.Since(w.start)
				w.mu.Lock()
				if _, g := w.gone[n]; !g && !ok {
					w.gone[n] = el
				} else if _, b := w.back[n]; g && !b && ok {
					w.back[n] = el
				}
				w.mu.Unlock()
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
}

// waitGone waits until the route is gone everywhere and returns the times.
func (w *withdrawWatch) waitGone(t testing.TB, bound time.Duration) map[string]time.Duration {
	t.Helper()
	for {
		w.mu.Lock()
		n := len(w.gone)
		out := make(map[string]time.Duration, n)
		for k, v := range w.gone {
			out[k] = v
		}
		w.mu.Unlock()
		if n == len(w.targets) {
			return out
		}
		if time.Since(w.start) > bound {
			t.Fatalf("after %s the route to %s is gone only at %v (of %v)", bound, w.prefix, out, w.targets)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitBack waits until the route is back everywhere, then stops watching.
func (w *withdrawWatch) waitBack(t testing.TB, bound time.Duration) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		w.mu.Lock()
		n := len(w.back)
		w.mu.Unlock()
		if n == len(w.targets) {
			close(w.stop)
			<-w.done
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the route to %s is not back everywhere within %s (back at %v)", w.prefix, bound, w.back)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func maxOf(m map[string]time.Duration) time.Duration {
	var x time.Duration
	for _, v := range m {
		x = max(x, v)
	}
	return x
}

// cutNode takes a node's link down (its neighbours see no carrier change:
// the node hangs off the rack's bridge in the ToR's namespace).
func cutNode(t testing.TB, ctx context.Context, l *lab.Lab, node string) {
	t.Helper()
	if _, err := l.Exec(ctx, node, "ip", "link", "set", "eth0", "down"); err != nil {
		t.Fatal(err)
	}
}

// restoreNode brings the link back, and the default route that went with it.
func restoreNode(t testing.TB, ctx context.Context, l *lab.Lab, node string) {
	t.Helper()
	if _, err := l.Exec(ctx, node, "ip", "link", "set", "eth0", "up"); err != nil {
		t.Fatal(err)
	}
	n, _ := l.Plan.Node(node)
	l.Exec(ctx, node, "ip", "route", "replace", "default", "via", n.Gateway.String())
}

// settle waits until the sessions that just came up are past the time in
// which the agents look twice at a BFD failure (reconcile.DefaultBFDSettle):
// the failures measured here are those of settled sessions.
func settle() { time.Sleep(reconcile.DefaultBFDSettle + time.Second) }

// bfdSlack is what a withdrawal may take beyond the detection time: the
// session reset, the RIB, the kernel write at us; BIRD's or FRR's own
// processing and kernel export at the ToR; a busy 2-core machine.
const bfdSlack = 1500 * time.Millisecond

// TestBFDFailover: with BFD (300 ms × 3) on the mesh and towards the ToR,
// a node whose link is cut, or whose agent is frozen, loses its routes at
// the ToR and at the other nodes within the detection time, not the 9 s
// hold time; both ToR kinds, BIRD's BFD and FRR's bfdd.
func TestBFDFailover(t *testing.T) {
	for _, tor := range []string{"bird", "frr"} {
		t.Run(tor, func(t *testing.T) {
			l := up(t, lab.Options{Nodes: 3, Racks: 1, ToR: tor, Mode: "mesh", Encap: "none", Pods: 1, BFD: "300x3"})
			ctx := ctxFor(t, 5*time.Minute)
			requireMatrix(t, l)
			block := blockOf(t, l, "node-3")
			watchers := []string{"tor-1", "node-1", "node-2"}
			bound := 900*time.Millisecond + bfdSlack

			w := newWithdrawWatch(t, l, block, watchers...)
			w.waitPresent(t, 60*time.Second)
			settle()
			cutNode(t, ctx, l, "node-3")
			w.begin()
			gone := w.waitGone(t, bound)
			t.Logf("%s ToR, link cut: node-3's block withdrawn after %v", tor, gone)
			restoreNode(t, ctx, l, "node-3")
			w.waitBack(t, 60*time.Second)

			pid := l.AgentPID("node-3")
			w = newWithdrawWatch(t, l, block, watchers...)
			w.waitPresent(t, 60*time.Second)
			settle()
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			w.begin()
			gone = w.waitGone(t, bound)
			t.Logf("%s ToR, agent frozen: node-3's block withdrawn after %v", tor, gone)
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			w.waitBack(t, 60*time.Second)
			requireMatrix(t, l)
		})
	}
}

// TestBFDAgentRestart: with BFD on the mesh, an agent that restarts (SIGTERM,
// then kill -9) keeps its routes at the other nodes throughout: its BGP
// connections close first (graceful restart), its BFD times out during the
// restart, and with the C bit clear that is not a forwarding failure (RFC
// 5882 4.3.2). A ping between pods on the two nodes loses nothing.
func TestBFDAgentRestart(t *testing.T) {
	l := up(t, lab.Options{Nodes: 2, Racks: 1, ToR: "none", Mode: "mesh", Encap: "none", Pods: 1, BFD: "300x3"})
	ctx := ctxFor(t, 5*time.Minute)
	src, dst := podOn(t, l, "node-1"), podOn(t, l, "node-2")
	block := blockOf(t, l, "node-2")
	for _, kill := range []bool{false, true} {
		p := startPing(t, l, src, dst.Addresses[0])
		stopWatch := watchRoute(t, l, "node-1", block)
		time.Sleep(time.Second)
		l.StopAgent("node-2", kill)
		// Well past the BFD detection time before the agent comes back.
		time.Sleep(3 * time.Second)
		if err := l.StartAgent(ctx, "node-2"); err != nil {
			t.Fatal(err)
		}
		eventually(t, 60*time.Second, "BFD Up again", func() (bool, string) {
			m, err := l.AgentMetrics(ctx, "node-1")
			if err != nil {
				return false, err.Error()
			}
			up := m[`rhizome_bfd_sessions{kind="mesh",state="Up"}`]
			return up == 1, fmt.Sprintf("mesh BFD sessions Up: %v", up)
		})
		time.Sleep(time.Second)
		missing, polls := stopWatch()
		sent, received := p.stop(t)
		t.Logf("kill=%t: route missing in %d of %d polls; ping %d/%d", kill, missing, polls, received, sent)
		if missing != 0 {
			t.Errorf("kill=%t: node-1 lost node-2's block during its restart (%d of %d polls)", kill, missing, polls)
		}
		if received < sent-1 { // the last echo may be in flight when ping stops
			t.Errorf("kill=%t: ping lost %d of %d during the restart", kill, sent-received, sent)
		}
	}
}
