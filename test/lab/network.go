package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/rhizome-net/rhizome/test/netns"
)

// DefaultPrefix starts the names of the lab's network namespaces.
const DefaultPrefix = "rzl-"

// Namespace names of the plan's parts.
func (l *Lab) spineNS() string           { return l.Prefix + "spine" }
func (l *Lab) torNS(rack int) string     { return fmt.Sprintf("%stor-%d", l.Prefix, rack) }
func (l *Lab) nodeNS(name string) string { return l.Prefix + name }
func (l *Lab) podNS(node string, i int) string {
	return fmt.Sprintf("%s%s-pod-%d", l.Prefix, node, i)
}

// ns returns a handle for one of the lab's namespaces by full name.
func ns(name string) *netns.NS { return &netns.NS{Name: name} }

// buildNetwork creates the spine, the ToRs with their rack bridges, and the
// nodes, wired and addressed per the plan.
func (l *Lab) buildNetwork(ctx context.Context) error {
	spine, err := netns.Create(l.spineNS())
	if err != nil {
		return err
	}
	if err := netns.Bridge(spine, "br0"); err != nil {
		return err
	}
	for _, r := range l.Plan.Racks {
		if err := l.buildRack(ctx, spine, r); err != nil {
			return err
		}
	}
	for _, n := range l.Plan.Nodes {
		if err := l.buildNode(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) buildRack(ctx context.Context, spine *netns.NS, r RackPlan) error {
	tor, err := netns.Create(l.torNS(r.Index))
	if err != nil {
		return err
	}
	port := fmt.Sprintf("t%d", r.Index)
	if err := netns.Veth(spine, port, tor, "spine0"); err != nil {
		return err
	}
	if err := netns.SetMaster(spine, port, "br0"); err != nil {
		return err
	}
	if err := netns.AddAddr(tor, "spine0", r.SpineAddr); err != nil {
		return err
	}
	if err := netns.Bridge(tor, "br0"); err != nil {
		return err
	}
	if err := netns.AddAddr(tor, "br0", r.ToRAddr); err != nil {
		return err
	}
	for k, v := range map[string]string{
		"net.ipv4.ip_forward":             "1",
		"net.ipv4.conf.all.rp_filter":     "0",
		"net.ipv4.conf.default.rp_filter": "0",
	} {
		if err := netns.Sysctl(tor, k, v); err != nil {
			return err
		}
	}
	if l.Plan.Opts.ToR == "none" {
		// Plain routers: static routes to the other racks over the spine.
		for _, o := range l.Plan.Racks {
			if o.Index == r.Index {
				continue
			}
			if err := netns.AddRoute(tor, o.Subnet, o.SpineAddr.Addr()); err != nil {
				return err
			}
		}
	}
	return nil
}

func (l *Lab) buildNode(ctx context.Context, n NodePlan) error {
	node, err := netns.Create(l.nodeNS(n.Name))
	if err != nil {
		return err
	}
	tor := ns(l.torNS(n.Rack))
	port := "n" + strings.TrimPrefix(n.Name, "node-")
	if err := netns.Veth(tor, port, node, "eth0"); err != nil {
		return err
	}
	if err := netns.SetMaster(tor, port, "br0"); err != nil {
		return err
	}
	if err := netns.AddAddr(node, "eth0", n.Addr); err != nil {
		return err
	}
	if err := netns.AddRoute(node, netip.MustParsePrefix("0.0.0.0/0"), n.Gateway); err != nil {
		return err
	}
	for k, v := range map[string]string{
		"net.ipv4.ip_forward":          "1",
		"net.ipv6.conf.all.forwarding": "1",
	} {
		if err := netns.Sysctl(node, k, v); err != nil {
			return err
		}
	}
	return os.MkdirAll(l.nodeDir(n.Name), 0o755)
}

// removeNamespaces deletes every namespace with the lab's prefix (killing
// what runs inside: the agents, routers and pods the lab started there).
func removeNamespaces(prefix string) []string {
	entries, _ := os.ReadDir(netns.RunDir)
	var removed []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			if ns(e.Name()).Delete() == nil {
				removed = append(removed, e.Name())
			}
		}
	}
	return removed
}
