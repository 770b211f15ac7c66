package informers

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// TestTransforms: the caches keep what Rhizome reads and drop the rest.
func TestTransforms(t *testing.T) {
	mf := []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "u", Labels: map[string]string{"a": "b"}, Annotations: map[string]string{"big": "x"}, ManagedFields: mf},
		Spec:       corev1.NodeSpec{PodCIDR: "10.0.0.0/24"},
		Status: corev1.NodeStatus{
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.1"}},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady}},
			Images:     []corev1.ContainerImage{{Names: []string{"x"}}},
			NodeInfo:   corev1.NodeSystemInfo{KubeletVersion: "v1"},
		},
	}
	out, err := slimNode(n)
	if err != nil {
		t.Fatal(err)
	}
	s := out.(*corev1.Node)
	if s.Name != "n1" || s.UID != "u" || s.Labels["a"] != "b" || s.Spec.PodCIDR == "" || len(s.Status.Addresses) != 1 {
		t.Errorf("slimNode dropped what Rhizome reads: %+v", s)
	}
	if s.Annotations != nil || s.ManagedFields != nil || s.Status.Conditions != nil || s.Status.Images != nil || s.Status.NodeInfo.KubeletVersion != "" {
		t.Errorf("slimNode kept the rest: %+v", s)
	}
	r := &v1alpha1.RhizomeNode{
		ObjectMeta: metav1.ObjectMeta{Name: "n1", ManagedFields: mf},
		Spec:       v1alpha1.RhizomeNodeSpec{IPv4Address: "10.0.0.1/24"},
		Status:     v1alpha1.RhizomeNodeStatus{Sessions: make([]v1alpha1.BGPSessionStatus, 3)},
	}
	out, _ = slimRhizomeNode(r)
	if sr := out.(*v1alpha1.RhizomeNode); sr.Spec.IPv4Address == "" || sr.Status.Sessions != nil || sr.ManagedFields != nil {
		t.Errorf("slimRhizomeNode: %+v", sr)
	}
	p := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "p", ManagedFields: mf}, Status: v1alpha1.IPPoolStatus{AddressesInUse: 2}}
	out, _ = dropManagedFields(p)
	if pp := out.(*v1alpha1.IPPool); pp.ManagedFields != nil || pp.Status.AddressesInUse != 2 {
		t.Errorf("dropManagedFields: %+v", pp)
	}
	// Whatever is not an object passes unchanged (a deletion tombstone).
	if out, _ := slimNode("tombstone"); out != "tombstone" {
		t.Errorf("slimNode(non-node) = %v", out)
	}
}
