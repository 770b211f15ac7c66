package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/ipam/blockmath"
	"github.com/rhizome-net/rhizome/test/bench/benchproc"
	"github.com/rhizome-net/rhizome/test/lab"
	"github.com/rhizome-net/rhizome/test/netns"
)

// The client agent (rrbench -client; issue 19 item 3): one real
// rhizome-agent as an ordinary client of the reflector under test, node
// "ag" of the cluster in a namespace of its own, which learns every
// feeder client's routes through the reflector and installs them into its
// namespace's kernel, as every node of a cluster that size does.
//
//	rzr<pid>-rr  reflector  rr1 ==veth== ag0 172.20.255.254/16  agent  rzr<pid>-ag
//	             route 172.20.255.254/32 dev rr1          route 172.30.0.2/32 dev ag0
//
// Its address is in the clients' subnet, so their next hops are on its link
// (as the nodes of one L2 segment are), and outside the feeders' addresses
// (maxClients). Its block is the pool's last, which no feeder has.
const (
	agentNode  = "ag"
	agentAddr  = "172.20.255.254"
	agentBits  = 16
	agentBlock = 1<<(blockBits-12) - 1 // the last of the pool's 16384 blocks
)

// clientAgent is the running client agent of one run.
type clientAgent struct {
	ns    *netns.NS
	agent *benchproc.Proc
	stopP context.CancelFunc
	// start is its pass histogram when the measured phases begin.
	start passStats
}

// wantRoutes is how many routes the client agent must have installed in
// its kernel once every feeder announces: each feeder's block and
// borrowed /32.
func wantRoutes(n int) int {
	c := 0
	for i := range n {
		c += len(announced(i, n))
	}
	return c
}

// addClientAgent writes the client agent's Node and block into the API
// server (once per invocation; the agent publishes its RhizomeNode).
func (c *cluster) addClientAgent(ctx context.Context) error {
	if err := c.node(ctx, agentNode, netip.MustParseAddr(agentAddr), nil); err != nil {
		return err
	}
	b := block(agentBlock)
	_, err := c.rz.RhizomeV1alpha1().IPAMBlocks().Create(ctx, &v1alpha1.IPAMBlock{
		ObjectMeta: metav1.ObjectMeta{Name: blockmath.Name(b)},
		Spec:       v1alpha1.IPAMBlockSpec{CIDR: b.String(), Affinity: agentNode},
	}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		err = nil
	}
	return err
}

// startClientAgent wires the client agent's namespace to the reflector's
// and starts the agent. Its namespace, and with it every route it
// installed, goes in stop.
func (rn *runner) startClientAgent(rrNS *netns.NS, dir string) (_ *clientAgent, err error) {
	ns, err := netns.Create(netns.Name("rzr", "ag"))
	if err != nil {
		return nil, err
	}
	ca := &clientAgent{ns: ns}
	defer func() {
		if err != nil {
			ca.stop()
		}
	}()
	if err := netns.Veth(rrNS, "rr1", ns, "ag0"); err != nil {
		return nil, err
	}
	if err := netns.AddAddr(ns, "ag0", netip.PrefixFrom(netip.MustParseAddr(agentAddr), agentBits)); err != nil {
		return nil, err
	}
	for _, cmd := range [][]string{
		{"-n", ns.Name, "route", "add", rrAddr + "/32", "dev", "ag0"},
		{"-n", rrNS.Name, "route", "add", agentAddr + "/32", "dev", "rr1"},
	} {
		if out, err := exec.Command("ip", cmd...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ip %s: %w: %s", strings.Join(cmd, " "), err, out)
		}
	}
	pctx, cancel := context.WithCancel(context.Background())
	ca.stopP = cancel
	go func() {
		if err := lab.ServeAPIProxy(pctx, ns.Name, rn.cluster.port); err != nil && pctx.Err() == nil {
			fmt.Fprintln(os.Stderr, "rrbench: client agent's API proxy:", err)
		}
	}()
	ca.agent, err = benchproc.Start("client-agent", filepath.Join(dir, "client-agent.log"), "ip", "netns", "exec", ns.Name, rn.rhizomeBin,
		"--node-name", agentNode,
		"--kubeconfig", rn.cluster.cp.Kubeconfig,
		"--namespace", agentNamespace,
		"--agent-socket", filepath.Join(dir, "client-agent.sock"),
		"--health-address", healthAddr,
		"--gobgp-api-address", "127.0.0.1:50051",
		"--log-level", "info")
	if err != nil {
		return nil, err
	}
	return ca, nil
}

// learned counts the routes through a gateway in `ip route` output: the
// routes the agent learned from its peers, not its own block's blackhole.
func learned(out string) int {
	c := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, " via ") {
			c++
		}
	}
	return c
}

// kernelRoutes counts the learned routes of the pool in the agent's
// namespace, from its kernel.
func (ca *clientAgent) kernelRoutes() (int, error) {
	out, err := exec.Command("ip", "-n", ca.ns.Name, "-4", "route", "show", "root", poolCIDR).Output()
	if err != nil {
		return 0, fmt.Errorf("ip route: %w", err)
	}
	return learned(string(out)), nil
}

// measure waits until the agent has installed want routes in its kernel
// and is idle, then fills in res's client figures.
func (ca *clientAgent) measure(res *result, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if !ca.agent.Alive() {
			return fmt.Errorf("the client agent exited")
		}
		have, err := ca.kernelRoutes()
		if err == nil && have >= want {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the client agent has %d of %d routes in its kernel after %s (last error: %v)", have, want, timeout, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	pids := benchproc.PIDs(ca.agent)
	benchproc.WaitIdle(pids, time.Minute)
	s, err := readPassStats(ca.ns)
	if err != nil {
		return err
	}
	routes, err := ca.kernelRoutes()
	if err != nil {
		return err
	}
	for _, pid := range pids {
		res.ClientRSS += float64(benchproc.VmHWM(pid)) / 1024
		res.ClientRSSIdle += float64(benchproc.VmRSS(pid)) / 1024
	}
	res.ClientRoutes = int64(routes)
	res.ClientPasses, res.ClientPassMean, res.ClientPassMax = s.figures()
	if after, err := s.since(ca.start); err != nil {
		fmt.Fprintf(os.Stderr, "rrbench: client agent's passes after the start: %v\n", err)
	} else {
		res.ClientPassesAfterStart, res.ClientPassAfterStartMean, res.ClientPassAfterStartMax = after.figures()
	}
	return nil
}

func (ca *clientAgent) stop() {
	if ca.agent != nil {
		ca.agent.Stop(10 * time.Second)
	}
	if ca.stopP != nil {
		ca.stopP()
	}
	ca.ns.Delete()
}
