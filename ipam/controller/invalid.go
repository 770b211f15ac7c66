package controller

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/ipam/store"
)

// reportInvalid records a Warning Event, once per block and leadership
// term, on every block that the agents ignore: one that fails store.Check or
// overlaps an older block. Every agent skips such a block on its own (and
// counts it in rhizome_ipam_invalid_blocks); the Event comes from the leader
// alone so that a cluster of N nodes writes one Event, not N.
func (c *Controller) reportInvalid(blocks []*v1alpha1.IPAMBlock) {
	var placed []store.Placed
	why := map[string]string{}
	byName := map[string]*v1alpha1.IPAMBlock{}
	for _, b := range blocks {
		byName[b.Name] = b
		p, err := store.Check(b)
		if err != nil {
			why[b.Name] = err.Error()
			continue
		}
		placed = append(placed, store.Placed{Name: b.Name, Prefix: p, Created: b.CreationTimestamp.Time})
	}
	for name, older := range store.Overlaps(placed) {
		why[name] = fmt.Sprintf("block %s: cidr %s overlaps the older block %s (%s), whose addresses these are",
			name, byName[name].Spec.CIDR, older, byName[older].Spec.CIDR)
	}
	seen := map[types.UID]bool{}
	for name, msg := range why {
		b := byName[name]
		seen[b.UID] = true
		if c.reported[b.UID] {
			continue
		}
		c.reported[b.UID] = true
		c.recorder.Eventf(b, corev1.EventTypeWarning, "InvalidBlock",
			"%s; every agent ignores this block (no allocations, no routes): delete it", msg)
	}
	for uid := range c.reported {
		if !seen[uid] {
			delete(c.reported, uid)
		}
	}
}
