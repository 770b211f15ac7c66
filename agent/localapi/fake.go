package localapi

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"

	"github.com/rhizome-net/rhizome/agent/agentapi"
)

// FakeAllocator is an in-memory Allocator for tests of the local API's
// clients (the CNI plugin): it hands out consecutive addresses of its
// prefixes, one per family, and records every allocation so tests can check
// that nothing leaks. It is not an IPAM: the agent serves from package ipam.
type FakeAllocator struct {
	mu       sync.Mutex
	prefixes []netip.Prefix
	next     []netip.Addr
	byHandle map[string][]netip.Addr
	// Calls counts Allocate calls, including repeated ones.
	Calls int
	// FailNext makes the next Allocate fail with this error.
	FailNext error
}

// NewFakeAllocator allocates from the given prefixes, e.g. 10.244.0.0/24 and
// fd00:10:244::/120.
func NewFakeAllocator(prefixes ...string) *FakeAllocator {
	f := &FakeAllocator{byHandle: map[string][]netip.Addr{}}
	for _, p := range prefixes {
		pp := netip.MustParsePrefix(p)
		f.prefixes = append(f.prefixes, pp)
		f.next = append(f.next, pp.Addr().Next()) // skip the network address
	}
	return f
}

// Allocate implements Allocator.
func (f *FakeAllocator) Allocate(_ context.Context, req AllocateRequest) ([]netip.Addr, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Calls++
	if err := f.FailNext; err != nil {
		f.FailNext = nil
		return nil, false, err
	}
	if a, ok := f.byHandle[req.Handle]; ok {
		return a, true, nil
	}
	var out []netip.Addr
	for i, p := range f.prefixes {
		a := f.next[i]
		if !p.Contains(a) {
			return nil, false, fmt.Errorf("fake pool %s: %w", p, ErrExhausted)
		}
		f.next[i] = a.Next()
		out = append(out, a)
	}
	f.byHandle[req.Handle] = out
	return out, false, nil
}

// Release implements Allocator.
func (f *FakeAllocator) Release(_ context.Context, handle string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.byHandle[handle]
	delete(f.byHandle, handle)
	return a, nil
}

// CNIHandles implements Allocator.
func (f *FakeAllocator) CNIHandles(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var hs []string
	for h := range f.byHandle {
		hs = append(hs, h)
	}
	sort.Strings(hs)
	return hs, nil
}

// Addresses implements Allocator.
func (f *FakeAllocator) Addresses(_ context.Context, handle string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.byHandle[handle], nil
}

// Held returns the addresses a handle holds.
func (f *FakeAllocator) Held(handle string) []netip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.byHandle[handle]
}

// Allocations returns handle → addresses, for leak checks.
func (f *FakeAllocator) Allocations() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]string{}
	for h, as := range f.byHandle {
		var s []string
		for _, a := range as {
			s = append(s, a.String())
		}
		out[h] = strings.Join(s, ",")
	}
	return out
}

// StaticState is a State with fixed answers, for tests.
type StaticState struct {
	mu       sync.Mutex
	Node     string
	MTU      int
	NotReady string
}

// SetNotReady changes readiness ("" = ready).
func (s *StaticState) SetNotReady(reason string) {
	s.mu.Lock()
	s.NotReady = reason
	s.mu.Unlock()
}

// NetworkConfig implements State.
func (s *StaticState) NetworkConfig() (int, bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.MTU, s.NotReady == "", s.NotReady
}

// Status implements State.
func (s *StaticState) Status() *agentapi.StatusResponse {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &agentapi.StatusResponse{NodeName: s.Node, Ready: s.NotReady == "", NotReadyReason: s.NotReady}
}
