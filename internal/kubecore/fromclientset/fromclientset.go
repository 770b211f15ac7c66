// Package fromclientset adapts a client-go clientset to kubecore.Interface
// and a generated rhizome.dev client to kubecore.Rhizome,
// for programs that link the clientset anyway (rhizomectl, the lab) and for
// tests (k8s.io/client-go/kubernetes/fake). The agent must not import it:
// it links every API group (docs/design/0008).
package fromclientset

import (
	"k8s.io/client-go/kubernetes"

	rzv1 "github.com/rhizome-net/rhizome/crds/client/clientset/versioned/typed/crds/v1alpha1"

	"github.com/rhizome-net/rhizome/internal/kubecore"
)

// Wrap returns cs as a kubecore.Interface.
func Wrap(cs kubernetes.Interface) kubecore.Interface { return clientset{cs} }

type clientset struct{ cs kubernetes.Interface }

func (c clientset) Nodes() kubecore.Nodes              { return c.cs.CoreV1().Nodes() }
func (c clientset) Pods(ns string) kubecore.Pods       { return c.cs.CoreV1().Pods(ns) }
func (c clientset) Secrets(ns string) kubecore.Secrets { return c.cs.CoreV1().Secrets(ns) }
func (c clientset) Events(ns string) kubecore.Events   { return c.cs.CoreV1().Events(ns) }
func (c clientset) Leases(ns string) kubecore.Leases   { return c.cs.CoordinationV1().Leases(ns) }

// Rhizome returns a generated rhizome.dev client (clientset.RhizomeV1alpha1())
// as a kubecore.Rhizome.
func Rhizome(c rzv1.RhizomeV1alpha1Interface) kubecore.Rhizome { return rhizome{c} }

type rhizome struct{ c rzv1.RhizomeV1alpha1Interface }

func (r rhizome) IPPools() kubecore.IPPools       { return r.c.IPPools() }
func (r rhizome) IPAMBlocks() kubecore.IPAMBlocks { return r.c.IPAMBlocks() }
func (r rhizome) IPAMConfigurations() kubecore.IPAMConfigurations {
	return r.c.IPAMConfigurations()
}
func (r rhizome) BGPConfigurations() kubecore.BGPConfigurations { return r.c.BGPConfigurations() }
func (r rhizome) BGPPeers() kubecore.BGPPeers                   { return r.c.BGPPeers() }
func (r rhizome) RhizomeNodes() kubecore.RhizomeNodes           { return r.c.RhizomeNodes() }
