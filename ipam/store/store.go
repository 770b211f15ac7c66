// Package store writes IPAMBlocks safely: every change is a compare-and-swap
// on the object's resourceVersion (an update, or a delete with a
// resourceVersion precondition), retried on conflict after a jittered backoff
// with the function re-applied to a fresh read. Nothing is ever written from a
// stale copy, so two writers (a node allocating, another node borrowing, the
// garbage collector, an operator's CLI) can never lose each other's changes.
//
// It also holds the small rules about a block object that every writer must
// apply the same way (the status summary, the empty-since stamp).
package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/internal/kubecore"
)

// Action is what a Modify function wants done with the block it was given.
type Action int

const (
	// Keep leaves the block unchanged: nothing is written.
	Keep Action = iota
	// Update writes the modified block.
	Update
	// Delete deletes the block, provided it has not changed since it was read.
	Delete
)

// Store does compare-and-swap writes of IPAMBlocks.
type Store struct {
	Blocks kubecore.IPAMBlocks
	// OnWrite, if set, is called for every write attempt sent to the API
	// server ("update", "delete"); OnConflict for every conflict that makes
	// Modify read again. They feed metrics.
	OnWrite    func(op string)
	OnConflict func()
}

// MaxAttempts bounds the conflict retries of one Modify.
const MaxAttempts = 20

// Modify reads the block live (not from a cache), applies fn to it and writes
// the result with compare-and-swap, retrying with a fresh read on conflict.
// fn may run several times and must decide from the block it is given only;
// it must not keep the pointer. An error from fn aborts without writing. A
// block that does not exist yields an error for which apierrors.IsNotFound is
// true. Modify returns the block as written (nil after a delete, the block as
// read for Keep).
func (s *Store) Modify(ctx context.Context, name string, fn func(*v1alpha1.IPAMBlock) (Action, error)) (*v1alpha1.IPAMBlock, error) {
	for attempt := 0; ; attempt++ {
		b, err := s.Blocks.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("reading block %s: %w", name, err)
		}
		action, err := fn(b)
		if err != nil {
			return nil, err
		}
		switch action {
		case Keep:
			return b, nil
		case Update:
			Summarize(b)
			s.wrote("update")
			out, err := s.Blocks.Update(ctx, b, metav1.UpdateOptions{})
			if err == nil {
				return out, nil
			}
			if !apierrors.IsConflict(err) {
				return nil, fmt.Errorf("updating block %s: %w", name, err)
			}
		case Delete:
			s.wrote("delete")
			rv, uid := b.ResourceVersion, b.UID
			err := s.Blocks.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv, UID: &uid}})
			if err == nil || apierrors.IsNotFound(err) {
				return nil, nil
			}
			if !apierrors.IsConflict(err) {
				return nil, fmt.Errorf("deleting block %s: %w", name, err)
			}
		}
		if s.OnConflict != nil {
			s.OnConflict()
		}
		if attempt+1 >= MaxAttempts {
			return nil, fmt.Errorf("block %s: still conflicting after %d attempts", name, MaxAttempts)
		}
		if err := Backoff(ctx, attempt); err != nil {
			return nil, err
		}
	}
}

func (s *Store) wrote(op string) {
	if s.OnWrite != nil {
		s.OnWrite(op)
	}
}

// Backoff sleeps before retry number attempt (0-based): a random time up to
// 5ms·2^attempt, capped at one second. Full jitter spreads writers that
// collided, so they do not collide again in step.
func Backoff(ctx context.Context, attempt int) error {
	ceiling := 5 * time.Millisecond << min(attempt, 8)
	d := min(time.Duration(rand.Int64N(int64(ceiling)))+time.Millisecond, time.Second)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Retriable reports whether a failed write may succeed if sent again as is
// (the API server was overloaded, timed out or unreachable for a moment).
func Retriable(err error) bool {
	return apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err) ||
		utilnet.IsConnectionRefused(err) || utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err)
}

// Prefix parses a block's cidr.
func Prefix(b *v1alpha1.IPAMBlock) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(b.Spec.CIDR)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("block %s: cidr %q: %w", b.Name, b.Spec.CIDR, err)
	}
	return p, nil
}

// Summarize sets the block's status from its allocations, as every writer
// must in the same write that changes them.
func Summarize(b *v1alpha1.IPAMBlock) {
	b.Status.Allocated = int32(len(b.Spec.Allocations))
	b.Status.Borrowed = 0
	for _, a := range b.Spec.Allocations {
		if a.Node != "" && a.Node != b.Spec.Affinity {
			b.Status.Borrowed++
		}
	}
}

// StampEmpty keeps spec.emptySince in step with the allocations: set to now
// when the block has just become empty, cleared when it holds an address.
func StampEmpty(b *v1alpha1.IPAMBlock, now time.Time) {
	switch {
	case len(b.Spec.Allocations) > 0:
		b.Spec.EmptySince = nil
	case b.Spec.EmptySince == nil:
		t := metav1.NewTime(now)
		b.Spec.EmptySince = &t
	}
}

// RemoveHandle drops the allocations of handle that node made from b and
// reports how many it dropped. A node releases only what it allocated: a
// handle is a container ID and an interface, which another node's runtime
// may use too (or a hostile caller may name), so a release on one node must
// never free another node's pod address. An empty node matches every
// allocation (operators' tools).
func RemoveHandle(b *v1alpha1.IPAMBlock, handle, node string) int {
	n := len(b.Spec.Allocations)
	kept := b.Spec.Allocations[:0]
	for _, a := range b.Spec.Allocations {
		if a.Handle != handle || (node != "" && a.Node != node) {
			kept = append(kept, a)
		}
	}
	b.Spec.Allocations = kept
	return n - len(kept)
}
