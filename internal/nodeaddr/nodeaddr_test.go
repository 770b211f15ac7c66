package nodeaddr

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

func node(addrs ...string) *corev1.Node {
	n := &corev1.Node{}
	for i := 0; i+1 < len(addrs); i += 2 {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeAddressType(addrs[i]), Address: addrs[i+1]})
	}
	return n
}

func rzn(v4, v6 string) *v1alpha1.RhizomeNode {
	return &v1alpha1.RhizomeNode{Spec: v1alpha1.RhizomeNodeSpec{IPv4Address: v4, IPv6Address: v6}}
}

const internal = string(corev1.NodeInternalIP)

func TestOf(t *testing.T) {
	cases := []struct {
		name           string
		node           *corev1.Node
		rz             *v1alpha1.RhizomeNode
		wantV4, wantV6 string
	}{
		{"first InternalIP of each family", node(internal, "10.0.1.2", "ExternalIP", "203.0.113.9", internal, "fd00::2", internal, "10.0.1.3", internal, "fd00::3"), nil, "10.0.1.2", "fd00::2"},
		{"only InternalIPs count", node("ExternalIP", "203.0.113.9", "Hostname", "n1"), nil, "", ""},
		{"no node, nothing published", nil, nil, "", ""},
		// The agent and bgp/topology used to disagree here: one took the
		// mapped address as IPv6, the other as IPv4.
		{"IPv4-mapped InternalIP is IPv4", node(internal, "::ffff:10.0.1.2"), nil, "10.0.1.2", ""},
		{"IPv4-mapped after a real IPv6", node(internal, "fd00::2", internal, "::ffff:10.0.1.2"), nil, "10.0.1.2", "fd00::2"},
		{"published addresses win, per family", node(internal, "10.0.1.2", internal, "fd00::2"), rzn("10.0.9.9/24", ""), "10.0.9.9", "fd00::2"},
		{"published IPv6 wins", node(internal, "10.0.1.2", internal, "fd00::2"), rzn("", "fd00::9/64"), "10.0.1.2", "fd00::9"},
		{"published bare address", node(), rzn("10.0.9.9", "fd00::9"), "10.0.9.9", "fd00::9"},
		{"published IPv4-mapped is IPv4", node(internal, "10.0.1.2"), rzn("::ffff:10.0.9.9/120", ""), "10.0.9.9", ""},
		// Hostile or broken objects: fall back to the next source.
		{"published IPv6 in the IPv4 field", node(internal, "10.0.1.2"), rzn("fd00::9/64", ""), "10.0.1.2", ""},
		{"published IPv4 in the IPv6 field", node(internal, "fd00::2"), rzn("", "10.0.9.9/24"), "", "fd00::2"},
		{"published garbage", node(internal, "10.0.1.2"), rzn("ten.zero/24", "::zz"), "10.0.1.2", ""},
		{"published unspecified", node(internal, "10.0.1.2"), rzn("0.0.0.0/0", "::/0"), "10.0.1.2", ""},
		{"published multicast", node(internal, "10.0.1.2", internal, "fd00::2"), rzn("224.0.0.5/32", "ff02::2/128"), "10.0.1.2", "fd00::2"},
		{"loopback kept (single-host tests)", node(internal, "127.0.0.84"), nil, "127.0.0.84", ""},
		{"InternalIP unusable, next one taken", node(internal, "0.0.0.0", internal, "224.0.0.5", internal, "169.254.1.1", internal, "fe80::1", internal, "10.0.1.2"), nil, "10.0.1.2", ""},
		{"InternalIP with a zone", node(internal, "fd00::2%eth0", internal, "fd00::3"), nil, "", "fd00::3"},
		{"InternalIP garbage", node(internal, "node-1", internal, "10.0.1.300", internal, "10.0.1.2"), nil, "10.0.1.2", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v4, v6 := Of(c.node, c.rz)
			if got, want := str(v4), c.wantV4; got != want {
				t.Errorf("IPv4 = %q, want %q", got, want)
			}
			if got, want := str(v6), c.wantV6; got != want {
				t.Errorf("IPv6 = %q, want %q", got, want)
			}
			if v4.IsValid() && !v4.Is4() || v6.IsValid() && (!v6.Is6() || v6.Is4In6()) {
				t.Errorf("wrong family: %v, %v", v4, v6)
			}
		})
	}
}

func str(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
