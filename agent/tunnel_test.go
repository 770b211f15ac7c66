package agent

import (
	"net/netip"
	"testing"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/ipam"
)

func TestTunnelNeedFor(t *testing.T) {
	p := func(cidr string, vxlan, ipip v1alpha1.EncapMode, allocatable bool) ipam.Pool {
		return ipam.Pool{CIDR: netip.MustParsePrefix(cidr), VXLANMode: vxlan, IPIPMode: ipip, Allocatable: allocatable}
	}
	const a, b = "10.244.0.0/16", "10.245.0.0/16"
	never, always, cross := v1alpha1.EncapNever, v1alpha1.EncapAlways, v1alpha1.EncapCrossSubnet
	cases := []struct {
		name  string
		pools []ipam.Pool
		// pods are the pools in which this node's pods hold addresses.
		pods []string
		want tunnelNeed
		// asked: podsIn may be called (it walks the allocations).
		asked bool
	}{
		{name: "no pool", want: tunnelRelease},
		{name: "a pool without VXLAN", pools: []ipam.Pool{p(a, never, always, true)}, want: tunnelRelease},
		{name: "an enabled VXLAN pool, no pod yet", pools: []ipam.Pool{p(a, cross, never, true)}, want: tunnelHold},
		{name: "an enabled VXLAN pool beside a disabled one with pods", pools: []ipam.Pool{p(a, always, never, false), p(b, cross, never, true)}, pods: []string{a}, want: tunnelHold},
		{name: "the only VXLAN pool disabled, a pod of this node in it", pools: []ipam.Pool{p(a, cross, never, false)}, pods: []string{a}, want: tunnelKeep, asked: true},
		{name: "the only VXLAN pool disabled, this node's pods elsewhere", pools: []ipam.Pool{p(a, cross, never, false), p(b, never, never, true)}, pods: []string{b}, want: tunnelRelease, asked: true},
		{name: "the only VXLAN pool disabled, no pod left (the uninstall)", pools: []ipam.Pool{p(a, cross, never, false)}, want: tunnelRelease, asked: true},
		{name: "a disabled pool without VXLAN holds pods: not a reason", pools: []ipam.Pool{p(a, never, never, false)}, pods: []string{a}, want: tunnelRelease},
	}
	for _, c := range cases {
		asked := false
		podsIn := func(prefixes []netip.Prefix) bool {
			asked = true
			for _, pod := range c.pods {
				for _, q := range prefixes {
					if q == netip.MustParsePrefix(pod) {
						return true
					}
				}
			}
			return false
		}
		if got := tunnelNeedFor(c.pools, tunnelVXLAN, podsIn); got != c.want || asked != c.asked {
			t.Errorf("%s: need %d (podsIn asked: %v), want %d (%v)", c.name, got, asked, c.want, c.asked)
		}
	}
}

// TestPassTunnelAddressDrains: a pool that takes no new addresses lets go
// of the tunnel addresses in it once no pod of the node uses it, so that its
// addressesInUse reaches 0 and it can be deleted (the uninstall), and moves
// them to a pool that takes new ones (a migration).
func TestPassTunnelAddressDrains(t *testing.T) {
	w := newWorld(t, withMorePools("10.245.0.0/16"))
	const second = "10.245.0.0/16"
	w.setPool(v1alpha1.EncapCrossSubnet, v1alpha1.EncapNever, false)
	w.pass() // the tunnel takes the node's first address, 10.244.0.0
	pod := w.allocate("pod0.eth0")
	if pod != netip.MustParseAddr("10.244.0.1") {
		t.Fatalf("the pod got %v", pod)
	}
	vxPool := "pool 10.244.0.0/16 vxlan=CrossSubnet ipip=Never"
	plain2 := "pool 10.245.0.0/16 vxlan=Never ipip=Never"
	tun0 := []string{"tunnel vxlan 10.244.0.0", "ipam rhizome-tunnel.vxlan.n1 10.244.0.0", "rhizomenode ipv4=10.0.0.1/24 vtep=10.244.0.0 mac"}
	disable := func(w *world) {
		w.updatePool(ipam.Pool{Name: "default", CIDR: w.pool, VXLANMode: v1alpha1.EncapCrossSubnet, IPIPMode: v1alpha1.EncapNever})
	}
	base := []string{advBlock, ownBlock, blackhole, vxPool, plain2}
	play(t, w, []step{
		{name: "VXLAN pool, a pod of this node in it", want: with(base, tun0...)},
		{name: "the pool disabled while the pod runs: the tunnel address stays (the pod is still routed through it)",
			do: disable, want: with(base, tun0...)},
		{name: "a restart meanwhile: the new process keeps the address its predecessor held, allocates none",
			do: func(w *world) { w.restart() }, want: with(base, tun0...)},
		{name: "the pod goes: the tunnel address is released and unpublished, the pool holds no address",
			do: func(w *world) {
				if err := w.ipam.Release(w.ctx, "pod0.eth0"); err != nil {
					t.Fatal(err)
				}
			},
			want: with(base, rznPlain),
			check: func(t *testing.T, w *world) {
				if got := w.ipam.Allocations(); len(got) != 0 {
					t.Errorf("allocations left in the drained pool: %v", got)
				}
			}},
		{name: "enabled again: a tunnel address again",
			do:   func(w *world) { w.setPool(v1alpha1.EncapCrossSubnet, v1alpha1.EncapNever, false) },
			want: with(base, tun0...)},
		// A migration: a new VXLAN pool, the old one disabled with a pod
		// still in it. The tunnel address moves to the new pool at once
		// (the VTEP serves every pool), so the old pool can drain.
		{name: "a pod in the old pool, a new VXLAN pool, the old one disabled: the tunnel address moves to the new pool",
			do: func(w *world) {
				w.allocate("pod1.eth0")
				w.updatePool(ipam.Pool{Name: second, CIDR: netip.MustParsePrefix(second), Allocatable: true, VXLANMode: v1alpha1.EncapAlways, IPIPMode: v1alpha1.EncapNever})
				disable(w)
			},
			want: []string{advBlock, "advertise 10.245.0.0/26", ownBlock, "block 10.245.0.0/26", blackhole, "kernel blackhole 10.245.0.0/26",
				vxPool, "pool 10.245.0.0/16 vxlan=Always ipip=Never",
				"tunnel vxlan 10.245.0.0", "ipam rhizome-tunnel.vxlan.n1 10.245.0.0", "rhizomenode ipv4=10.0.0.1/24 vtep=10.245.0.0 mac"}},
	})
}
