// Package informers builds the agent's shared informers: what client-go's
// and client-gen's informer factories do for the kinds the agent watches,
// without linking them (the factories import every API group, and our
// generated clientset imports client-go's discovery, which does too; see
// docs/design/0008). One Factory per set of informers; each kind's informer
// is created on first use and shared by everyone who asks for it.
package informers

import (
	"context"
	"reflect"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	listers "github.com/rhizome-net/rhizome/crds/client/listers/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/internal/kubecore"
)

// Lister lists and watches one kind; typed clients are ones.
type Lister[L runtime.Object] interface {
	List(ctx context.Context, opts metav1.ListOptions) (L, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// New is a shared index informer over r's List and Watch, indexed by
// namespace; tweak, if not nil, edits every list and watch request (a field
// selector, say).
func New[L runtime.Object](r Lister[L], example runtime.Object, resync time.Duration, tweak func(*metav1.ListOptions)) cache.SharedIndexInformer {
	if tweak == nil {
		tweak = func(*metav1.ListOptions) {}
	}
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			tweak(&o)
			return r.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			tweak(&o)
			return r.Watch(ctx, o)
		},
	}
	inf := cache.NewSharedIndexInformer(lw, example, resync,
		cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	_ = inf.SetTransform(dropManagedFields) // fails only once started
	return inf
}

// dropManagedFields is every informer's transform: no reader of a cache
// looks at server-side-apply bookkeeping, which can be the largest part of
// an object that several managers write (a RhizomeNode).
func dropManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// slimNode is the Nodes informer's transform: the cache keeps a Node's
// metadata (without annotations), spec and addresses, the fields Rhizome
// reads (names and UIDs, labels for selectors, InternalIPs). A Node as a
// kubelet writes it is mostly its image list, conditions, capacity and
// system information; a reflector caching every Node of a 5,000-node
// cluster held them all (docs/design/0018). Code reading other fields of a
// cached Node finds them empty.
func slimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	n.ManagedFields, n.Annotations = nil, nil
	n.Status = corev1.NodeStatus{Addresses: n.Status.Addresses}
	return n, nil
}

// slimRhizomeNode is the RhizomeNodes informer's transform: readers of the
// cache use the spec (addresses, VTEPs) that agents publish; the status
// each agent writes about itself (a reflector's lists every session) is
// left out. Code reading a cached RhizomeNode's status finds it empty.
func slimRhizomeNode(obj any) (any, error) {
	r, ok := obj.(*v1alpha1.RhizomeNode)
	if !ok {
		return obj, nil
	}
	r.ManagedFields = nil
	r.Status = v1alpha1.RhizomeNodeStatus{}
	return r, nil
}

// Factory holds informers by the type of object they cache and starts and
// stops them together, like client-go's factories.
type Factory struct {
	resync time.Duration

	mu        sync.Mutex
	informers map[reflect.Type]cache.SharedIndexInformer
	started   map[reflect.Type]bool
	stop      chan struct{}
	wg        sync.WaitGroup
	shutdown  bool
}

// NewFactory creates an empty Factory; resync is passed to every informer.
func NewFactory(resync time.Duration) *Factory {
	return &Factory{resync: resync, informers: map[reflect.Type]cache.SharedIndexInformer{},
		started: map[reflect.Type]bool{}, stop: make(chan struct{})}
}

// For returns the informer of example's type, creating it with create on
// first use.
func (f *Factory) For(example runtime.Object, create func(resync time.Duration) cache.SharedIndexInformer) cache.SharedIndexInformer {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := reflect.TypeOf(example)
	if inf, ok := f.informers[t]; ok {
		return inf
	}
	inf := create(f.resync)
	f.informers[t] = inf
	return inf
}

// Start runs every informer created so far that is not running yet, until
// stop closes or Shutdown.
func (f *Factory) Start(stop <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.shutdown {
		return
	}
	for t, inf := range f.informers {
		if f.started[t] {
			continue
		}
		f.started[t] = true
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			merged := make(chan struct{})
			go func() {
				select {
				case <-stop:
				case <-f.stop:
				}
				close(merged)
			}()
			inf.Run(merged)
		}()
	}
}

// WaitForCacheSync waits until every started informer has synced or stop
// closes, and reports each one's outcome.
func (f *Factory) WaitForCacheSync(stop <-chan struct{}) map[reflect.Type]bool {
	f.mu.Lock()
	started := map[reflect.Type]cache.SharedIndexInformer{}
	for t, inf := range f.informers {
		if f.started[t] {
			started[t] = inf
		}
	}
	f.mu.Unlock()
	res := map[reflect.Type]bool{}
	for t, inf := range started {
		res[t] = cache.WaitForCacheSync(stop, inf.HasSynced)
	}
	return res
}

// Shutdown stops every informer and waits for them.
func (f *Factory) Shutdown() {
	f.mu.Lock()
	if !f.shutdown {
		f.shutdown = true
		close(f.stop)
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// Rhizome is a Factory of rhizome.dev informers.
type Rhizome struct {
	*Factory
	c kubecore.Rhizome
}

// NewRhizome creates the rhizome.dev informers' factory over c.
func NewRhizome(c kubecore.Rhizome, resync time.Duration) *Rhizome {
	return &Rhizome{Factory: NewFactory(resync), c: c}
}

// IPPools is the informer of IPPools.
func (r *Rhizome) IPPools() cache.SharedIndexInformer {
	return r.For(&v1alpha1.IPPool{}, func(resync time.Duration) cache.SharedIndexInformer {
		return New[*v1alpha1.IPPoolList](r.c.IPPools(), &v1alpha1.IPPool{}, resync, nil)
	})
}

// IPPoolLister reads IPPools from their informer's cache.
func (r *Rhizome) IPPoolLister() listers.IPPoolLister {
	return listers.NewIPPoolLister(r.IPPools().GetIndexer())
}

// IPAMBlocks is the informer of IPAMBlocks.
func (r *Rhizome) IPAMBlocks() cache.SharedIndexInformer {
	return r.For(&v1alpha1.IPAMBlock{}, func(resync time.Duration) cache.SharedIndexInformer {
		return New[*v1alpha1.IPAMBlockList](r.c.IPAMBlocks(), &v1alpha1.IPAMBlock{}, resync, nil)
	})
}

// IPAMBlockLister reads IPAMBlocks from their informer's cache.
func (r *Rhizome) IPAMBlockLister() listers.IPAMBlockLister {
	return listers.NewIPAMBlockLister(r.IPAMBlocks().GetIndexer())
}

// IPAMConfigurations is the informer of IPAMConfigurations.
func (r *Rhizome) IPAMConfigurations() cache.SharedIndexInformer {
	return r.For(&v1alpha1.IPAMConfiguration{}, func(resync time.Duration) cache.SharedIndexInformer {
		return New[*v1alpha1.IPAMConfigurationList](r.c.IPAMConfigurations(), &v1alpha1.IPAMConfiguration{}, resync, nil)
	})
}

// IPAMConfigurationLister reads IPAMConfigurations from their informer's cache.
func (r *Rhizome) IPAMConfigurationLister() listers.IPAMConfigurationLister {
	return listers.NewIPAMConfigurationLister(r.IPAMConfigurations().GetIndexer())
}

// BGPConfigurations is the informer of BGPConfigurations.
func (r *Rhizome) BGPConfigurations() cache.SharedIndexInformer {
	return r.For(&v1alpha1.BGPConfiguration{}, func(resync time.Duration) cache.SharedIndexInformer {
		return New[*v1alpha1.BGPConfigurationList](r.c.BGPConfigurations(), &v1alpha1.BGPConfiguration{}, resync, nil)
	})
}

// BGPConfigurationLister reads BGPConfigurations from their informer's cache.
func (r *Rhizome) BGPConfigurationLister() listers.BGPConfigurationLister {
	return listers.NewBGPConfigurationLister(r.BGPConfigurations().GetIndexer())
}

// BGPPeers is the informer of BGPPeers.
func (r *Rhizome) BGPPeers() cache.SharedIndexInformer {
	return r.For(&v1alpha1.BGPPeer{}, func(resync time.Duration) cache.SharedIndexInformer {
		return New[*v1alpha1.BGPPeerList](r.c.BGPPeers(), &v1alpha1.BGPPeer{}, resync, nil)
	})
}

// BGPPeerLister reads BGPPeers from their informer's cache.
func (r *Rhizome) BGPPeerLister() listers.BGPPeerLister {
	return listers.NewBGPPeerLister(r.BGPPeers().GetIndexer())
}

// RhizomeNodes is the informer of RhizomeNodes, cached without their
// status (slimRhizomeNode).
func (r *Rhizome) RhizomeNodes() cache.SharedIndexInformer {
	return r.For(&v1alpha1.RhizomeNode{}, func(resync time.Duration) cache.SharedIndexInformer {
		inf := New[*v1alpha1.RhizomeNodeList](r.c.RhizomeNodes(), &v1alpha1.RhizomeNode{}, resync, nil)
		_ = inf.SetTransform(slimRhizomeNode)
		return inf
	})
}

// RhizomeNodeLister reads RhizomeNodes from their informer's cache.
func (r *Rhizome) RhizomeNodeLister() listers.RhizomeNodeLister {
	return listers.NewRhizomeNodeLister(r.RhizomeNodes().GetIndexer())
}

// Core is a Factory of core/v1 informers.
type Core struct {
	*Factory
	c kubecore.Interface
	// NodeTweak, if set, edits the Nodes informer's requests.
	NodeTweak func(*metav1.ListOptions)
	// SecretsNamespace scopes the Secrets informer (default: all).
	SecretsNamespace string
}

// NewCore creates the core/v1 informers' factory over c.
func NewCore(c kubecore.Interface, resync time.Duration) *Core {
	return &Core{Factory: NewFactory(resync), c: c}
}

// Nodes is the informer of Nodes, cached without most of their status
// (slimNode).
func (k *Core) Nodes() cache.SharedIndexInformer {
	return k.For(&corev1.Node{}, func(resync time.Duration) cache.SharedIndexInformer {
		inf := New[*corev1.NodeList](k.c.Nodes(), &corev1.Node{}, resync, k.NodeTweak)
		_ = inf.SetTransform(slimNode)
		return inf
	})
}

// NodeLister reads Nodes from their informer's cache.
func (k *Core) NodeLister() corelisters.NodeLister {
	return corelisters.NewNodeLister(k.Nodes().GetIndexer())
}

// Secrets is the informer of Secrets in SecretsNamespace.
func (k *Core) Secrets() cache.SharedIndexInformer {
	return k.For(&corev1.Secret{}, func(resync time.Duration) cache.SharedIndexInformer {
		return New[*corev1.SecretList](k.c.Secrets(k.SecretsNamespace), &corev1.Secret{}, resync, nil)
	})
}

// SecretLister reads Secrets from their informer's cache.
func (k *Core) SecretLister() corelisters.SecretLister {
	return corelisters.NewSecretLister(k.Secrets().GetIndexer())
}
