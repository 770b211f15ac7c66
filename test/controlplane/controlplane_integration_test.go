//go:build integration

package controlplane

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	rhizome "github.com/rhizome-net/rhizome/crds/client/clientset/versioned"
)

func TestMain(m *testing.M) { Main(m) }

// TestSharedControlPlaneServesCRDsAndEnforcesRBAC checks what every other
// integration test relies on: the CRDs are served, the admin can write, and
// RBAC is really enforced (the default AlwaysAllow would make RBAC tests
// meaningless).
func TestSharedControlPlaneServesCRDsAndEnforcesRBAC(t *testing.T) {
	cp := ForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rz, err := rhizome.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rz.RhizomeV1alpha1().IPPools().List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("listing IPPools as admin: %v", err)
	}
	kube := kubernetes.NewForConfigOrDie(cp.RESTConfig())
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "rbac-check"}}
	if _, err := kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "reader", Namespace: ns.Name}}
	if _, err := kube.CoreV1().ServiceAccounts(ns.Name).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tok, err := kube.CoreV1().ServiceAccounts(ns.Name).CreateToken(ctx, sa.Name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest: %v", err)
	}
	rzAsSA, _ := rhizome.NewForConfig(cp.TokenRESTConfig(tok.Status.Token))
	_, err = rzAsSA.RhizomeV1alpha1().IPPools().List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("a ServiceAccount without roles listed IPPools: err = %v, want Forbidden", err)
	}
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "ippool-reader"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{"rhizome.dev"}, Resources: []string{"ippools"}, Verbs: []string{"list"}}},
	}
	if _, err := kube.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "ippool-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.Name, Namespace: ns.Name}},
	}
	if _, err := kube.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err = rzAsSA.RhizomeV1alpha1().IPPools().List(ctx, metav1.ListOptions{})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("listing IPPools after the binding: %v", err)
	}
}

// TestDetachedLifecycle covers `make cluster-up` / `cluster-down`: a detached
// control plane outlives its starter, is found by Running and stopped by
// StopDir through its recorded PIDs.
func TestDetachedLifecycle(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cp")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cp, err := Start(ctx, Options{Dir: dir, Detach: true, SkipCRDs: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { StopDir(dir) })
	kc, ok := Running(dir)
	if !ok || kc != cp.Kubeconfig {
		t.Fatalf("Running = %q, %v", kc, ok)
	}
	out, err := cp.Kubectl(ctx, nil, "get", "--raw", "/readyz")
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("kubectl get --raw /readyz: %q %v", out, err)
	}
	kapi := cp.kapi.Process.Pid
	if err := StopDir(dir); err != nil {
		t.Fatal(err)
	}
	if processAlive(kapi) {
		t.Fatalf("kube-apiserver %d still running after StopDir", kapi)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("%s not removed", dir)
	}
	if _, ok := Running(dir); ok {
		t.Fatal("Running after StopDir")
	}
}

// TestControllersRunDeploymentsAndNodeCredentials starts a control plane with
// kube-controller-manager and kube-scheduler (what the kubelet lab uses) and
// checks what they are there for: a namespace gets its default
// ServiceAccount and a Deployment gets its pods, admitted by the
// ServiceAccount plugin (the lab shows the scheduler placing them); and a node's
// credentials (NodeKubeconfig) are judged by the Node authorizer: a node may
// read its own Node object but not create another node's.
func TestControllersRunDeploymentsAndNodeCredentials(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cp, err := Start(ctx, Options{Log: os.Stderr, Controllers: true, SkipCRDs: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Stop()
	kube := kubernetes.NewForConfigOrDie(cp.RESTConfig())
	waitFor(t, ctx, "the default ServiceAccount", func() bool {
		_, err := kube.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil
	})
	kc, err := NodeKubeconfig(cp.Dir, cp.URL, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	asNode := func(args ...string) ([]byte, error) {
		return exec.CommandContext(ctx, cp.Binaries.Kubectl, append([]string{"--kubeconfig", path}, args...)...).CombinedOutput()
	}
	node := `{"apiVersion":"v1","kind":"Node","metadata":{"name":"%s"}}`
	if out, err := asNodeApply(ctx, cp, path, fmt.Sprintf(node, "node-a")); err != nil {
		t.Fatalf("node-a registering itself: %v: %s", err, out)
	}
	if out, err := asNodeApply(ctx, cp, path, fmt.Sprintf(node, "node-b")); err == nil || !strings.Contains(string(out), "Forbidden") && !strings.Contains(string(out), "forbidden") {
		t.Fatalf("node-a created node-b: err %v: %s", err, out)
	}
	if out, err := asNode("get", "node", "node-a"); err != nil {
		t.Fatalf("node-a reading itself: %v: %s", err, out)
	}
	if _, err := cp.Kubectl(ctx, nil, "create", "deployment", "web", "--image=localhost/none:1", "--replicas=2"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the Deployment's two pods", func() bool {
		pods, err := kube.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil || len(pods.Items) != 2 {
			return false
		}
		for _, p := range pods.Items {
			if p.Spec.ServiceAccountName != "default" {
				return false
			}
		}
		return true
	})
}

// asNodeApply creates an object with the node's kubeconfig.
func asNodeApply(ctx context.Context, cp *ControlPlane, kubeconfig, obj string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, cp.Binaries.Kubectl, "--kubeconfig", kubeconfig, "create", "-f", "-")
	cmd.Stdin = strings.NewReader(obj)
	return cmd.CombinedOutput()
}

func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not there before the deadline", what)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
