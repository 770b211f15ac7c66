package ribsink

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rhizome-net/rhizome/bgp/rib"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/routes"
)

type recorder struct {
	batches   []routes.Batch
	converged int
}

func (r *recorder) Apply(b routes.Batch) error { r.batches = append(r.batches, b); return nil }
func (r *recorder) SetConverged()              { r.converged++ }

type sizes []int

func (s *sizes) ObserveBatch(n int) { *s = append(*s, n) }

func TestSinkTranslatesBatches(t *testing.T) {
	rec := &recorder{}
	var seen sizes
	s := New(rec, &seen, nil)
	a1, a2 := netip.MustParseAddr("192.168.1.1"), netip.MustParseAddr("192.168.1.2")
	s.ApplyRoutes(rib.Batch{
		Set: []rib.Route{
			{Prefix: netip.MustParsePrefix("10.244.1.0/26"), NextHops: []rib.NextHop{{Addr: a1, Node: "n1"}},
				Pool: "default", IPIPMode: v1alpha1.EncapNever, VXLANMode: v1alpha1.EncapCrossSubnet},
			{Prefix: netip.MustParsePrefix("10.96.0.0/12"), NextHops: []rib.NextHop{{Addr: a1}, {Addr: a2}}},
			{Prefix: netip.MustParsePrefix("10.244.2.0/26"), NextHops: []rib.NextHop{{Addr: a1}},
				Pool: "ipip", IPIPMode: v1alpha1.EncapAlways, VXLANMode: v1alpha1.EncapNever},
		},
		Withdraw: []netip.Prefix{netip.MustParsePrefix("10.244.3.0/26")},
	})
	s.Converged()
	want := []routes.Batch{{
		Upserts: []routes.RemoteRoute{
			{Prefix: netip.MustParsePrefix("10.244.1.0/26"), NextHops: []netip.Addr{a1}, Encap: routes.Encap{Mode: routes.EncapVXLAN, CrossSubnet: true}},
			{Prefix: netip.MustParsePrefix("10.96.0.0/12"), NextHops: []netip.Addr{a1, a2}, Encap: routes.Encap{Mode: routes.EncapNone}},
			{Prefix: netip.MustParsePrefix("10.244.2.0/26"), NextHops: []netip.Addr{a1}, Encap: routes.Encap{Mode: routes.EncapIPIP}},
		},
		Withdrawals: []netip.Prefix{netip.MustParsePrefix("10.244.3.0/26")},
	}}
	eq := cmp.Comparer(func(a, b netip.Addr) bool { return a == b })
	eqp := cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })
	if diff := cmp.Diff(want, rec.batches, eq, eqp); diff != "" {
		t.Errorf("batches (-want +got):\n%s", diff)
	}
	if !slices.Equal(seen, sizes{4}) {
		t.Errorf("observer saw batch sizes %v, want [4]", seen)
	}
	if rec.converged != 1 {
		t.Errorf("SetConverged called %d times", rec.converged)
	}
	// Single next hops are shared between routes.
	if &rec.batches[0].Upserts[0].NextHops[0] != &rec.batches[0].Upserts[2].NextHops[0] {
		t.Error("single next-hop slices are not shared")
	}
}
