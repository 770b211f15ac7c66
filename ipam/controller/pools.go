package controller

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/resourceversion"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/ipam/pools"
)

// NearlyFull is the share of a pool's addresses in use at which an event
// warns that the pool is filling up.
const NearlyFull = 0.9

// syncPools keeps each pool's finalizer and status in step with its blocks.
func (c *Controller) syncPools(ctx context.Context, raw []*v1alpha1.IPPool, blocks []*v1alpha1.IPAMBlock, s pools.Settings) error {
	set := pools.From(raw)
	var errs []error
	live := map[string]bool{}
	for _, p := range raw {
		live[p.Name] = true
		if w := c.written[p.Name]; w != nil && w.UID == p.UID && newer(w, p) {
			p = w
		}
		cidr, _ := netip.ParsePrefix(p.Spec.CIDR)
		use := usage{}
		if cidr.IsValid() {
			use = poolUsage(cidr.Masked(), blocks)
		}
		hasFinalizer := slices.Contains(p.Finalizers, v1alpha1.IPPoolFinalizer)
		switch {
		case p.DeletionTimestamp == nil && !hasFinalizer:
			q := p.DeepCopy()
			q.Finalizers = append(q.Finalizers, v1alpha1.IPPoolFinalizer)
			updated, err := c.cfg.Client.IPPools().Update(ctx, q, metav1.UpdateOptions{})
			if err != nil {
				errs = append(errs, fmt.Errorf("controller: adding the finalizer to pool %s: %w", p.Name, err))
				continue
			}
			p = updated
			c.written[p.Name] = updated
		case p.DeletionTimestamp != nil && hasFinalizer:
			done, err := c.finishDeletion(ctx, p, cidr)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if done {
				continue
			}
		}
		if err := c.syncStatus(ctx, p, set, use, s); err != nil {
			errs = append(errs, err)
		}
	}
	for name := range c.written {
		if !live[name] {
			delete(c.written, name)
		}
	}
	return errors.Join(errs...)
}

func newer(x, y *v1alpha1.IPPool) bool {
	c, err := resourceversion.CompareResourceVersion(x.ResourceVersion, y.ResourceVersion)
	return err == nil && c > 0
}

// finishDeletion lets a deleted pool go once no address in it is allocated:
// it deletes the pool's empty blocks, then removes the finalizer. The count
// comes from a live list, not the cache, so that an allocation the cache has
// not seen yet keeps the pool.
func (c *Controller) finishDeletion(ctx context.Context, p *v1alpha1.IPPool, cidr netip.Prefix) (bool, error) {
	list, err := c.cfg.Client.IPAMBlocks().List(ctx, metav1.ListOptions{})
	if err != nil {
		return false, fmt.Errorf("controller: listing blocks for deleted pool %s: %w", p.Name, err)
	}
	var mine []*v1alpha1.IPAMBlock
	for i := range list.Items {
		mine = append(mine, &list.Items[i])
	}
	if cidr.IsValid() {
		if use := poolUsage(cidr.Masked(), mine); use.addresses > 0 {
			return false, nil // status says why it waits
		}
		for _, b := range mine {
			if bp, err := netip.ParsePrefix(b.Spec.CIDR); err == nil && bp.Bits() >= cidr.Bits() && cidr.Masked().Contains(bp.Addr()) {
				if err := c.deleteIfEmpty(ctx, b.Name, b.Spec.Affinity); err != nil {
					return false, err
				}
			}
		}
	}
	q := p.DeepCopy()
	q.Finalizers = slices.DeleteFunc(q.Finalizers, func(f string) bool { return f == v1alpha1.IPPoolFinalizer })
	if _, err := c.cfg.Client.IPPools().Update(ctx, q, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("controller: removing the finalizer of deleted pool %s: %w", p.Name, err)
	}
	c.log.Info("deleted pool released", "op", "pool", "pool", p.Name)
	return true, nil
}

// syncStatus writes the pool's status if it changed, and emits the events
// of its transitions.
func (c *Controller) syncStatus(ctx context.Context, p *v1alpha1.IPPool, set pools.Set, use usage, s pools.Settings) error {
	st := p.Status.DeepCopy()
	st.BlocksInUse, st.AddressesInUse = use.blocks, use.addresses
	valid, ok := set.Get(p.Name)
	if ok {
		st.Blocks = valid.Layout.Blocks()
		st.AddressesFree = max(0, valid.Layout.Addresses()-use.addresses)
	} else {
		st.Blocks, st.AddressesFree = 0, 0
	}
	cond := func(typ string, status bool, reason, msg string) {
		v := metav1.ConditionFalse
		if status {
			v = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: typ, Status: v, Reason: reason, Message: msg, ObservedGeneration: p.Generation,
		})
	}
	if err := set.Invalid[p.Name]; err != nil {
		cond(v1alpha1.IPPoolValid, false, "Invalid", err.Error())
	} else {
		cond(v1alpha1.IPPoolValid, true, "Valid", "the agents allocate from this pool")
	}
	switch {
	case !ok:
		meta.RemoveStatusCondition(&st.Conditions, v1alpha1.IPPoolExhausted)
	case st.AddressesFree == 0:
		cond(v1alpha1.IPPoolExhausted, true, "NoFreeAddress", fmt.Sprintf("all %d addresses are allocated", use.addresses))
	case s.StrictAffinity && use.blocks >= st.Blocks:
		cond(v1alpha1.IPPoolExhausted, true, "NoFreeBlock", fmt.Sprintf("every block is claimed and strictAffinity forbids borrowing: a node whose blocks are full cannot allocate (%d addresses free inside other nodes' blocks)", st.AddressesFree))
	default:
		cond(v1alpha1.IPPoolExhausted, false, "AddressesFree", fmt.Sprintf("%d of %d addresses free", st.AddressesFree, valid.Layout.Addresses()))
	}
	if p.DeletionTimestamp != nil && use.addresses > 0 {
		cond(v1alpha1.IPPoolDeletionBlocked, true, "AddressesAllocated", fmt.Sprintf(
			"%d addresses of this pool are still allocated; the pool is removed once they are released (delete the pods using them)", use.addresses))
	} else {
		meta.RemoveStatusCondition(&st.Conditions, v1alpha1.IPPoolDeletionBlocked)
	}
	if equality.Semantic.DeepEqual(*st, p.Status) {
		return nil
	}
	q := p.DeepCopy()
	q.Status = *st
	out, err := c.cfg.Client.IPPools().UpdateStatus(ctx, q, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("controller: updating the status of pool %s: %w", p.Name, err)
	}
	c.written[p.Name] = out
	c.events(p, st, valid, ok)
	return nil
}

// events reports transitions between the old and new status.
func (c *Controller) events(p *v1alpha1.IPPool, st *v1alpha1.IPPoolStatus, valid pools.Pool, ok bool) {
	if ok {
		total := float64(valid.Layout.Addresses())
		before, after := float64(p.Status.AddressesInUse)/total, float64(st.AddressesInUse)/total
		if before < NearlyFull && after >= NearlyFull {
			c.recorder.Eventf(p, corev1.EventTypeWarning, "PoolNearlyFull",
				"pool %s (%s) is %.0f%% used: %d of %d addresses allocated", p.Name, p.Spec.CIDR, after*100, st.AddressesInUse, valid.Layout.Addresses())
		}
	}
	was := meta.IsStatusConditionTrue(p.Status.Conditions, v1alpha1.IPPoolExhausted)
	if now := meta.FindStatusCondition(st.Conditions, v1alpha1.IPPoolExhausted); now != nil && now.Status == metav1.ConditionTrue && !was {
		c.recorder.Eventf(p, corev1.EventTypeWarning, "PoolExhausted", "pool %s (%s) exhausted: %s", p.Name, p.Spec.CIDR, now.Message)
	}
	if now := meta.FindStatusCondition(st.Conditions, v1alpha1.IPPoolDeletionBlocked); now != nil &&
		!meta.IsStatusConditionTrue(p.Status.Conditions, v1alpha1.IPPoolDeletionBlocked) {
		c.recorder.Eventf(p, corev1.EventTypeWarning, "DeletionBlocked", "pool %s: %s", p.Name, now.Message)
	}
	if now := meta.FindStatusCondition(st.Conditions, v1alpha1.IPPoolValid); now != nil && now.Status == metav1.ConditionFalse &&
		!meta.IsStatusConditionFalse(p.Status.Conditions, v1alpha1.IPPoolValid) {
		c.recorder.Eventf(p, corev1.EventTypeWarning, "InvalidPool", "pool %s is ignored: %s", p.Name, now.Message)
	}
}
