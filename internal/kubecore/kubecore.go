// Package kubecore is the agent's client for the few Kubernetes core types
// it uses: Nodes, Pods, Secrets, Events and Leases.
//
// It exists for memory's sake. client-go's typed clients all import
// k8s.io/client-go/kubernetes/scheme, which registers every API group of
// k8s.io/api; linked into the agent that costs ~10 MiB of resident memory
// (docs/design/0008). These clients are client-go's own generic ones
// (gentype) over a scheme that knows only core/v1 and coordination/v1.
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
	"k8s.io/client-go/gentype"
	"k8s.io/client-go/rest"
)

// Scheme knows core/v1 and coordination/v1 and nothing else.
var Scheme = runtime.NewScheme()

var (
	codecs         = serializer.NewCodecFactory(Scheme)
	parameterCodec = runtime.NewParameterCodec(Scheme)
)

func init() {
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, coordinationv1.AddToScheme} {
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

// The kinds, by name.
type (
	Nodes   = Resource[*corev1.Node, *corev1.NodeList]
	Pods    = Resource[*corev1.Pod, *corev1.PodList]
	Secrets = Resource[*corev1.Secret, *corev1.SecretList]
	Events  = Resource[*corev1.Event, *corev1.EventList]
	Leases  = Resource[*coordinationv1.Lease, *coordinationv1.LeaseList]
)

// Interface is the core API as the agent's packages take it.
type Interface interface {
	Nodes() Nodes
	Pods(namespace string) Pods
	Secrets(namespace string) Secrets
	Events(namespace string) Events
	Leases(namespace string) Leases
}

// Client implements Interface against an API server.
type Client struct {
	core, coordination rest.Interface
}

var _ Interface = (*Client)(nil)

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
	return &Client{core: core, coordination: coord}, nil
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
	return gentype.NewClientWithList[*corev1.Node, *corev1.NodeList]("nodes", c.core, parameterCodec, "",
		func() *corev1.Node { return &corev1.Node{} }, func() *corev1.NodeList { return &corev1.NodeList{} })
}

// Pods implements Interface.
func (c *Client) Pods(namespace string) Pods {
	return gentype.NewClientWithList[*corev1.Pod, *corev1.PodList]("pods", c.core, parameterCodec, namespace,
		func() *corev1.Pod { return &corev1.Pod{} }, func() *corev1.PodList { return &corev1.PodList{} })
}

// Secrets implements Interface.
func (c *Client) Secrets(namespace string) Secrets {
	return gentype.NewClientWithList[*corev1.Secret, *corev1.SecretList]("secrets", c.core, parameterCodec, namespace,
		func() *corev1.Secret { return &corev1.Secret{} }, func() *corev1.SecretList { return &corev1.SecretList{} })
}

// Events implements Interface.
func (c *Client) Events(namespace string) Events {
	return gentype.NewClientWithList[*corev1.Event, *corev1.EventList]("events", c.core, parameterCodec, namespace,
		func() *corev1.Event { return &corev1.Event{} }, func() *corev1.EventList { return &corev1.EventList{} })
}

// Leases implements Interface.
func (c *Client) Leases(namespace string) Leases {
	return gentype.NewClientWithList[*coordinationv1.Lease, *coordinationv1.LeaseList]("leases", c.coordination, parameterCodec, namespace,
		func() *coordinationv1.Lease { return &coordinationv1.Lease{} }, func() *coordinationv1.LeaseList { return &coordinationv1.LeaseList{} })
}
