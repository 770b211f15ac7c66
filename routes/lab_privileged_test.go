//go:build linux && privileged

package routes

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/test/netns"
)

// The lab: nodes in their own namespaces, each with one pod namespace,
// attached to a router namespace through two bridged subnets:
//
//	            rt (router, ip_forward)
//	   br10 192.168.10.1/24     br20 192.168.20.1/24
//	    |            |                 |
//	  n1 .10.11    n2 .10.12         n3 .20.13       (eth0, default via rt)
//	    |            |                 |
//	  pod 10.244.1.5 10.244.2.5      10.244.3.5      (block 10.244.N.0/26)
//
// Pods are wired the way a CNI plugin does it: a /32 route to the pod's
// veth on the node, 169.254.1.1 as the pod's gateway.

type labNode struct {
	name  string
	ns    *netns.NS
	pod   *netns.NS
	addr  netip.Prefix
	block netip.Prefix
	podIP netip.Addr
	r     *Reconciler
	stop  func()
}

type lab struct {
	t     *testing.T
	rt    *netns.NS
	nodes []*labNode
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// newLab builds nodes n1 (10.11), n2 (10.12) and n3 (20.13).
func newLab(t *testing.T) *lab {
	t.Helper()
	l := &lab{t: t, rt: netns.New(t, "rt")}
	must(t, netns.Sysctl(l.rt, "net.ipv4.ip_forward", "1"))
	for _, br := range []struct{ name, addr string }{{"br10", "192.168.10.1/24"}, {"br20", "192.168.20.1/24"}} {
		must(t, netns.Bridge(l.rt, br.name))
		must(t, netns.AddAddr(l.rt, br.name, netip.MustParsePrefix(br.addr)))
	}
	for i, spec := range []struct{ addr, br, gw string }{
		{"192.168.10.11/24", "br10", "192.168.10.1"},
		{"192.168.10.12/24", "br10", "192.168.10.1"},
		{"192.168.20.13/24", "br20", "192.168.20.1"},
	} {
		n := &labNode{
			name:  fmt.Sprintf("n%d", i+1),
			addr:  netip.MustParsePrefix(spec.addr),
			block: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i + 1), 0}), 26),
			podIP: netip.AddrFrom4([4]byte{10, 244, byte(i + 1), 5}),
		}
		n.ns = netns.New(t, n.name)
		n.pod = netns.New(t, "p"+n.name[1:])
		must(t, netns.Veth(n.ns, "eth0", l.rt, n.name))
		must(t, netns.SetMaster(l.rt, n.name, spec.br))
		must(t, netns.AddAddr(n.ns, "eth0", n.addr))
		l.ip(n.ns, "route", "add", "default", "via", spec.gw)
		// The pod, as a CNI plugin wires it.
		must(t, netns.Veth(n.pod, "eth0", n.ns, "cali0"))
		must(t, netns.AddAddr(n.pod, "eth0", netip.PrefixFrom(n.podIP, 32)))
		must(t, netns.AddAddr(n.ns, "cali0", netip.MustParsePrefix("169.254.1.1/32")))
		l.ip(n.pod, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
		l.ip(n.pod, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
		l.ip(n.ns, "route", "add", n.podIP.String()+"/32", "dev", "cali0", "scope", "link")
		l.nodes = append(l.nodes, n)
	}
	return l
}

// ip runs `ip ARGS` in ns.
func (l *lab) ip(ns *netns.NS, args ...string) string {
	l.t.Helper()
	out, err := ns.Exec(context.Background(), "ip", args...)
	if err != nil {
		l.t.Fatal(err)
	}
	return string(out)
}

// start runs a Reconciler for n until the test ends (or n.stop).
func (l *lab) start(n *labNode) {
	l.t.Helper()
	r, err := New(Config{NetNS: n.ns.Path(), Interface: "eth0", Address: n.addr, Logger: testLogger(l.t).With("node", n.name)})
	must(l.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	n.r = r
	n.stop = func() {
		cancel()
		if err := <-done; err != nil {
			l.t.Errorf("%s: Run: %v", n.name, err)
		}
		_ = r.Close()
		n.stop = func() {}
	}
	l.t.Cleanup(func() { n.stop() })
}

// state is the desired local state of node n with the given pool.
func (l *lab) state(n *labNode, pool Pool) State {
	s := State{Blocks: []OwnBlock{{Prefix: n.block}}, Pools: []Pool{pool}, VXLANAddress: n.block.Addr()}
	if pool.IPIPMode != v1alpha1.EncapNever && pool.IPIPMode != "" {
		s.IPIPAddress = n.block.Addr()
	}
	for _, o := range l.nodes {
		if o.r != nil {
			s.VTEPs = append(s.VTEPs, VTEP{NodeIP: o.addr.Addr(), MAC: o.r.VXLANMAC(), Address: o.block.Addr()})
		}
	}
	return s
}

// remotes are the other nodes' blocks, as BGP would deliver them to n.
func (l *lab) remotes(n *labNode) Batch {
	var b Batch
	for _, o := range l.nodes {
		if o != n {
			b.Upserts = append(b.Upserts, RemoteRoute{Prefix: o.block, NextHops: []netip.Addr{o.addr.Addr()}})
		}
	}
	return b
}

// startAll starts every node with pool and hands it the full state.
func (l *lab) startAll(pool Pool) {
	l.t.Helper()
	for _, n := range l.nodes {
		l.start(n)
	}
	for _, n := range l.nodes {
		must(l.t, n.r.SetState(l.state(n, pool)))
		must(l.t, n.r.Apply(l.remotes(n)))
	}
	for _, n := range l.nodes {
		l.waitRoutes(n, len(l.nodes))
	}
}

// waitRoutes waits until n's Reconciler has made a pass and programmed
// want routes.
func (l *lab) waitRoutes(n *labNode, want int) {
	l.t.Helper()
	eventually(l.t, fmt.Sprintf("%s programs %d routes", n.name, want), func() string {
		st := n.r.Status()
		if st.Passes > 0 && st.RoutesProgrammed == want && st.RouteErrorCount == 0 {
			return ""
		}
		return fmt.Sprintf("%+v", st)
	})
}

// eventually waits (generously: the machine is shared) for cond to
// return "", failing with its last answer.
func eventually(t *testing.T, what string, cond func() string) time.Duration {
	t.Helper()
	start := time.Now()
	last := ""
	for time.Since(start) < 20*time.Second {
		if last = cond(); last == "" {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s: %s", what, last)
	return 0
}

// ping checks that from can reach to (a few tries: the first packets may
// wait for ARP).
func ping(t *testing.T, from *netns.NS, to netip.Addr) {
	t.Helper()
	var out []byte
	var err error
	for i := 0; i < 5; i++ {
		out, err = exec.Command("ip", "netns", "exec", from.Name, "ping", "-c", "1", "-W", "2", to.String()).CombinedOutput()
		if err == nil {
			return
		}
	}
	t.Fatalf("ping %s from %s: %v\n%s", to, from.Name, err, out)
}

// noPing checks that to is not reachable from from.
func noPing(t *testing.T, from *netns.NS, to netip.Addr) {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "exec", from.Name, "ping", "-c", "1", "-W", "1", to.String()).CombinedOutput(); err == nil {
		t.Fatalf("ping %s from %s succeeded, want failure:\n%s", to, from.Name, out)
	}
}

// txPackets returns the transmitted-packet counter of dev in ns.
func txPackets(t *testing.T, ns *netns.NS, dev string) uint64 {
	t.Helper()
	h, err := ns.Handle()
	must(t, err)
	defer h.Close()
	l, err := h.LinkByName(dev)
	must(t, err)
	return l.Attrs().Statistics.TxPackets
}

// kernelRoute is `ip route show PREFIX` in ns, trimmed.
func (l *lab) kernelRoute(ns *netns.NS, prefix netip.Prefix) string {
	l.t.Helper()
	return strings.TrimSpace(l.ip(ns, "route", "show", "exact", prefix.String()))
}

// listen starts a TCP server in ns on addr:port that reports the remote
// address of every connection it accepts.
func listen(t *testing.T, ns *netns.NS, addr string) <-chan string {
	t.Helper()
	var ln net.Listener
	must(t, ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", addr)
		return err
	}))
	t.Cleanup(func() { ln.Close() })
	peers := make(chan string, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			peers <- c.RemoteAddr().(*net.TCPAddr).IP.String()
			c.Close()
		}
	}()
	return peers
}

// dial connects from ns to addr.
func dial(ns *netns.NS, addr string) error {
	return ns.Do(func() error {
		c, err := net.DialTimeout("tcp4", addr, 3*time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}
