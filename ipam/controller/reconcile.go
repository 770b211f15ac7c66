package controller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/resourceversion"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/ipam/pools"
	"github.com/rhizome-net/rhizome/ipam/store"
)

var podsGVR = schema.GroupVersionResource{Version: "v1", Resource: "pods"}

// Reconcile runs one pass over every pool and block. It is idempotent: a
// pass that finds nothing to change writes nothing. Start must have been
// called for the current term.
func (c *Controller) Reconcile(ctx context.Context) error {
	if c.nodes == nil {
		return errors.New("controller: Reconcile before Start")
	}
	cfg, err := c.settings.Get(v1alpha1.IPAMConfigurationName)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("controller: reading IPAMConfiguration: %w", err)
	}
	settings := pools.SettingsFrom(cfg)
	rawPools, err := c.pools.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("controller: listing pools: %w", err)
	}
	blocks, err := c.blocks.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("controller: listing blocks: %w", err)
	}
	blocks = c.freshBlocks(blocks)
	c.reportInvalid(blocks)
	slices.SortFunc(blocks, func(x, y *v1alpha1.IPAMBlock) int { return strings.Compare(x.Name, y.Name) })
	now := c.clock.Now()
	seen := map[string]bool{}
	errs := []error{
		c.collect(ctx, blocks, settings, now, seen),
		c.cleanBlocks(ctx, blocks, settings, now, seen),
	}
	candidates := 0
	for k := range c.orphans {
		if !seen[k] {
			delete(c.orphans, k) // no longer orphaned: start over if it is again
		} else if strings.HasPrefix(k, "addr/") {
			candidates++
		}
	}
	c.m.candidates.Store(int64(candidates))
	errs = append(errs, c.syncPools(ctx, rawPools, blocks, settings))
	return errors.Join(errs...)
}

// freshBlocks replaces cached blocks by the versions this controller wrote
// when the cache has not caught up yet, and forgets the versions it has.
func (c *Controller) freshBlocks(cached []*v1alpha1.IPAMBlock) []*v1alpha1.IPAMBlock {
	listed := map[string]bool{}
	out := make([]*v1alpha1.IPAMBlock, 0, len(cached))
	for _, b := range cached {
		listed[b.Name] = true
		w := c.blocksWritten[b.Name]
		switch cmp, err := resourceversion.CompareResourceVersion(b.ResourceVersion, rvOf(w)); {
		case w == nil:
		case err == nil && cmp < 0:
			b = w
		default:
			delete(c.blocksWritten, b.Name)
		}
		out = append(out, b)
	}
	for name := range c.blocksWritten {
		if !listed[name] {
			delete(c.blocksWritten, name)
		}
	}
	return out
}

func rvOf(b *v1alpha1.IPAMBlock) string {
	if b == nil {
		return ""
	}
	return b.ResourceVersion
}

// modify is store.Modify, remembering what it wrote.
func (c *Controller) modify(ctx context.Context, name string, fn func(*v1alpha1.IPAMBlock) (store.Action, error)) error {
	out, err := c.store.Modify(ctx, name, fn)
	if err == nil && out != nil {
		c.blocksWritten[name] = out
	}
	return err
}

// sighted records that key is in an orphaned state now, and reports whether
// it was first seen so at least grace ago (ripe) or just now (first).
func (c *Controller) sighted(key string, now time.Time, grace time.Duration, seen map[string]bool) (ripe, first bool) {
	seen[key] = true
	t, ok := c.orphans[key]
	if !ok {
		c.orphans[key] = now
		return false, true
	}
	return now.Sub(t) >= grace, false
}

// collect is the garbage collector of allocations.
func (c *Controller) collect(ctx context.Context, blocks []*v1alpha1.IPAMBlock, s pools.Settings, now time.Time, seen map[string]bool) error {
	var errs []error
	for _, b := range blocks {
		for _, al := range b.Spec.Allocations {
			why, orphan := c.orphaned(b, al)
			if !orphan {
				continue
			}
			key := "addr/" + b.Name + "/" + al.Address + "/" + al.Handle
			ripe, first := c.sighted(key, now, s.GCGracePeriod, seen)
			if first {
				c.m.candidatesSeen.Add(1)
				c.log.Info("address seen orphaned; released if still so after the grace period", "op", "gc",
					"address", al.Address, "handle", al.Handle, "reason", why, "grace", s.GCGracePeriod)
			}
			if !ripe {
				continue
			}
			gone, err := c.confirmGone(ctx, b, al)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if !gone {
				delete(c.orphans, key) // the cache lagged: it is alive
				continue
			}
			released, err := c.releaseAllocation(ctx, b.Name, al)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			delete(c.orphans, key)
			if released {
				c.m.releases.Add(1)
				c.log.Info("released orphaned address", "op", "gc", "address", al.Address, "handle", al.Handle,
					"namespace", al.Namespace, "pod", al.Pod, "reason", why)
			}
		}
	}
	return errors.Join(errs...)
}

// orphaned decides from the caches whether an allocation's holder is gone:
// its pod, or for an allocation without a pod, the node that made it. An
// allocation with neither is never collected.
func (c *Controller) orphaned(b *v1alpha1.IPAMBlock, al v1alpha1.IPAMAllocation) (string, bool) {
	if al.Pod != "" {
		obj, err := c.pods.ByNamespace(al.Namespace).Get(al.Pod)
		if apierrors.IsNotFound(err) {
			return fmt.Sprintf("pod %s/%s does not exist", al.Namespace, al.Pod), true
		}
		if m, ok := obj.(metav1.Object); ok && err == nil && al.PodUID != "" && string(m.GetUID()) != al.PodUID {
			return fmt.Sprintf("pod %s/%s was re-created (UID %s, the address was allocated for UID %s)", al.Namespace, al.Pod, m.GetUID(), al.PodUID), true
		}
		return "", false
	}
	node := cmp.Or(al.Node, b.Spec.Affinity)
	if node == "" {
		return "", false
	}
	_, err := c.nodes.Get(node)
	return fmt.Sprintf("node %s does not exist (allocation without a pod)", node), apierrors.IsNotFound(err)
}

// confirmGone re-checks the holder with a live read, so that a lagging
// cache can never make the collector free a live pod's address.
func (c *Controller) confirmGone(ctx context.Context, b *v1alpha1.IPAMBlock, al v1alpha1.IPAMAllocation) (bool, error) {
	var err error
	if al.Pod != "" {
		var pod *metav1.PartialObjectMetadata
		pod, err = c.cfg.Metadata.Resource(podsGVR).Namespace(al.Namespace).Get(ctx, al.Pod, metav1.GetOptions{})
		if err == nil && al.PodUID != "" && string(pod.UID) != al.PodUID {
			return true, nil // another incarnation of the pod holds the name
		}
	} else {
		_, err = c.cfg.Kube.Nodes().Get(ctx, cmp.Or(al.Node, b.Spec.Affinity), metav1.GetOptions{})
	}
	switch {
	case err == nil:
		return false, nil
	case apierrors.IsNotFound(err):
		return true, nil
	}
	return false, fmt.Errorf("controller: confirming that the holder of %s is gone: %w", al.Address, err)
}

// releaseAllocation removes one allocation if the block still holds that
// address for that handle.
func (c *Controller) releaseAllocation(ctx context.Context, block string, al v1alpha1.IPAMAllocation) (bool, error) {
	released := false
	err := c.modify(ctx, block, func(b *v1alpha1.IPAMBlock) (store.Action, error) {
		released = false
		i := slices.IndexFunc(b.Spec.Allocations, func(x v1alpha1.IPAMAllocation) bool {
			return x.Address == al.Address && x.Handle == al.Handle
		})
		if i < 0 {
			return store.Keep, nil
		}
		b.Spec.Allocations = slices.Delete(b.Spec.Allocations, i, i+1)
		store.StampEmpty(b, c.clock.Now())
		released = true
		return store.Update, nil
	})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("controller: releasing %s: %w", al.Address, err)
	}
	return released, nil
}

// cleanBlocks removes the affinity of blocks whose node is gone (seen gone
// twice a grace period apart, then confirmed live) and deletes blocks that
// no node owns once they are empty.
func (c *Controller) cleanBlocks(ctx context.Context, blocks []*v1alpha1.IPAMBlock, s pools.Settings, now time.Time, seen map[string]bool) error {
	var errs []error
	for _, b := range blocks {
		node := b.Spec.Affinity
		if node == "" {
			if len(b.Spec.Allocations) == 0 {
				errs = append(errs, c.deleteIfEmpty(ctx, b.Name, ""))
			}
			continue
		}
		if _, err := c.nodes.Get(node); !apierrors.IsNotFound(err) {
			continue
		}
		key := "affinity/" + b.Name + "/" + node
		ripe, first := c.sighted(key, now, s.GCGracePeriod, seen)
		if first {
			c.log.Info("block's node is gone; affinity released after the grace period", "op", "gc", "block", b.Name, "affinity", node)
		}
		if !ripe {
			continue
		}
		if _, err := c.cfg.Kube.Nodes().Get(ctx, node, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			if err != nil {
				errs = append(errs, fmt.Errorf("controller: checking node %s: %w", node, err))
			}
			continue
		}
		err := c.modify(ctx, b.Name, func(cur *v1alpha1.IPAMBlock) (store.Action, error) {
			if cur.Spec.Affinity != node {
				return store.Keep, nil
			}
			if len(cur.Spec.Allocations) == 0 {
				return store.Delete, nil
			}
			cur.Spec.Affinity = ""
			return store.Update, nil
		})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("controller: releasing block %s of node %s: %w", b.Name, node, err))
			continue
		}
		delete(c.orphans, key)
		c.m.affinities.Add(1)
		c.log.Info("released block of a deleted node", "op", "gc", "block", b.Name, "affinity", node)
	}
	return errors.Join(errs...)
}

// deleteIfEmpty deletes a block if it is still empty and still has the
// given affinity.
func (c *Controller) deleteIfEmpty(ctx context.Context, name, affinity string) error {
	err := c.modify(ctx, name, func(b *v1alpha1.IPAMBlock) (store.Action, error) {
		if len(b.Spec.Allocations) > 0 || b.Spec.Affinity != affinity {
			return store.Keep, nil
		}
		return store.Delete, nil
	})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("controller: deleting empty block %s: %w", name, err)
	}
	return nil
}

// usage counts a pool's blocks and addresses from the blocks inside its cidr.
type usage struct{ blocks, addresses int64 }

func poolUsage(cidr netip.Prefix, blocks []*v1alpha1.IPAMBlock) usage {
	var u usage
	for _, b := range blocks {
		p, err := store.Prefix(b)
		if err != nil || p.Bits() < cidr.Bits() || !cidr.Contains(p.Addr()) {
			continue
		}
		u.blocks++
		u.addresses += int64(len(b.Spec.Allocations))
	}
	return u
}
