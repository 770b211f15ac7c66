// Package kubecore is the agent's client for the few Kubernetes core types
// it uses (Nodes, Pods, Secrets, Events and Leases)
//
// and for rhizome.dev's own kinds.
//
// It exists for memory's sake (docs/design/0008). client-go's typed
// clients all import k8s.io/client-go/kubernetes/scheme, which registers
// every API group of k8s.io/api, and its generic gentype clients (which
// client-gen's output uses) import client-go's testing package with managed
// fields, strategic merge patch and the OpenAPI models; linked into the
// agent they cost ~15 MiB of resident memory. These are plain REST calls
// over a scheme that knows only core/v1, coordination/v1 and rhizome.dev.
package kubecore

import (
	"context"
	"fmt"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// Scheme knows core/v1, coordination/v1 and rhizome.dev/v1alpha1, nothing
// else.
var Scheme = runtime.NewScheme()

var (
	codecs         = serializer.NewCodecFactory(Scheme)
	parameterCodec = runtime.NewParameterCodec(Scheme)
)

func init() {
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, coordinationv1.AddToScheme, v1alpha1.AddToScheme} {
		if err := add(Scheme); err != nil {
			panic(err)
		}
	}
	metav1.AddToGroupVersion(Scheme, schema.GroupVersion{Version: "v1"})
}

// Resource is what the agent does with one kind: client-go's typed
// clients and their fakes satisfy it, so tests can use
// k8s.io/client-go/kubernetes/fake.
type Resource[T runtime.Object, L runtime.Object] interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
	List(ctx context.Context, opts metav1.ListOptions) (L, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
	Create(ctx context.Context, obj T, opts metav1.CreateOptions) (T, error)
	Update(ctx context.Context, obj T, opts metav1.UpdateOptions) (T, error)
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (T, error)
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
}

// StatusResource is a Resource with a status subresource.
type StatusResource[T runtime.Object, L runtime.Object] interface {
	Resource[T, L]
	UpdateStatus(ctx context.Context, obj T, opts metav1.UpdateOptions) (T, error)
}

// The kinds, by name.
type (
	Nodes   = Resource[*corev1.Node, *corev1.NodeList]
	Pods    = Resource[*corev1.Pod, *corev1.PodList]
	Secrets = Resource[*corev1.Secret, *corev1.SecretList]
	Events  = Resource[*corev1.Event, *corev1.EventList]
	Leases  = Resource[*coordinationv1.Lease, *coordinationv1.LeaseList]

	IPPools            = StatusResource[*v1alpha1.IPPool, *v1alpha1.IPPoolList]
	IPAMBlocks         = Resource[*v1alpha1.IPAMBlock, *v1alpha1.IPAMBlockList]
	IPAMConfigurations = Resource[*v1alpha1.IPAMConfiguration, *v1alpha1.IPAMConfigurationList]
	BGPConfigurations  = Resource[*v1alpha1.BGPConfiguration, *v1alpha1.BGPConfigurationList]
	BGPPeers           = Resource[*v1alpha1.BGPPeer, *v1alpha1.BGPPeerList]
	RhizomeNodes       = StatusResource[*v1alpha1.RhizomeNode, *v1alpha1.RhizomeNodeList]
)

// Rhizome is the rhizome.dev API as the agent's packages take it. The
// generated typed client has the same methods but returns its own
// interface types; fromclientset adapts it.
type Rhizome interface {
	IPPools() IPPools
	IPAMBlocks() IPAMBlocks
	IPAMConfigurations() IPAMConfigurations
	BGPConfigurations() BGPConfigurations
	BGPPeers() BGPPeers
	RhizomeNodes() RhizomeNodes
}

// Interface is the core API as the agent's packages take it.
type Interface interface {
	Nodes() Nodes
	Pods(namespace string) Pods
	Secrets(namespace string) Secrets
	Events(namespace string) Events
	Leases(namespace string) Leases
}

// Client implements Interface and Rhizome against an API server.
type Client struct {
	core, coordination, rhizome rest.Interface
}

var (
	_ Interface = (*Client)(nil)
	_ Rhizome   = (*Client)(nil)
)

// NewForConfig builds the clients; c is not modified.
func NewForConfig(c *rest.Config) (*Client, error) {
	core, err := restClient(c, "/api", corev1.SchemeGroupVersion)
	if err != nil {
		return nil, err
	}
	coord, err := restClient(c, "/apis", coordinationv1.SchemeGroupVersion)
	if err != nil {
		return nil, err
	}
	rz, err := restClient(c, "/apis", v1alpha1.SchemeGroupVersion)
	if err != nil {
		return nil, err
	}
	return &Client{core: core, coordination: coord, rhizome: rz}, nil
}

func restClient(c *rest.Config, path string, gv schema.GroupVersion) (rest.Interface, error) {
	cfg := rest.CopyConfig(c)
	cfg.APIPath, cfg.GroupVersion = path, &gv
	cfg.NegotiatedSerializer = rest.CodecFactoryForGeneratedClient(Scheme, codecs).WithoutConversion()
	if cfg.UserAgent == "" {
		cfg.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client for %s: %w", gv, err)
	}
	return rc, nil
}

// Nodes implements Interface.
func (c *Client) Nodes() Nodes {
	return restResource[*corev1.Node, *corev1.NodeList]{c.core, "nodes", "",
		func() *corev1.Node { return &corev1.Node{} }, func() *corev1.NodeList { return &corev1.NodeList{} }}
}

// Pods implements Interface.
func (c *Client) Pods(namespace string) Pods {
	return restResource[*corev1.Pod, *corev1.PodList]{c.core, "pods", namespace,
		func() *corev1.Pod { return &corev1.Pod{} }, func() *corev1.PodList { return &corev1.PodList{} }}
}

// Secrets implements Interface.
func (c *Client) Secrets(namespace string) Secrets {
	return restResource[*corev1.Secret, *corev1.SecretList]{c.core, "secrets", namespace,
		func() *corev1.Secret { return &corev1.Secret{} }, func() *corev1.SecretList { return &corev1.SecretList{} }}
}

// Events implements Interface.
func (c *Client) Events(namespace string) Events {
	return restResource[*corev1.Event, *corev1.EventList]{c.core, "events", namespace,
		func() *corev1.Event { return &corev1.Event{} }, func() *corev1.EventList { return &corev1.EventList{} }}
}

// Leases implements Interface.
func (c *Client) Leases(namespace string) Leases {
	return restResource[*coordinationv1.Lease, *coordinationv1.LeaseList]{c.coordination, "leases", namespace,
		func() *coordinationv1.Lease { return &coordinationv1.Lease{} }, func() *coordinationv1.LeaseList { return &coordinationv1.LeaseList{} }}
}

func rz[T Object, L runtime.Object](c *Client, resource string, newObj func() T, newList func() L) restResource[T, L] {
	return restResource[T, L]{c.rhizome, resource, "", newObj, newList}
}

// IPPools implements Rhizome.
func (c *Client) IPPools() IPPools {
	return rz(c, "ippools", func() *v1alpha1.IPPool { return &v1alpha1.IPPool{} }, func() *v1alpha1.IPPoolList { return &v1alpha1.IPPoolList{} })
}

// IPAMBlocks implements Rhizome.
func (c *Client) IPAMBlocks() IPAMBlocks {
	return rz(c, "ipamblocks", func() *v1alpha1.IPAMBlock { return &v1alpha1.IPAMBlock{} }, func() *v1alpha1.IPAMBlockList { return &v1alpha1.IPAMBlockList{} })
}

// IPAMConfigurations implements Rhizome.
func (c *Client) IPAMConfigurations() IPAMConfigurations {
	return rz(c, "ipamconfigurations", func() *v1alpha1.IPAMConfiguration { return &v1alpha1.IPAMConfiguration{} },
		func() *v1alpha1.IPAMConfigurationList { return &v1alpha1.IPAMConfigurationList{} })
}

// BGPConfigurations implements Rhizome.
func (c *Client) BGPConfigurations() BGPConfigurations {
	return rz(c, "bgpconfigurations", func() *v1alpha1.BGPConfiguration { return &v1alpha1.BGPConfiguration{} },
		func() *v1alpha1.BGPConfigurationList { return &v1alpha1.BGPConfigurationList{} })
}

// BGPPeers implements Rhizome.
func (c *Client) BGPPeers() BGPPeers {
	return rz(c, "bgppeers", func() *v1alpha1.BGPPeer { return &v1alpha1.BGPPeer{} }, func() *v1alpha1.BGPPeerList { return &v1alpha1.BGPPeerList{} })
}

// RhizomeNodes implements Rhizome.
func (c *Client) RhizomeNodes() RhizomeNodes {
	return rz(c, "rhizomenodes", func() *v1alpha1.RhizomeNode { return &v1alpha1.RhizomeNode{} },
		func() *v1alpha1.RhizomeNodeList { return &v1alpha1.RhizomeNodeList{} })
}
