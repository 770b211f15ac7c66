package ipam

import (
	"net/netip"
	"slices"
)

// Handles returns, sorted, the handles that hold addresses this node
// allocated, in its own blocks or borrowed from others, as the cache knows
// them. The agent's local API uses it for CNI garbage collection and to tell
// a repeated ADD from a new one.
func (a *NodeAllocator) Handles() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	seen := map[string]bool{}
	for _, e := range a.blocks {
		if e.obj == nil {
			continue
		}
		for _, al := range e.obj.Spec.Allocations {
			if al.Node == a.node {
				seen[al.Handle] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for h := range seen {
		out = append(out, h)
	}
	slices.Sort(out)
	return out
}

// HandleAddresses returns the addresses the handle holds, as the cache
// knows them.
func (a *NodeAllocator) HandleAddresses(handle string) []netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []netip.Addr
	for _, l := range a.handles[handle] {
		out = append(out, l.addr)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
