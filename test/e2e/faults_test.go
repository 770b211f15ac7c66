//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rhizome-net/rhizome/test/controlplane"
	"github.com/rhizome-net/rhizome/test/lab"
)

// pinger runs a continuous ping between two pods (every 50 ms) until stop.
type pinger struct {
	cmd *exec.Cmd
	out strings.Builder
	mu  sync.Mutex
}

func startPing(t *testing.T, l *lab.Lab, from lab.PodRecord, to string) *pinger {
	t.Helper()
	return startPingEvery(t, from, to, "0.05")
}

// startPingEvery pings to from the pod's namespace every interval seconds.
func startPingEvery(t *testing.T, from lab.PodRecord, to, interval string) *pinger {
	t.Helper()
	p := &pinger{}
	argv := lab.InNetNS(from.NetNS, "ping", "-i", interval, "-W", "1", to)
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Stdout = &lockedWriter{p: p}
	p.cmd.Stderr = &lockedWriter{p: p}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
	return p
}

type lockedWriter struct{ p *pinger }

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// stop ends the ping (SIGINT, so it prints its summary) and returns the
// packets sent and received.
func (p *pinger) stop(t *testing.T) (sent, received int) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGINT)
	p.cmd.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	m := pingSummary.FindStringSubmatch(p.out.String())
	if m == nil {
		t.Fatalf("no ping summary:\n%s", p.out.String())
	}
	sent, _ = strconv.Atoi(m[1])
	received, _ = strconv.Atoi(m[2])
	return sent, received
}

// watchRoute polls node's route to prefix until stop and reports whether
// it was ever missing.
func watchRoute(t *testing.T, l *lab.Lab, node, prefix string) (stop func() (missing int, polls int)) {
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	missing, polls := 0, 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			r, err := l.KernelRoutes(ctx, node)
			if err == nil {
				mu.Lock()
				polls++
				if r[prefix] == "" {
					missing++
				}
				mu.Unlock()
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	return func() (int, int) {
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return missing, polls
	}
}

func podOn(t *testing.T, l *lab.Lab, node string) lab.PodRecord {
	t.Helper()
	for _, p := range l.State.Pods {
		if p.Node == node {
			return p
		}
	}
	t.Fatalf("no pod on %s", node)
	return lab.PodRecord{}
}

// TestAgentKill9GracefulRestart: kill -9 one agent and start it again.
// During the restart the other nodes keep its block's route (graceful
// restart), the kernel of the killed node keeps its routes, and a
// continuous ping between pods on the two nodes loses nothing.
func TestAgentKill9GracefulRestart(t *testing.T) {
	l := up(t, lab.Options{Nodes: 3, Racks: 1, ToR: "none", Mode: "mesh", Encap: "vxlan", Pods: 1})
	ctx := ctxFor(t, 5*time.Minute)
	src, dst := podOn(t, l, "node-1"), podOn(t, l, "node-2")
	block := blockOf(t, l, "node-2")
	p := startPing(t, l, src, dst.Addresses[0])
	stopWatch := watchRoute(t, l, "node-1", block)
	time.Sleep(2 * time.Second)

	before, _ := l.KernelRoutes(ctx, "node-2")
	l.StopAgent("node-2", true) // SIGKILL
	time.Sleep(3 * time.Second) // well past a hold-less session drop
	if after, _ := l.KernelRoutes(ctx, "node-2"); len(after) != len(before) {
		t.Errorf("node-2's kernel routes changed while its agent was dead: %v → %v", before, after)
	}
	if err := l.StartAgent(ctx, "node-2"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	missing, polls := stopWatch()
	sent, received := p.stop(t)
	t.Logf("ping %d sent, %d received; node-1's route to %s missing in %d of %d polls", sent, received, block, missing, polls)
	if missing > 0 {
		t.Errorf("node-1 withdrew the route to node-2's block during graceful restart (%d of %d polls)", missing, polls)
	}
	if sent == 0 || received != sent {
		t.Errorf("continuous ping lost %d of %d packets across the agent restart", sent-received, sent)
	}
	requireMatrix(t, l)
}

// TestAPIServerOutage: the API server is down for 60 s. Sessions and routes
// stay; a change made after it returns (a new pod on another node) takes
// effect everywhere.
func TestAPIServerOutage(t *testing.T) {
	l := up(t, lab.Options{Nodes: 3, Racks: 1, ToR: "none", Mode: "mesh", Encap: "none", Pods: 1})
	ctx := ctxFor(t, 5*time.Minute)
	// The baseline is the converged state: every node holds a route for
	// each node's block (its own as a blackhole). Right after up, an agent
	// may still be programming the block its pod just claimed.
	before := map[string]map[string]string{}
	eventually(t, 30*time.Second, "every node routes every block", func() (bool, string) {
		for _, n := range l.Plan.Nodes {
			r, err := l.KernelRoutes(ctx, n.Name)
			if err != nil || len(r) != len(l.Plan.Nodes) {
				return false, fmt.Sprintf("%s: %v %v", n.Name, r, err)
			}
			before[n.Name] = r
		}
		return true, ""
	})
	src, dst := podOn(t, l, "node-1"), podOn(t, l, "node-3")
	p := startPing(t, l, src, dst.Addresses[0])
	if err := controlplane.StopAPIServer(l.ControlPlaneDir()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Second)
	for _, n := range l.Plan.Nodes {
		out, _ := l.Exec(ctx, n.Name, "gobgp", "neighbor")
		if got := strings.Count(string(out), "Establ"); got != 2 {
			t.Errorf("%s during the outage: %d sessions established, want 2:\n%s", n.Name, got, out)
		}
		now, _ := l.KernelRoutes(ctx, n.Name)
		if fmt.Sprint(now) != fmt.Sprint(before[n.Name]) {
			t.Errorf("%s's routes changed during the outage: %v → %v", n.Name, before[n.Name], now)
		}
	}
	if err := controlplane.StartAPIServer(ctx, l.ControlPlaneDir()); err != nil {
		t.Fatal(err)
	}
	sent, received := p.stop(t)
	if received != sent {
		t.Errorf("ping across the outage lost %d of %d packets", sent-received, sent)
	}
	// A change after the outage takes effect: a new pod on node-2,
	// reached from every node.
	if _, err := l.NewPod(ctx, "node-2"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "connectivity to a pod created after the outage", func() (bool, string) {
		m := lab.PingMatrix(ctx, l.State.Pods)
		f := m.Failures()
		return len(f) == 0, strings.Join(f, "; ")
	})
}

// A node's link cut and restored, a ToR restarted and a session flapped 20
// times are in peerfail_test.go (TestHitlessBIRD, TestHitlessFRR): with
// BIRD and FRR ToRs, watched with 10 ms pings and ip monitor route.
