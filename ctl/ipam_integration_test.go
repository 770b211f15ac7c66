//go:build integration

package ctl

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	rzclient "github.com/rhizome-net/rhizome/crds/client/clientset/versioned"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/test/controlplane"
)

func TestMain(m *testing.M) { controlplane.Main(m) }

// TestIPAMCommandsAgainstTheAPIServer runs rhizomectl's pools and ipam
// commands against the real API server: show, check finding a leak,
// release refusing a live pod's address without --force.
func TestIPAMCommandsAgainstTheAPIServer(t *testing.T) {
	cp := controlplane.ForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kube := kubernetes.NewForConfigOrDie(cp.RESTConfig())
	rz := rzclient.NewForConfigOrDie(cp.RESTConfig())
	bs := int32(26)
	if _, err := rz.RhizomeV1alpha1().IPPools().Create(ctx, &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "ctl-pool"},
		Spec: v1alpha1.IPPoolSpec{CIDR: "10.123.0.0/16", BlockSize: &bs}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "ctl-node"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "ctl-live"},
		Spec: corev1.PodSpec{NodeName: "ctl-node", Containers: []corev1.Container{{Name: "c", Image: "x"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	blk := &v1alpha1.IPAMBlock{ObjectMeta: metav1.ObjectMeta{Name: "10-123-0-0-26"}, Spec: v1alpha1.IPAMBlockSpec{
		CIDR: "10.123.0.0/26", Affinity: "ctl-node",
		Allocations: []v1alpha1.IPAMAllocation{
			{Address: "10.123.0.1", Handle: "live.eth0", Namespace: "default", Pod: "ctl-live", Node: "ctl-node"},
			{Address: "10.123.0.2", Handle: "gone.eth0", Namespace: "default", Pod: "ctl-gone", Node: "ctl-node"},
		}}}
	if _, err := rz.RhizomeV1alpha1().IPAMBlocks().Create(ctx, blk, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, mustRead(t, cp.Kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	ctl := func(args ...string) (string, error) { return run(t, append([]string{"--kubeconfig", kc}, args...)...) }

	out, err := ctl("pools")
	if err != nil || !strings.Contains(out, "ctl-pool") || !strings.Contains(out, "10.123.0.0/16") {
		t.Fatalf("pools: %v\n%s", err, out)
	}
	out, err = ctl("ipam", "show", "--node", "ctl-node", "--allocations")
	if err != nil || !strings.Contains(out, "10.123.0.1") || !strings.Contains(out, "default/ctl-live") {
		t.Fatalf("ipam show: %v\n%s", err, out)
	}
	out, err = ctl("ipam", "check")
	if err == nil || !strings.Contains(out, "10.123.0.2 (block 10.123.0.0/26) belongs to pod default/ctl-gone, which no longer exists") {
		t.Fatalf("ipam check should find the leak: %v\n%s", err, out)
	}
	if _, err = ctl("ipam", "release", "10.123.0.1"); err == nil || !strings.Contains(err.Error(), "pod default/ctl-live still exists") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("releasing a live pod's address without --force: %v", err)
	}
	if out, err = ctl("ipam", "release", "10.123.0.2"); err != nil || !strings.Contains(out, "released 10.123.0.2") {
		t.Fatalf("releasing the leaked address: %v\n%s", err, out)
	}
	if out, err = ctl("ipam", "release", "--force", "10.123.0.1"); err != nil || !strings.Contains(out, "released 10.123.0.1") {
		t.Fatalf("forced release: %v\n%s", err, out)
	}
	b, err := rz.RhizomeV1alpha1().IPAMBlocks().Get(ctx, "10-123-0-0-26", metav1.GetOptions{})
	if err != nil || len(b.Spec.Allocations) != 0 {
		t.Fatalf("block after releases: %v %+v", err, b.Spec.Allocations)
	}
}

func mustRead(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
