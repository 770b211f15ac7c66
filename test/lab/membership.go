package lab

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// apply adds joined nodes to the plan and drops nodes that left.
func (p *Plan) apply(joined []NodePlan, left []string) {
	for _, n := range joined {
		p.Nodes = append(p.Nodes, n)
		p.Racks[n.Rack-1].Nodes = append(p.Racks[n.Rack-1].Nodes, n.Name)
	}
	for _, name := range left {
		p.Nodes = slices.DeleteFunc(p.Nodes, func(n NodePlan) bool { return n.Name == name })
		for i := range p.Racks {
			p.Racks[i].Nodes = slices.DeleteFunc(p.Racks[i].Nodes, func(s string) bool { return s == name })
		}
	}
}

// nextNode plans a new node in a rack: the next free name and address.
func (p *Plan) nextNode(rack int) (NodePlan, error) {
	if rack < 1 || rack > len(p.Racks) {
		return NodePlan{}, fmt.Errorf("rack %d does not exist", rack)
	}
	maxIdx, used := 0, map[netip.Addr]bool{}
	for _, n := range p.Nodes {
		i, _ := strconv.Atoi(strings.TrimPrefix(n.Name, "node-"))
		maxIdx = max(maxIdx, i)
		used[n.Addr.Addr()] = true
	}
	r := p.Racks[rack-1]
	addr := netip.AddrFrom4([4]byte{10, 0, byte(rack), 10})
	for used[addr] {
		addr = addr.Next()
	}
	return NodePlan{Name: fmt.Sprintf("node-%d", maxIdx+1), Rack: rack, Addr: netip.PrefixFrom(addr, 24), Gateway: r.ToRAddr.Addr()}, nil
}

// JoinNode adds a node to a running lab, as a new machine joining the
// cluster: its namespace and link, its Node object, its agent. With BGP
// ToRs, the ToR learns it only after a reconfiguration, so JoinNode rewrites
// and reloads the ToR's configuration.
func (l *Lab) JoinNode(ctx context.Context, rack int) (NodePlan, error) {
	n, err := l.JoinNodeWithoutAgent(ctx, rack)
	if err != nil {
		return n, err
	}
	if err := l.startAgent(n.Name); err != nil {
		return n, err
	}
	return n, l.waitAgentsReady(ctx, []string{n.Name}, 2*time.Minute)
}

// JoinNodeWithoutAgent adds a machine registered as a Node (its namespace
// and link, its Node object) whose BGP speaker is not Rhizome's agent: the
// test runs its own there, as a compromised or misconfigured node would
// (for example gobgpd; rhizome-lab exec runs commands in its namespace).
// The other agents peer with it like with any node.
func (l *Lab) JoinNodeWithoutAgent(ctx context.Context, rack int) (NodePlan, error) {
	n, err := l.Plan.nextNode(rack)
	if err != nil {
		return n, err
	}
	l.Plan.apply([]NodePlan{n}, nil)
	l.State.Joined = append(l.State.Joined, n)
	if err := l.save(); err != nil {
		return n, err
	}
	if err := l.buildNode(ctx, n); err != nil {
		return n, err
	}
	if err := l.reloadToR(rack); err != nil {
		return n, err
	}
	c, err := clientsFor(l.State.Kubeconfig)
	if err != nil {
		return n, err
	}
	return n, l.registerNode(ctx, c, n)
}

// RemoveNode takes a node out of a running lab as a machine leaving the
// cluster: its pods, its agent, its Node object and its namespace go.
func (l *Lab) RemoveNode(ctx context.Context, name string) error {
	n, ok := l.Plan.Node(name)
	if !ok {
		return fmt.Errorf("no node %s", name)
	}
	c, err := clientsFor(l.State.Kubeconfig)
	if err != nil {
		return err
	}
	for _, p := range slices.Clone(l.State.Pods) {
		if p.Node == name {
			if err := l.DelPod(ctx, c, p); err != nil {
				return err
			}
		}
	}
	l.StopAgent(name, false)
	l.stopProcs(func(p Proc) bool { return p.Node == name }, 5*time.Second)
	if err := c.kube.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		return err
	}
	ns(l.nodeNS(name)).Delete()
	l.Plan.apply(nil, []string{name})
	l.State.Left = append(l.State.Left, name)
	if err := l.save(); err != nil {
		return err
	}
	return l.reloadToR(n.Rack)
}

// reloadToR rewrites a BGP ToR's configuration from the plan and makes the
// daemon read it.
func (l *Lab) reloadToR(rack int) error {
	if l.Plan.Opts.ToR != "bird" {
		// FRR ToRs are configured at start only; joins with FRR ToRs are
		// not supported by the lab yet, and --tor none needs nothing.
		if l.Plan.Opts.ToR == "frr" {
			return fmt.Errorf("adding or removing nodes behind FRR ToRs is not supported by the lab")
		}
		return nil
	}
	var r RackPlan
	for _, rp := range l.Plan.Racks {
		if rp.Index == rack {
			r = rp
		}
	}
	if err := l.writeBirdConf(r); err != nil {
		return err
	}
	out, err := l.torShow(rack, "configure")
	if err != nil {
		return fmt.Errorf("reloading BIRD on tor-%d: %w: %s", rack, err, out)
	}
	return nil
}
