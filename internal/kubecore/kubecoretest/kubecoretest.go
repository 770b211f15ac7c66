// Package kubecoretest adapts a client-go clientset (typically
// k8s.io/client-go/kubernetes/fake) to kubecore.Interface for tests. The
// agent's own packages must not import it: it links every API group.
package kubecoretest

import (
	"k8s.io/client-go/kubernetes"

	"github.com/rhizome-net/rhizome/internal/kubecore"
)

// FromClientset returns cs as a kubecore.Interface.
func FromClientset(cs kubernetes.Interface) kubecore.Interface { return clientset{cs} }

type clientset struct{ cs kubernetes.Interface }

func (c clientset) Nodes() kubecore.Nodes              { return c.cs.CoreV1().Nodes() }
func (c clientset) Pods(ns string) kubecore.Pods       { return c.cs.CoreV1().Pods(ns) }
func (c clientset) Secrets(ns string) kubecore.Secrets { return c.cs.CoreV1().Secrets(ns) }
func (c clientset) Events(ns string) kubecore.Events   { return c.cs.CoreV1().Events(ns) }
func (c clientset) Leases(ns string) kubecore.Leases   { return c.cs.CoordinationV1().Leases(ns) }
