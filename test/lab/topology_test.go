package lab

import (
	"strings"
	"testing"
)

func TestNewPlan(t *testing.T) {
	p, err := NewPlan(Options{Nodes: 3, Racks: 2, ToR: "bird", Mode: "mesh", Encap: "vxlan", Pods: 2})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name, addr, gw string
		rack           int
	}{
		{"node-1", "10.0.1.10/24", "10.0.1.1", 1},
		{"node-2", "10.0.1.11/24", "10.0.1.1", 1},
		{"node-3", "10.0.2.10/24", "10.0.2.1", 2},
	}
	for i, w := range want {
		n := p.Nodes[i]
		if n.Name != w.name || n.Addr.String() != w.addr || n.Gateway.String() != w.gw || n.Rack != w.rack {
			t.Errorf("node %d = %+v, want %+v", i, n, w)
		}
	}
	if p.Racks[1].ToRAS != 65002 || p.Racks[1].SpineAddr.String() != "10.0.0.2/24" {
		t.Errorf("rack 2 = %+v", p.Racks[1])
	}
	if p.EncapMode() != "CrossSubnet" {
		t.Errorf("encap mode %s with two racks", p.EncapMode())
	}
	one, _ := NewPlan(Options{Nodes: 5, Racks: 1, ToR: "none", Mode: "rr", Encap: "vxlan"})
	if one.EncapMode() != "Always" || !one.Nodes[0].RouteReflector || !one.Nodes[4].RouteReflector || one.Nodes[2].RouteReflector {
		t.Errorf("one rack rr plan: mode %s, nodes %+v", one.EncapMode(), one.Nodes)
	}
	uneven, _ := NewPlan(Options{Nodes: 7, Racks: 3, ToR: "frr", Mode: "mesh", Encap: "none"})
	counts := []int{len(uneven.Racks[0].Nodes), len(uneven.Racks[1].Nodes), len(uneven.Racks[2].Nodes)}
	if counts[0]+counts[1]+counts[2] != 7 || counts[2] == 0 {
		t.Errorf("7 nodes in 3 racks: %v", counts)
	}
}

func TestOptionsValidate(t *testing.T) {
	bad := []struct {
		o    Options
		want string
	}{
		{Options{Nodes: 0, Racks: 1, ToR: "bird", Mode: "mesh", Encap: "none"}, "--nodes"},
		{Options{Nodes: 2, Racks: 3, ToR: "bird", Mode: "mesh", Encap: "none"}, "--racks"},
		{Options{Nodes: 2, Racks: 1, ToR: "quagga", Mode: "mesh", Encap: "none"}, "--tor"},
		{Options{Nodes: 2, Racks: 1, ToR: "bird", Mode: "star", Encap: "none"}, "--mode"},
		{Options{Nodes: 2, Racks: 1, ToR: "bird", Mode: "mesh", Encap: "gre"}, "--encap"},
	}
	for _, b := range bad {
		if err := b.o.Validate(); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("Validate(%+v) = %v, want an error about %s", b.o, err, b.want)
		}
	}
}
