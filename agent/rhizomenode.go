package agent

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

type specFields = v1alpha1.RhizomeNodeSpec

// newRhizomeNode returns a RhizomeNode for the node, owned by it so that
// Kubernetes' garbage collector removes it with the Node.
func newRhizomeNode(node *corev1.Node) *v1alpha1.RhizomeNode {
	return &v1alpha1.RhizomeNode{
		ObjectMeta: metav1.ObjectMeta{
			Name: node.Name,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID,
			}},
		},
	}
}
