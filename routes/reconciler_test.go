package routes

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

type fakes struct {
	table *FakeTable
	devs  *FakeDevices
	nat   *FakeNAT
	sys   *FakeSysctls
}

func newTestReconciler(t *testing.T) (*Reconciler, *fakes) {
	t.Helper()
	f := &fakes{
		table: NewFakeTable(t),
		devs:  &FakeDevices{UnderlayIndex: underlayIdx, UnderlayMTU: 1500},
		nat:   &FakeNAT{},
		sys: &FakeSysctls{Values: map[string]string{
			"net/ipv4/ip_forward": "0", "net/ipv4/conf/all/rp_filter": "1", "net/ipv4/conf/eth0/rp_filter": "1",
			"net/ipv4/conf/vxlan.rhizome/rp_filter": "0", "net/ipv4/conf/tunl0/rp_filter": "0",
			"net/ipv6/conf/all/forwarding": "0",
		}},
	}
	r, err := NewWithKernel(Config{Interface: "eth0", Address: pfx("192.168.1.10/24"), Registerer: prometheus.NewRegistry()},
		Kernel{Table: f.table, Devices: f.devs, NAT: f.nat, Sysctls: f.sys})
	if err != nil {
		t.Fatal(err)
	}
	return r, f
}

// passTwice runs a full pass, then another that must write nothing
// (idempotency).
func passTwice(t *testing.T, r *Reconciler, f *fakes) {
	t.Helper()
	if err := r.pass(); err != nil {
		t.Fatalf("pass: %v", err)
	}
	before := f.table.Writes()
	if err := r.pass(); err != nil {
		t.Fatalf("second pass: %v", err)
	}
	if w := f.table.Writes() - before; w != 0 {
		t.Errorf("second pass wrote %d routes, want 0 (not idempotent)", w)
	}
}

func routeStrings(rs []Route) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.String()
	}
	return out
}

func wantRoutes(t *testing.T, f *fakes, want ...string) {
	t.Helper()
	got := routeStrings(f.table.Routes())
	slices.Sort(got)
	want = slices.Clone(want)
	slices.Sort(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("kernel routes:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

var (
	node11 = addr("192.168.1.11") // on our subnet
	node12 = addr("192.168.1.12")
	node21 = addr("192.168.2.21") // on another subnet
)

func baseState() State {
	return State{
		Blocks: []OwnBlock{{Prefix: pfx("10.244.0.0/26"), Lent: map[netip.Addr]netip.Addr{addr("10.244.0.9"): node11}}},
		Pools: []Pool{
			{CIDR: pfx("10.244.0.0/16"), VXLANMode: v1alpha1.EncapCrossSubnet, IPIPMode: v1alpha1.EncapNever, NATOutgoing: true},
			{CIDR: pfx("10.245.0.0/16"), IPIPMode: v1alpha1.EncapNever, VXLANMode: v1alpha1.EncapNever},
		},
		VTEPs: []VTEP{
			{NodeIP: node11, MAC: mac1, Address: addr("10.244.1.0")},
			{NodeIP: node21, MAC: mac1, Address: addr("10.244.2.0")},
			{NodeIP: addr("192.168.1.10"), MAC: mac1, Address: addr("10.244.0.0")}, // ourselves
		},
		VXLANAddress: addr("10.244.0.0"),
	}
}

func TestReconcilerSequence(t *testing.T) {
	r, f := newTestReconciler(t)
	// A previous run left routes of ours; one is still wanted, one is not.
	f.table.SetOurs(Route{Dst: pfx("10.244.0.0/26"), Kind: Blackhole})
	f.table.SetOurs(Route{Dst: pfx("10.99.0.0/24"), NextHops: []NextHop{{Gateway: node12, LinkIndex: underlayIdx}}})
	// Someone else's route for a prefix we will want.
	foreign := Route{Dst: pfx("10.245.7.0/26"), NextHops: []NextHop{{Gateway: node12, LinkIndex: underlayIdx}}}
	f.table.AddForeign(foreign)

	// Before SetState: adopt, write nothing, delete nothing.
	passTwice(t, r, f)
	if f.table.Writes() != 0 {
		t.Errorf("pass before SetState wrote %d routes", f.table.Writes())
	}
	if err := r.Apply(Batch{Upserts: []RemoteRoute{{Prefix: pfx("10.244.1.0/26"), NextHops: []netip.Addr{node11}}}}); err != nil {
		t.Fatal(err)
	}
	if f.table.Writes() != 0 {
		t.Errorf("Apply before the first state wrote routes")
	}

	steps := []struct {
		name string
		do   func(t *testing.T)
		want []string
	}{{
		name: "state set: blackhole, lent address, VXLAN cross-subnet route; stale route kept",
		do: func(t *testing.T) {
			if err := r.SetState(baseState()); err != nil {
				t.Fatal(err)
			}
		},
		want: []string{
			"blackhole 10.244.0.0/26",
			"10.244.0.9/32 via 192.168.1.11 dev#2",
			"10.244.1.0/26 via 192.168.1.11 dev#2",
			"10.99.0.0/24 via 192.168.1.12 dev#2",
		},
	}, {
		name: "BGP batch: VXLAN across subnets, ECMP, a route on a foreign key, a plain pool",
		do: func(t *testing.T) {
			err := r.Apply(Batch{Upserts: []RemoteRoute{
				{Prefix: pfx("10.244.2.0/26"), NextHops: []netip.Addr{node21}},
				{Prefix: pfx("10.245.1.0/26"), NextHops: []netip.Addr{node12, node11}},
				{Prefix: pfx("10.245.7.0/26"), NextHops: []netip.Addr{node11}},
				{Prefix: pfx("10.244.0.0/26"), NextHops: []netip.Addr{node11}}, // our own block: ignored
			}})
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := f.table.Foreign(foreign.Dst); !ok {
				t.Error("the foreign route was overwritten")
			}
		},
		want: []string{
			"blackhole 10.244.0.0/26",
			"10.244.0.9/32 via 192.168.1.11 dev#2",
			"10.244.1.0/26 via 192.168.1.11 dev#2",
			"10.244.2.0/26 via 10.244.2.0 dev#100 onlink",
			"10.245.1.0/26 via 192.168.1.11 dev#2 via 192.168.1.12 dev#2",
			"10.99.0.0/24 via 192.168.1.12 dev#2",
		},
	}, {
		name: "the borrower's own host route wins over the lent fallback",
		do: func(t *testing.T) {
			must(t, r.Apply(Batch{Upserts: []RemoteRoute{{Prefix: pfx("10.244.0.9/32"), NextHops: []netip.Addr{node12}}}}))
		},
		want: []string{
			"blackhole 10.244.0.0/26",
			"10.244.0.9/32 via 192.168.1.12 dev#2",
			"10.244.1.0/26 via 192.168.1.11 dev#2",
			"10.244.2.0/26 via 10.244.2.0 dev#100 onlink",
			"10.245.1.0/26 via 192.168.1.11 dev#2 via 192.168.1.12 dev#2",
			"10.99.0.0/24 via 192.168.1.12 dev#2",
		},
	}, {
		name: "withdrawals: ECMP path lost, borrower's route withdrawn (lent fallback back), prefix gone",
		do: func(t *testing.T) {
			must(t, r.Apply(Batch{
				Upserts:     []RemoteRoute{{Prefix: pfx("10.245.1.0/26"), NextHops: []netip.Addr{node12}}},
				Withdrawals: []netip.Prefix{pfx("10.244.0.9/32"), pfx("10.244.1.0/26")},
			}))
		},
		want: []string{
			"blackhole 10.244.0.0/26",
			"10.244.0.9/32 via 192.168.1.11 dev#2",
			"10.244.2.0/26 via 10.244.2.0 dev#100 onlink",
			"10.245.1.0/26 via 192.168.1.12 dev#2",
			"10.99.0.0/24 via 192.168.1.12 dev#2",
		},
	}, {
		name: "drift: a route deleted is restored; one that a route of another protocol replaced (a pod's own, or by hand) is left to it",
		do: func(t *testing.T) {
			f.table.DeleteOurs(pfx("10.244.2.0/26"))
			f.table.AddForeign(Route{Dst: pfx("10.245.1.0/26"), Kind: Blackhole})
		},
		want: []string{
			"blackhole 10.244.0.0/26",
			"10.244.0.9/32 via 192.168.1.11 dev#2",
			"10.244.2.0/26 via 10.244.2.0 dev#100 onlink",
			"10.99.0.0/24 via 192.168.1.12 dev#2",
		},
	}, {
		name: "converged: the stale adopted route goes",
		do:   func(t *testing.T) { r.SetConverged() },
		want: []string{
			"blackhole 10.244.0.0/26",
			"10.244.0.9/32 via 192.168.1.11 dev#2",
			"10.244.2.0/26 via 10.244.2.0 dev#100 onlink",
		},
	}, {
		name: "the foreign routes go away: ours take their places",
		do: func(t *testing.T) {
			if _, ok := f.table.Foreign(pfx("10.245.1.0/26")); !ok {
				t.Error("the route that replaced ours is gone")
			}
			f.table.RemoveForeign(foreign.Dst)
			f.table.RemoveForeign(pfx("10.245.1.0/26"))
		},
		want: []string{
			"blackhole 10.244.0.0/26",
			"10.244.0.9/32 via 192.168.1.11 dev#2",
			"10.244.2.0/26 via 10.244.2.0 dev#100 onlink",
			"10.245.1.0/26 via 192.168.1.12 dev#2",
			"10.245.7.0/26 via 192.168.1.11 dev#2",
		},
	}, {
		name: "pool switches to VXLAN Always: every route of the pool is re-encapsulated",
		do: func(t *testing.T) {
			s := baseState()
			s.Pools[0].VXLANMode = v1alpha1.EncapAlways
			must(t, r.SetState(s))
		},
		want: []string{
			"blackhole 10.244.0.0/26",
			"10.244.0.9/32 via 10.244.1.0 dev#100 onlink",
			"10.244.2.0/26 via 10.244.2.0 dev#100 onlink",
			"10.245.1.0/26 via 192.168.1.12 dev#2",
			"10.245.7.0/26 via 192.168.1.11 dev#2",
		},
	}, {
		name: "block released, full remote set shrinks: only what is left stays",
		do: func(t *testing.T) {
			s := baseState()
			s.Blocks = nil
			must(t, r.SetState(s))
			must(t, r.Apply(Batch{Full: true, Upserts: []RemoteRoute{{Prefix: pfx("10.245.7.0/26"), NextHops: []netip.Addr{node11}}}}))
		},
		want: []string{"10.245.7.0/26 via 192.168.1.11 dev#2"},
	}}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.do(t)
			passTwice(t, r, f)
			wantRoutes(t, f, st.want...)
		})
	}
	if _, ok := f.table.Foreign(foreign.Dst); ok {
		t.Error("foreign route still listed as foreign after it was removed")
	}
}

func TestReconcilerDevicesSysctlsNATAndStatus(t *testing.T) {
	r, f := newTestReconciler(t)
	must(t, r.SetState(baseState()))
	passTwice(t, r, f)

	if f.devs.VXLAN == nil || f.devs.VXLAN.Name != DefaultVXLANDevice || f.devs.VXLAN.VNI != 4096 ||
		f.devs.VXLAN.Port != 4789 || f.devs.VXLAN.MTU != 1450 || f.devs.VXLAN.Address != addr("10.244.0.0") {
		t.Errorf("VXLAN device %+v", f.devs.VXLAN)
	}
	if f.devs.VXLAN.MAC.String() != r.VXLANMAC().String() {
		t.Errorf("device MAC %s, published MAC %s", f.devs.VXLAN.MAC, r.VXLANMAC())
	}
	if f.devs.IPIP != nil {
		t.Errorf("tunl0 configured though no pool uses IPIP")
	}
	if len(f.devs.VTEPs) != 2 {
		t.Errorf("VTEPs programmed %v, want the 2 other nodes", f.devs.VTEPs)
	}
	if got := r.PodMTU(); got != 1450 {
		t.Errorf("pod MTU %d, want 1450", got)
	}
	if f.nat.Spec.Masquerade[0] != pfx("10.244.0.0/16") || len(f.nat.Spec.Pools) != 2 {
		t.Errorf("NAT spec %+v", f.nat.Spec)
	}
	wantSys := map[string]string{"net/ipv4/ip_forward": "1", "net/ipv4/conf/eth0/rp_filter": "2",
		"net/ipv4/conf/vxlan.rhizome/rp_filter": "2", "net/ipv4/conf/all/rp_filter": "1", "net/ipv6/conf/all/forwarding": "0"}
	for k, v := range wantSys {
		if f.sys.Values[k] != v {
			t.Errorf("sysctl %s = %s, want %s", k, f.sys.Values[k], v)
		}
	}
	st := r.Status()
	if st.RoutesProgrammed != 2 || st.RoutesDesired != 2 || st.LastError != "" || st.Passes != 2 {
		t.Errorf("status %+v", st)
	}
	changed := 0
	for _, s := range st.Sysctls {
		if s.Changed {
			changed++
		}
	}
	if changed != 3 {
		t.Errorf("%d sysctls reported changed, want 3: %+v", changed, st.Sysctls)
	}

	// IPIP pool instead: tunl0 with MTU 1480, VXLAN device removed.
	s := baseState()
	s.Pools[0].VXLANMode, s.Pools[0].IPIPMode = v1alpha1.EncapNever, v1alpha1.EncapAlways
	s.IPIPAddress = addr("10.244.0.1")
	must(t, r.SetState(s))
	must(t, r.Apply(Batch{Upserts: []RemoteRoute{{Prefix: pfx("10.244.2.0/26"), NextHops: []netip.Addr{node21}}}}))
	passTwice(t, r, f)
	if f.devs.VXLAN != nil || f.devs.IPIP == nil || f.devs.IPIP.MTU != 1480 || r.PodMTU() != 1480 {
		t.Errorf("devices after switching to IPIP: vxlan %+v ipip %+v mtu %d", f.devs.VXLAN, f.devs.IPIP, r.PodMTU())
	}
	wantRoutes(t, f, "blackhole 10.244.0.0/26", "10.244.0.9/32 via 192.168.1.11 dev#101 onlink",
		"10.244.2.0/26 via 192.168.2.21 dev#101 onlink")

	// No NAT pool: NAT spec empty (our table removed).
	s.Pools[0].NATOutgoing = false
	must(t, r.SetState(s))
	passTwice(t, r, f)
	if len(f.nat.Spec.Masquerade) != 0 {
		t.Errorf("NAT spec %+v, want empty", f.nat.Spec)
	}
}

func TestReconcilerErrorsLoseNothing(t *testing.T) {
	r, f := newTestReconciler(t)
	must(t, r.SetState(baseState()))
	passTwice(t, r, f)

	// Invalid entries are refused, the valid ones of the batch applied.
	err := r.Apply(Batch{Upserts: []RemoteRoute{
		{Prefix: pfx("10.245.3.1/24"), NextHops: []netip.Addr{node11}},
		{Prefix: pfx("10.245.4.0/24"), NextHops: []netip.Addr{{}}},
		{Prefix: pfx("10.245.5.0/24"), NextHops: []netip.Addr{node11}},
	}})
	if err == nil || !strings.Contains(err.Error(), "10.245.3.1/24: not a network prefix") || !strings.Contains(err.Error(), "10.245.4.0/24: invalid next hop") {
		t.Errorf("Apply error %v", err)
	}
	// An invalid state is refused whole; the old one stays.
	if err := r.SetState(State{Blocks: []OwnBlock{{Prefix: pfx("10.0.0.1/24")}}}); err == nil {
		t.Error("invalid state accepted")
	}
	passTwice(t, r, f)
	wantRoutes(t, f, "blackhole 10.244.0.0/26", "10.244.0.9/32 via 192.168.1.11 dev#2", "10.245.5.0/24 via 192.168.1.11 dev#2")

	// A VXLAN route to a node without VTEP is reported, not installed; a
	// kernel refusal is reported and retried by the next pass.
	f.table.FailNext(pfx("10.245.6.0/24"), syscall.EINVAL)
	must(t, r.Apply(Batch{Upserts: []RemoteRoute{
		{Prefix: pfx("10.244.9.0/26"), NextHops: []netip.Addr{addr("192.168.7.7")}},
		{Prefix: pfx("10.245.6.0/24"), NextHops: []netip.Addr{node11}},
	}}))
	r.WaitWritten()
	st := r.Status()
	if st.RouteErrorCount != 2 || !strings.Contains(st.RouteErrors[pfx("10.244.9.0/26")], "no VTEP") ||
		!strings.Contains(st.RouteErrors[pfx("10.245.6.0/24")], "invalid argument") {
		t.Errorf("route errors %v", st.RouteErrors)
	}
	passTwice(t, r, f)
	wantRoutes(t, f, "blackhole 10.244.0.0/26", "10.244.0.9/32 via 192.168.1.11 dev#2",
		"10.245.5.0/24 via 192.168.1.11 dev#2", "10.245.6.0/24 via 192.168.1.11 dev#2")
	if st := r.Status(); st.RouteErrorCount != 1 {
		t.Errorf("after retry: route errors %v", st.RouteErrors)
	}

	// A device that cannot be created fails the pass, but the routes that
	// do not need it are kept right.
	f.devs.FailVXLAN = true
	f.devs.VXLAN = nil
	f.table.DeleteOurs(pfx("10.245.5.0/24"))
	if err := r.pass(); err == nil || !strings.Contains(err.Error(), "operation not supported") {
		t.Errorf("pass error %v", err)
	}
	wantRoutes(t, f, "blackhole 10.244.0.0/26", "10.244.0.9/32 via 192.168.1.11 dev#2",
		"10.245.5.0/24 via 192.168.1.11 dev#2", "10.245.6.0/24 via 192.168.1.11 dev#2")
}

// fakeWatcher hands events to the Reconciler on demand.
type fakeWatcher struct{ events chan []Event }

func (w *fakeWatcher) Watch(ctx context.Context, fn func([]Event)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case evs := <-w.events:
			fn(evs)
		}
	}
}

func TestRunRepairsDriftOnEventsOnly(t *testing.T) {
	f := &fakes{table: NewFakeTable(t), devs: &FakeDevices{UnderlayIndex: underlayIdx, UnderlayMTU: 1500},
		nat: &FakeNAT{}, sys: &FakeSysctls{Values: map[string]string{"net/ipv4/ip_forward": "1"}}}
	w := &fakeWatcher{events: make(chan []Event)}
	r, err := NewWithKernel(Config{Interface: "eth0", Address: pfx("192.168.1.10/24"), ResyncInterval: time.Hour},
		Kernel{Table: f.table, Devices: f.devs, NAT: f.nat, Sysctls: f.sys, Watcher: w})
	must(t, err)
	must(t, r.SetState(State{Blocks: []OwnBlock{{Prefix: pfx("10.244.0.0/26")}}}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	waitFor(t, "first pass", func() bool { return len(f.table.Routes()) == 1 })

	passes := r.Status().Passes
	// Our own route echoed back: no pass.
	w.events <- []Event{{Kind: EventRoute, Table: 254, Protocol: 114, Route: Route{Dst: pfx("10.244.0.0/26"), Kind: Blackhole}}}
	// A foreign route elsewhere: no pass.
	w.events <- []Event{{Kind: EventRoute, Table: 254, Protocol: 3, Route: Route{Dst: pfx("10.1.0.0/24"), Kind: Blackhole}}}
	// Our route deleted behind our back: a pass restores it.
	f.table.DeleteOurs(pfx("10.244.0.0/26"))
	w.events <- []Event{{Kind: EventRoute, Deleted: true, Table: 254, Protocol: 114, Route: Route{Dst: pfx("10.244.0.0/26"), Kind: Blackhole}}}
	waitFor(t, "route restored", func() bool { return len(f.table.Routes()) == 1 })
	if got := r.Status().Passes - passes; got != 1 {
		t.Errorf("%d passes for three events, want 1", got)
	}
	cancel()
	must(t, <-done)
	if len(f.table.Routes()) != 1 {
		t.Error("stopping removed routes")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
