package agent

import (
	"maps"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/rhizome-net/rhizome/routes"
)

// This file plays sequences of events on a world (world_test.go).

// recordedRoutes is the real route programmer, recording the states it
// accepted and the learned routes it was given.
type recordedRoutes struct {
	*routes.Reconciler
	mu      sync.Mutex
	states  []routes.State
	refused []error
	remote  map[netip.Prefix][]netip.Addr
	// refuse, if set, is returned for every state, as the route
	// programmer refuses one it finds invalid (every input the agent
	// builds states from is checked before, so only a bug gets there).
	refuse error
	// onState, if set, is called at every SetState before it is applied,
	// with the learned routes handed over so far (a test's look at what
	// a pass did before it wrote the route state).
	onState func(remote map[netip.Prefix][]netip.Addr)
}

func (r *recordedRoutes) SetState(s routes.State) error {
	r.mu.Lock()
	refuse := r.refuse
	if r.onState != nil {
		r.onState(r.remote)
	}
	r.mu.Unlock()
	err := refuse
	if err == nil {
		err = r.Reconciler.SetState(s)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.refused = append(r.refused, err)
		return err
	}
	r.states = append(r.states, s)
	return nil
}

func (r *recordedRoutes) Apply(b routes.Batch) error {
	r.mu.Lock()
	for _, u := range b.Upserts {
		r.remote[u.Prefix] = slices.Clone(u.NextHops)
	}
	for _, p := range b.Withdrawals {
		delete(r.remote, p)
	}
	r.mu.Unlock()
	return r.Reconciler.Apply(b)
}

// last is the state in force: the last one accepted.
func (r *recordedRoutes) last() (routes.State, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.states) == 0 {
		return routes.State{}, false
	}
	return r.states[len(r.states)-1], true
}

func (r *recordedRoutes) counts() (accepted, refused int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.states), len(r.refused)
}

func (r *recordedRoutes) learned() map[netip.Prefix][]netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.remote)
}

// step is one event of a sequence and the world it must leave.
type step struct {
	name string
	// do changes the world (or the agent) before the pass; nil: only pass.
	do func(w *world)
	// want is the world after the step's pass. wantFirst, if set, is the
	// world after a first pass that fails part-way (an injected error);
	// want is then the world after the second pass, which retries.
	wantFirst, want []string
	// check, if set, runs after the step's passes.
	check func(t *testing.T, w *world)
}

// play runs a sequence. After each event the pass runs twice: the first
// must leave the world the step wants, the second (idempotency) the same
// world without writing anything: no API write, no IPAM change, no call
// to the speaker, no kernel write, and an equal state for the routes.
func play(t *testing.T, w *world, steps []step) {
	t.Helper()
	for i, s := range steps {
		if s.do != nil {
			s.do(w)
		}
		w.pass()
		if s.wantFirst != nil {
			if d := cmp.Diff(sorted(s.wantFirst), w.lines()); d != "" {
				t.Fatalf("step %d %q: world after the failing pass (-want +got):\n%s", i, s.name, d)
			}
			w.pass()
		}
		if d := cmp.Diff(sorted(s.want), w.lines()); d != "" {
			t.Fatalf("step %d %q: world (-want +got):\n%s", i, s.name, d)
		}
		apiBefore, allocsBefore, kernelBefore := w.writes(), w.ipam.Allocations(), w.table.Writes()
		stBefore, _ := w.run.routes.last()
		w.run.speaker.Ops() // forget
		w.pass()
		if d := cmp.Diff(sorted(s.want), w.lines()); d != "" {
			t.Errorf("step %d %q: the second pass changed the world (-want +got):\n%s", i, s.name, d)
		}
		if got := w.writes(); !maps.Equal(got, apiBefore) {
			t.Errorf("step %d %q: the second pass wrote to the API: %v, before %v", i, s.name, got, apiBefore)
		}
		if got := w.ipam.Allocations(); !cmp.Equal(got, allocsBefore, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })) {
			t.Errorf("step %d %q: the second pass changed allocations: %v, before %v", i, s.name, got, allocsBefore)
		}
		if ops := w.run.speaker.Ops(); len(ops) > 0 {
			t.Errorf("step %d %q: the second pass called the speaker: %v", i, s.name, ops)
		}
		if n := w.table.Writes() - kernelBefore; n != 0 {
			t.Errorf("step %d %q: the second pass wrote %d kernel routes", i, s.name, n)
		}
		if st, _ := w.run.routes.last(); !cmp.Equal(st, stBefore, cmpState) {
			t.Errorf("step %d %q: the second pass changed the route programmer's state:\n%s", i, s.name, cmp.Diff(stBefore, st, cmpState))
		}
		if s.check != nil {
			s.check(t, w)
		}
	}
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

var cmpState = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}
