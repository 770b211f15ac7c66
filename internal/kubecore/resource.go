package kubecore

import (
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
)

// Object is what a resource holds: a typed API object (a pointer).
type Object interface {
	runtime.Object
	metav1.Object
}

// restResource is one kind of one API group over a REST client: the calls
// client-go's gentype makes, without gentype (it imports client-go's
// testing package, and with it managed fields, strategic merge patch and
// the OpenAPI models: ~40 packages the agent has no use for).
type restResource[T Object, L runtime.Object] struct {
	client    rest.Interface
	resource  string
	namespace string
	newObj    func() T
	newList   func() L
}

func (r restResource[T, L]) req(rq *rest.Request) *rest.Request {
	return rq.NamespaceIfScoped(r.namespace, r.namespace != "").Resource(r.resource)
}

// Get implements Resource.
func (r restResource[T, L]) Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error) {
	out := r.newObj()
	err := r.req(r.client.Get()).Name(name).VersionedParams(&opts, parameterCodec).Do(ctx).Into(out)
	return out, err
}

// List implements Resource.
func (r restResource[T, L]) List(ctx context.Context, opts metav1.ListOptions) (L, error) {
	out := r.newList()
	rq := r.req(r.client.Get()).VersionedParams(&opts, parameterCodec)
	if opts.TimeoutSeconds != nil {
		rq = rq.Timeout(time.Duration(*opts.TimeoutSeconds) * time.Second)
	}
	err := rq.Do(ctx).Into(out)
	return out, err
}

// Watch implements Resource.
func (r restResource[T, L]) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	rq := r.req(r.client.Get()).VersionedParams(&opts, parameterCodec)
	if opts.TimeoutSeconds != nil {
		rq = rq.Timeout(time.Duration(*opts.TimeoutSeconds) * time.Second)
	}
	return rq.Watch(ctx)
}

// Create implements Resource.
func (r restResource[T, L]) Create(ctx context.Context, obj T, opts metav1.CreateOptions) (T, error) {
	out := r.newObj()
	err := r.req(r.client.Post()).VersionedParams(&opts, parameterCodec).Body(obj).Do(ctx).Into(out)
	return out, err
}

// Update implements Resource.
func (r restResource[T, L]) Update(ctx context.Context, obj T, opts metav1.UpdateOptions) (T, error) {
	out := r.newObj()
	err := r.req(r.client.Put()).Name(obj.GetName()).VersionedParams(&opts, parameterCodec).Body(obj).Do(ctx).Into(out)
	return out, err
}

// UpdateStatus implements StatusResource.
func (r restResource[T, L]) UpdateStatus(ctx context.Context, obj T, opts metav1.UpdateOptions) (T, error) {
	out := r.newObj()
	err := r.req(r.client.Put()).Name(obj.GetName()).SubResource("status").VersionedParams(&opts, parameterCodec).
		Body(obj).Do(ctx).Into(out)
	return out, err
}

// Patch implements Resource.
func (r restResource[T, L]) Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (T, error) {
	out := r.newObj()
	err := r.req(r.client.Patch(pt)).Name(name).SubResource(subresources...).VersionedParams(&opts, parameterCodec).
		Body(data).Do(ctx).Into(out)
	return out, err
}

// Delete implements Resource.
func (r restResource[T, L]) Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error {
	return r.req(r.client.Delete()).Name(name).Body(&opts).Do(ctx).Error()
}
