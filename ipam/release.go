package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/internal/kubecore"
	"github.com/rhizome-net/rhizome/ipam/blockmath"
	"github.com/rhizome-net/rhizome/ipam/pools"
	"github.com/rhizome-net/rhizome/ipam/store"
)

// ReleaseByAddress implements Allocator.
func (a *NodeAllocator) ReleaseByAddress(ctx context.Context, addr netip.Addr, opts ReleaseOptions) (Released, error) {
	if err := a.waitReady(ctx); err != nil {
		return Released{}, err
	}
	return releaseAddress(ctx, a.cfg.Client, a.cfg.Kube, a.store, addr, opts)
}

// ReleaseAddress frees one allocated address without a running allocator,
// for operators' tools (the CLI's ipam release, with --force mapping to
// opts.Force). It reads everything live from the API server and writes
// with compare-and-swap, so it is safe while agents run.
func ReleaseAddress(ctx context.Context, client kubecore.Rhizome, kube kubecore.Interface, addr netip.Addr, opts ReleaseOptions) (Released, error) {
	s := &store.Store{Blocks: client.IPAMBlocks()}
	return releaseAddress(ctx, client, kube, s, addr, opts)
}

func releaseAddress(ctx context.Context, client kubecore.Rhizome, kube kubecore.Interface, s *store.Store, addr netip.Addr, opts ReleaseOptions) (Released, error) {
	addr = addr.Unmap()
	name, err := findBlock(ctx, client, addr)
	if err != nil {
		return Released{}, err
	}
	var out Released
	_, err = s.Modify(ctx, name, func(b *v1alpha1.IPAMBlock) (store.Action, error) {
		i := slices.IndexFunc(b.Spec.Allocations, func(al v1alpha1.IPAMAllocation) bool {
			p, err := netip.ParseAddr(al.Address)
			return err == nil && p == addr
		})
		if i < 0 {
			return store.Keep, fmt.Errorf("ipam: releasing %v: %w (block %s holds no allocation for it)", addr, ErrNotAllocated, name)
		}
		al := b.Spec.Allocations[i]
		if opts.Handle != "" && al.Handle != opts.Handle {
			return store.Keep, fmt.Errorf("ipam: releasing %v: held by handle %s, not %s", addr, al.Handle, opts.Handle)
		}
		if !opts.Force && strings.HasPrefix(al.Handle, TunnelHandlePrefix) && al.Node != "" {
			// A node's tunnel address (its VTEP): in use while the node
			// exists, whatever pod runs there.
			_, err := kube.Nodes().Get(ctx, al.Node, metav1.GetOptions{})
			switch {
			case err == nil:
				return store.Keep, fmt.Errorf("ipam: releasing %v: %w: it is the tunnel address of node %s, which still exists; the node's tunnel device uses it (force the release only if the agent there is gone for good: it allocates a new one)", addr, ErrInUse, al.Node)
			case !apierrors.IsNotFound(err):
				return store.Keep, fmt.Errorf("ipam: releasing %v: checking node %s: %w", addr, al.Node, err)
			}
		}
		if !opts.Force && al.Pod != "" {
			_, err := kube.Pods(al.Namespace).Get(ctx, al.Pod, metav1.GetOptions{})
			switch {
			case err == nil:
				return store.Keep, fmt.Errorf("ipam: releasing %v: %w: pod %s/%s still exists; delete the pod, or force the release (the pod would keep an address that can be given to another pod)", addr, ErrInUse, al.Namespace, al.Pod)
			case !apierrors.IsNotFound(err):
				return store.Keep, fmt.Errorf("ipam: releasing %v: checking pod %s/%s: %w", addr, al.Namespace, al.Pod, err)
			}
		}
		out = Released{Addr: addr, Block: name, Handle: al.Handle, Namespace: al.Namespace, Pod: al.Pod, Node: al.Node}
		b.Spec.Allocations = slices.Delete(b.Spec.Allocations, i, i+1)
		store.StampEmpty(b, metav1.Now().Time)
		return store.Update, nil
	})
	if apierrors.IsNotFound(err) {
		return Released{}, fmt.Errorf("ipam: releasing %v: %w (block %s does not exist)", addr, ErrNotAllocated, name)
	}
	return out, err
}

// findBlock names the block holding addr: computed from the pool that holds
// it, or, for a block whose pool is gone, found among all blocks.
func findBlock(ctx context.Context, client kubecore.Rhizome, addr netip.Addr) (string, error) {
	list, err := client.IPPools().List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", fmt.Errorf("ipam: listing pools: %w", err)
	}
	var items []*v1alpha1.IPPool
	for i := range list.Items {
		items = append(items, &list.Items[i])
	}
	if p, ok := pools.From(items).ForAddr(addr); ok {
		blk, _ := p.Layout.BlockOf(addr)
		return blockmath.Name(blk), nil
	}
	blocks, err := client.IPAMBlocks().List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", fmt.Errorf("ipam: listing blocks: %w", err)
	}
	for _, b := range blocks.Items {
		if p, err := store.Prefix(&b); err == nil && p.Contains(addr) {
			return b.Name, nil
		}
	}
	return "", fmt.Errorf("ipam: releasing %v: %w (no pool or block contains it)", addr, ErrNotAllocated)
}
