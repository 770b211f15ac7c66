//go:build linux && privileged

package agent

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/internal/nsthread"
	"github.com/rhizome-net/rhizome/test/netns"
)

// TestDetectLocalNode finds the node's addresses on the real interfaces of
// a network namespace (veths: dummy may be missing): eth0 holds 10.0.0.7/24 and fd00::7/64, eth1
// 192.0.2.9/28.
func TestDetectLocalNode(t *testing.T) {
	ns := netns.New(t, "node")
	for _, args := range [][]string{
		{"link", "add", "eth0", "mtu", "9000", "type", "veth", "peer", "name", "peer0"}, {"link", "set", "eth0", "up"},
		{"addr", "add", "10.0.0.7/24", "dev", "eth0"}, {"addr", "add", "fd00::7/64", "dev", "eth0", "nodad"},
		{"link", "add", "eth1", "type", "veth", "peer", "name", "peer1"}, {"link", "set", "eth1", "up"},
		{"addr", "add", "192.0.2.9/28", "dev", "eth1"},
	} {
		if out, err := ns.Exec(context.Background(), "ip", args...); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	node := func(ips ...string) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{"rack": "a"}}}
		for _, ip := range ips {
			n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip})
		}
		return n
	}
	cases := []struct {
		name      string
		node      *corev1.Node
		nodeIP    string
		iface     string
		want      string // "v4 v6 interface mtu"
		wantError string
	}{
		{name: "InternalIP on eth0", node: node("10.0.0.7"), want: "10.0.0.7/24 invalid Prefix eth0 9000"},
		{name: "dual stack", node: node("fd00::7", "10.0.0.7"), want: "10.0.0.7/24 fd00::7/64 eth0 9000"},
		// Before internal/nodeaddr the mapped address was taken as IPv6,
		// and the agent found no IPv4 InternalIP at all.
		{name: "IPv4-mapped InternalIP", node: node("::ffff:10.0.0.7"), want: "10.0.0.7/24 invalid Prefix eth0 9000"},
		{name: "--node-ip wins", node: node("10.0.0.7"), nodeIP: "192.0.2.9", want: "192.0.2.9/28 invalid Prefix eth1 1500"},
		{name: "--interface must hold the address", node: node("10.0.0.7"), iface: "eth1",
			wantError: "node address 10.0.0.7 is not configured on interface eth1"},
		{name: "--interface that holds it", node: node("10.0.0.7"), iface: "eth0", want: "10.0.0.7/24 invalid Prefix eth0 9000"},
		{name: "no InternalIP", node: node(), wantError: "node n1 has no IPv4 InternalIP in its status; set --node-ip"},
		{name: "InternalIP of another host", node: node("10.0.0.8"), wantError: "node address 10.0.0.8 is not configured on any interface"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.NodeName, cfg.Interface = "n1", tc.iface
			if tc.nodeIP != "" {
				cfg.NodeIP = netip.MustParseAddr(tc.nodeIP)
			}
			var ln *localNode
			err := nsthread.Do(ns.Path(), func() error {
				var err error
				ln, err = detectLocalNode(tc.node, cfg)
				return err
			})
			if tc.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantError) {
					t.Fatalf("error %v, want %q", err, tc.wantError)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Join([]string{ln.IPv4.String(), ln.IPv6.String(), ln.Interface, strconv.Itoa(ln.MTU)}, " ")
			if got != tc.want || ln.Name != "n1" || ln.Labels["rack"] != "a" {
				t.Errorf("got %q (%+v), want %q", got, ln, tc.want)
			}
		})
	}
}
