//go:build e2e

package e2e

import (
	"strings"
	"testing"

	"github.com/rhizome-net/rhizome/test/lab"
)

// TestMeshConnectivity: three nodes on one subnet in full mesh, no
// encapsulation. Every pod reaches every pod; each node routes the others'
// blocks directly to the owning node and blackholes its own.
func TestMeshConnectivity(t *testing.T) {
	l := up(t, lab.Options{Nodes: 3, Racks: 1, ToR: "none", Mode: "mesh", Encap: "none", Pods: 2})
	requireMatrix(t, l)
	requireDoctorClean(t, l)
	for _, n := range l.Plan.Nodes {
		for _, o := range l.Plan.Nodes {
			r := routeTo(t, l, n.Name, blockOf(t, l, o.Name))
			switch {
			case n.Name == o.Name && r != "blackhole":
				t.Errorf("%s: own block route %q, want a blackhole", n.Name, r)
			case n.Name != o.Name && !strings.Contains(r, "via "+o.Addr.Addr().String()+" dev eth0"):
				t.Errorf("%s: route to %s's block = %q, want direct via %s", n.Name, o.Name, r, o.Addr.Addr())
			}
		}
	}
}

// TestRouteReflectorConnectivity: five nodes, mesh off, two route
// reflectors (node-1, node-5). Clients peer only with the reflectors, the
// reflectors with everyone; every pod still reaches every pod.
func TestRouteReflectorConnectivity(t *testing.T) {
	l := up(t, lab.Options{Nodes: 5, Racks: 1, ToR: "none", Mode: "rr", Encap: "vxlan", Pods: 1})
	requireMatrix(t, l)
	out, err := l.Exec(ctxFor(t, 30e9), "node-3", "gobgp", "neighbor")
	if err != nil {
		t.Fatal(err)
	}
	neighbors := strings.Count(string(out), "Establ")
	if neighbors != 2 || !strings.Contains(string(out), "10.0.1.10") || !strings.Contains(string(out), "10.0.1.14") {
		t.Fatalf("client node-3 should peer only with the two reflectors:\n%s", out)
	}
	out, err = l.Exec(ctxFor(t, 30e9), "node-1", "gobgp", "neighbor")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(out), "Establ"); got != 4 {
		t.Fatalf("reflector node-1 should peer with all 4 other nodes, has %d:\n%s", got, out)
	}
}

// TestToRCrossSubnetVXLAN: four nodes in two racks behind FRR ToRs, VXLAN
// CrossSubnet. Inside a rack routes go directly over eth0; between racks
// through the VXLAN device. Every pod reaches every pod.
func TestToRCrossSubnetVXLAN(t *testing.T) {
	l := up(t, lab.Options{Nodes: 4, Racks: 2, ToR: "frr", Mode: "mesh", Encap: "vxlan", Pods: 1})
	requireMatrix(t, l)
	requireDoctorClean(t, l)
	// node-1, node-2 in rack 1; node-3, node-4 in rack 2.
	if r := routeTo(t, l, "node-1", blockOf(t, l, "node-2")); !strings.Contains(r, "dev eth0") {
		t.Errorf("same rack: node-1 → node-2's block = %q, want direct over eth0", r)
	}
	if r := routeTo(t, l, "node-1", blockOf(t, l, "node-3")); !strings.Contains(r, "dev vxlan.rhizome") {
		t.Errorf("across racks: node-1 → node-3's block = %q, want through vxlan.rhizome", r)
	}
	out, err := l.Exec(ctxFor(t, 30e9), "tor-1", "vtysh", "--vty_socket", l.Dir+"/tors/1/run", "-c", "show bgp summary")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("tor-1:\n%s", out)
}

// TestToRNativeRouting: three nodes in two racks behind BIRD ToRs, no
// encapsulation at all: traffic between racks is routed by the ToRs, which
// learned the pod blocks from the nodes over eBGP. The nodes reach the
// other rack's next hops through their ToR (recursive next hop).
func TestToRNativeRouting(t *testing.T) {
	l := up(t, lab.Options{Nodes: 3, Racks: 2, ToR: "bird", Mode: "mesh", Encap: "none", Pods: 2})
	requireMatrix(t, l)
	out, err := l.Exec(ctxFor(t, 30e9), "tor-1", "ip", "route", "show", "proto", "bird")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), blockOf(t, l, "node-3")) {
		t.Fatalf("tor-1 has no route to node-3's block (rack 2):\n%s", out)
	}
	if r := routeTo(t, l, "node-1", blockOf(t, l, "node-3")); !strings.Contains(r, "via 10.0.1.1") {
		t.Errorf("node-1 → node-3's block (other rack, native) = %q, want via its ToR 10.0.1.1", r)
	}
}
