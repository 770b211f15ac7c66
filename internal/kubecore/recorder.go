package kubecore

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Recorder writes Events about API objects, in the background. It is the
// part of client-go's tools/record the agent uses, without its event
// correlation (which needs strategic merge patch and, through it, the
// OpenAPI models): the callers emit an event only when a condition
// changes, so there is nothing to aggregate.
type Recorder struct {
	Events    func(namespace string) Events
	Component string // Event.Source.Component
	Host      string // Event.Source.Host
	Logger    *slog.Logger
}

// Eventf records an event about obj (which Scheme must know) with a
// printf-style message. Errors are logged, never returned: an event is
// not worth failing the caller's work for.
func (r *Recorder) Eventf(obj Object, eventType, reason, format string, args ...any) {
	ev, err := r.event(obj, eventType, reason, fmt.Sprintf(format, args...), time.Now())
	if err != nil {
		r.log().Warn("event not recorded", "op", "event", "reason", reason, "error", err)
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := r.Events(ev.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
			r.log().Warn("event not recorded", "op", "event", "reason", reason, "object", obj.GetName(), "error", err)
		}
	}()
}

// event builds the Event as client-go's recorder does: named after the
// object and the time, in the object's namespace or in "default" for a
// cluster-scoped object.
func (r *Recorder) event(obj Object, eventType, reason, msg string, now time.Time) (*corev1.Event, error) {
	kinds, _, err := Scheme.ObjectKinds(obj)
	if err != nil {
		return nil, fmt.Errorf("event about %s: %w", obj.GetName(), err)
	}
	gvk := kinds[0]
	ns := obj.GetNamespace()
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	t := metav1.NewTime(now)
	return &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%v.%x", obj.GetName(), now.UnixNano()), Namespace: ns},
		InvolvedObject: corev1.ObjectReference{
			Kind: gvk.Kind, APIVersion: gvk.GroupVersion().String(),
			Name: obj.GetName(), Namespace: obj.GetNamespace(), UID: obj.GetUID(), ResourceVersion: obj.GetResourceVersion(),
		},
		Reason: reason, Message: msg, Type: eventType, Count: 1,
		FirstTimestamp: t, LastTimestamp: t,
		Source: corev1.EventSource{Component: r.Component, Host: r.Host},
	}, nil
}

func (r *Recorder) log() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.Default()
}
