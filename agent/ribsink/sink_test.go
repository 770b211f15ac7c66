package ribsink

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rhizome-net/rhizome/bgp/rib"
	"github.com/rhizome-net/rhizome/routes"
)

// recorder is a stateful Applier: it keeps the remote routes the way the
// route programmer does and fails the test on a batch that breaks the
// contract (a prefix twice, a withdrawal of a prefix it never had).
type recorder struct {
	t         *testing.T
	batches   []routes.Batch
	remote    map[netip.Prefix][]netip.Addr
	converged int
	fail      error
}

func newRecorder(t *testing.T) *recorder {
	return &recorder{t: t, remote: map[netip.Prefix][]netip.Addr{}}
}

func (r *recorder) Apply(b routes.Batch) error {
	r.batches = append(r.batches, b)
	seen := map[netip.Prefix]bool{}
	for _, u := range b.Upserts {
		if seen[u.Prefix] {
			r.t.Errorf("batch names %s twice", u.Prefix)
		}
		seen[u.Prefix] = true
		r.remote[u.Prefix] = u.NextHops
	}
	for _, p := range b.Withdrawals {
		if _, ok := r.remote[p]; !ok || seen[p] {
			r.t.Errorf("withdrawal of %s, which is not held or is in the same batch", p)
		}
		delete(r.remote, p)
	}
	return r.fail
}

func (r *recorder) SetConverged() { r.converged++ }

type sizes []int

func (s *sizes) ObserveBatch(n int) { *s = append(*s, n) }

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
	eq   = cmp.Options{
		cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
		cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
	}
)

func TestSinkHandsOverBatches(t *testing.T) {
	a1, a2 := addr("192.168.1.1"), addr("192.168.1.2")
	one := []netip.Addr{a1} // the RIB shares single next-hop slices
	batches := []rib.Batch{
		{Set: []rib.Route{
			{Prefix: pfx("10.244.1.0/26"), NextHops: one},
			{Prefix: pfx("10.96.0.0/12"), NextHops: []netip.Addr{a1, a2}},
			{Prefix: pfx("10.244.2.0/26"), NextHops: one},
		}},
		{
			Set:      []rib.Route{{Prefix: pfx("10.244.1.0/26"), NextHops: []netip.Addr{a2}}},
			Withdraw: []netip.Prefix{pfx("10.244.2.0/26")},
		},
		{}, // an empty batch is passed on too (the RIB does not send one)
	}
	want := []routes.Batch{
		{Upserts: []routes.RemoteRoute{
			{Prefix: pfx("10.244.1.0/26"), NextHops: []netip.Addr{a1}},
			{Prefix: pfx("10.96.0.0/12"), NextHops: []netip.Addr{a1, a2}},
			{Prefix: pfx("10.244.2.0/26"), NextHops: []netip.Addr{a1}},
		}},
		{
			Upserts:     []routes.RemoteRoute{{Prefix: pfx("10.244.1.0/26"), NextHops: []netip.Addr{a2}}},
			Withdrawals: []netip.Prefix{pfx("10.244.2.0/26")},
		},
		{Upserts: []routes.RemoteRoute{}},
	}
	rec := newRecorder(t)
	var seen sizes
	s := New(rec, &seen, nil)
	for _, b := range batches {
		s.ApplyRoutes(b)
	}
	s.Converged()
	if diff := cmp.Diff(want, rec.batches, eq); diff != "" {
		t.Errorf("batches (-want +got):\n%s", diff)
	}
	if !slices.Equal(seen, sizes{3, 2, 0}) {
		t.Errorf("observer saw batch sizes %v, want [3 2 0]", seen)
	}
	if rec.converged != 1 {
		t.Errorf("SetConverged called %d times, want 1", rec.converged)
	}
	// The RIB's shared next-hop slice is handed over, not copied per route.
	if &rec.batches[0].Upserts[0].NextHops[0] != &one[0] || &rec.batches[0].Upserts[2].NextHops[0] != &one[0] {
		t.Error("single next-hop slices are copied per route")
	}
	if diff := cmp.Diff(map[netip.Prefix][]netip.Addr{pfx("10.244.1.0/26"): {a2}, pfx("10.96.0.0/12"): {a1, a2}}, rec.remote, eq); diff != "" {
		t.Errorf("remote routes held (-want +got):\n%s", diff)
	}
}

func TestSinkSurvivesRefusedRoutes(t *testing.T) {
	// The route programmer refuses invalid entries and applies the rest:
	// the sink logs and goes on with the next batch.
	rec := newRecorder(t)
	rec.fail = errors.New("batch: 1 invalid route(s) skipped")
	s := New(rec, nil, nil)
	s.ApplyRoutes(rib.Batch{Set: []rib.Route{{Prefix: pfx("10.244.1.0/26"), NextHops: []netip.Addr{addr("192.168.1.1")}}}})
	rec.fail = nil
	s.ApplyRoutes(rib.Batch{Withdraw: []netip.Prefix{pfx("10.244.1.0/26")}})
	if len(rec.batches) != 2 || len(rec.remote) != 0 {
		t.Errorf("after a refused batch: %d batches, %d routes held; want 2 and 0", len(rec.batches), len(rec.remote))
	}
}
