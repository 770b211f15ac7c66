// Package ipam gives pods their addresses from IPAMBlocks, Calico-style: a pool
// is cut into blocks, a node claims blocks by affinity and hands out their
// addresses, and borrows single addresses from other nodes' blocks when no
// free block is left.
//
// The API server is the only store. A node serves allocations from its
// informer cache and writes each block with compare-and-swap on its
// resourceVersion; concurrent allocations of one node that land in the same
// block are batched into one update, so a burst of pod starts costs about one
// API write per block touched rather than one per pod. The seams:
//
//   - Allocator: Allocate / Release / ReleaseByAddress, used by the CNI server
//     of the agent (and the CLI). NodeAllocator is the real one, Fake the
//     stateful fake for other packages' unit tests.
//   - View: a Snapshot of the blocks that matter to routing (this node's
//     blocks, addresses it borrowed or lent, every node's blocks) and a signal
//     channel, for the BGP and routes reconcilers.
//
// The cluster-wide controllers (garbage collection, pool status, pool
// finalizers, blocks of deleted nodes) live in ipam/controller and run in one
// agent at a time, chosen by a Lease; NodeAllocator.Run starts them when
// Config.Controller is set.
package ipam

import (
	"context"
	"errors"
	"net/netip"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// Request asks for addresses for one pod interface.
type Request struct {
	// Handle identifies the holder: the container ID and the interface
	// name joined by a dot ("4f1c2a9e5d3b.eth0"). Required; at most 512
	// characters.
	Handle string
	// Namespace and Pod name the pod. The garbage collector releases an
	// address only when this pod no longer exists; without them, only when
	// the node that allocated it is gone.
	Namespace, Pod string
	// PodUID is the pod's UID (CNI_ARGS K8S_POD_UID), recorded so that the
	// garbage collector tells a pod re-created under the same name from the
	// one that holds the address. Optional.
	PodUID string
	// Families restricts the request to these address families (4, 6).
	// Empty means every family for which a pool applies to this node.
	Families []int
}

// Address is one allocated address.
type Address struct {
	Addr netip.Addr
	// Block is the IPAMBlock the address comes from.
	Block netip.Prefix
	// Pool is the name of the IPPool of the block.
	Pool string
	// Borrowed is true when the block belongs to another node: the address
	// must then be advertised as a host route (/32, /128) by this node.
	Borrowed bool
}

// Result holds one address per family, IPv4 first.
type Result struct {
	Addresses []Address
}

// ReleaseOptions qualify ReleaseByAddress, which operators use.
type ReleaseOptions struct {
	// Handle, if set, makes the release happen only if the address is held
	// by this handle.
	Handle string
	// Force releases the address even if the pod recorded for it still
	// exists. Without Force such a release is refused: the pod would keep
	// using an address that can be handed to another pod.
	Force bool
}

// Released describes an allocation that ReleaseByAddress removed.
type Released struct {
	Addr      netip.Addr
	Block     string
	Handle    string
	Namespace string
	Pod       string
	Node      string
}

// Allocator hands out and takes back pod addresses.
//
// All methods are safe for concurrent use. Errors are returned, never logged
// by the allocator; a context that ends makes a method return ctx.Err(), after
// which the write it was waiting for may still happen (the caller releases by
// handle, as CNI DEL does after a failed ADD).
type Allocator interface {
	// Allocate returns one address per applicable family for req.Handle.
	// It is idempotent: asking again with the same handle returns the same
	// addresses. It fails with an error wrapping ErrExhausted when no
	// address is left (or, with strictAffinity, no block is left), and
	// ErrNoPool when no enabled pool selects this node. When one family
	// fails, addresses this call took for the others are released again.
	Allocate(ctx context.Context, req Request) (Result, error)
	// Release frees every address held by handle that this node allocated
	// (never another node's allocations under the same handle), including
	// what an Allocate of the handle in flight writes (that Allocate fails
	// with ErrReleased). Releasing an unknown handle succeeds.
	Release(ctx context.Context, handle string) error
	// ReleaseByAddress frees one address, whichever node allocated it,
	// reading the block from the API server rather than a cache. It fails
	// with an error wrapping ErrNotAllocated if the address is free, and
	// refuses (ErrInUse) an address whose pod still exists unless
	// opts.Force is set.
	ReleaseByAddress(ctx context.Context, addr netip.Addr, opts ReleaseOptions) (Released, error)
}

// View is what the routing side needs to know about blocks.
type View interface {
	// Snapshot returns the current state. It never blocks on the network
	// and returns a copy the caller may keep.
	Snapshot() Snapshot
	// Subscribe returns a channel that receives a value (without blocking
	// the sender, capacity one) after every change to the snapshot. Each
	// call creates a new subscription: call it once per consumer, then on
	// every signal take a Snapshot and recompute everything.
	Subscribe() <-chan struct{}
}

// Snapshot is the routing-relevant IPAM state.
type Snapshot struct {
	// Node is this node's name.
	Node string
	// Ready is false until the caches have synced; the other fields are
	// empty until then, and must not be taken as "no blocks".
	Ready bool
	// Pools are the valid pools, IPv4 first.
	Pools []Pool
	// Blocks are every block of the cluster, in address order.
	Blocks []Block
	// Affine are this node's blocks: advertise them, and blackhole them
	// locally so that traffic to an unused address stops here.
	Affine []Block
	// Borrowed are addresses held by this node's pods in other nodes'
	// blocks: advertise them as /32 or /128.
	Borrowed []netip.Addr
	// Lent are addresses of this node's blocks held by other nodes' pods:
	// never blackhole them (the other node advertises them as host routes).
	Lent []netip.Addr
	// LentTo names the node holding each Lent address (the borrower, which
	// advertises it: route it there rather than blackhole it).
	LentTo map[netip.Addr]string
	// BorrowedBy are every block's addresses held by a pod of another node
	// than the block's, cluster-wide, with that node: the host routes each
	// node may announce (BGP's import policy judges our nodes' routes by
	// them and by the blocks' nodes).
	BorrowedBy map[netip.Addr]string
	// Generation changes whenever anything above may have changed (it
	// counts the signals of Subscribe), so that a consumer can skip
	// rebuilding what it derives from an unchanged snapshot.
	Generation uint64
}

// Block is one IPAMBlock.
type Block struct {
	CIDR netip.Prefix
	// Node is the block's affinity; empty for a block no node owns.
	Node string
	// Pool is the name of the valid pool holding the block, empty if none.
	Pool string
	// Allocated is the number of allocated addresses.
	Allocated int
}

// Pool is what the routing side needs to know about an IPPool.
type Pool struct {
	Name             string
	CIDR             netip.Prefix
	BlockBits        int
	Allocatable      bool
	NATOutgoing      bool
	DisableBGPExport bool
	IPIPMode         v1alpha1.EncapMode
	VXLANMode        v1alpha1.EncapMode
}

var (
	// ErrExhausted is wrapped by errors saying "pool … exhausted".
	ErrExhausted = errors.New("exhausted")
	// ErrNoPool means no enabled pool of a requested family selects this node.
	ErrNoPool = errors.New("no applicable IP pool")
	// ErrNotAllocated means an address to release is not allocated.
	ErrNotAllocated = errors.New("address not allocated")
	// ErrInUse means an address to release still belongs to an existing pod
	// (or, for a tunnel address, an existing node).
	ErrInUse = errors.New("address in use")
	// ErrReleased means an allocation was withdrawn because a Release of
	// the same handle ran while it was in flight.
	ErrReleased = errors.New("handle released while the allocation was in flight")
)

// TunnelHandlePrefix starts the handles of the agents' tunnel addresses
// ("rhizome-tunnel.<kind>.<node>"): never a CNI attachment's, and released
// by an operator only with force while the node exists.
const TunnelHandlePrefix = "rhizome-tunnel."

// MaxHandleLength is the longest handle the IPAMBlock schema accepts.
const MaxHandleLength = 512
