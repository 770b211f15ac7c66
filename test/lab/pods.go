package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/cni"
	"github.com/rhizome-net/rhizome/test/cniruntime"
	"github.com/rhizome-net/rhizome/test/netns"
)

// cniBinDir holds the plugin as the runtime expects it: /opt/cni/bin/rhizome.
func (l *Lab) cniBinDir() string { return filepath.Join(l.Dir, "cni-bin") }

func (l *Lab) prepareCNI() error {
	if err := os.MkdirAll(l.cniBinDir(), 0o755); err != nil {
		return err
	}
	link := filepath.Join(l.cniBinDir(), "rhizome")
	os.Remove(link)
	return os.Symlink(filepath.Join(l.BinDir, "rhizome-cni"), link)
}

func (l *Lab) runtime(node string) *cniruntime.Runtime {
	return cniruntime.New(l.nodeNS(node), []string{l.cniBinDir()}, filepath.Join(l.nodeDir(node), "cni-cache"))
}

// cniConfDir is the node's /etc/cni/net.d: the lab writes Rhizome's
// conflist there as the install does, and wires pods with whatever sorts
// first in it, as container runtimes do.
// In kubelet mode it is the node's own /etc/cni/net.d, where the
// DaemonSet's install-cni writes.
func (l *Lab) cniConfDir(node string) string {
	if l.State != nil && l.State.Options.Kubelet {
		return l.backing(node, "/etc/cni/net.d")
	}
	return filepath.Join(l.nodeDir(node), "cni-net.d")
}

// writeConflist installs the node's 10-rhizome.conflist.
func (l *Lab) writeConflist(node string) error {
	if err := os.MkdirAll(l.cniConfDir(node), 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(l.cniConfDir(node), cni.ConflistName), cni.Conflist(cni.ConflistOptions{AgentSocket: l.agentSocket(node)}), 0o644)
}

// conflist is the network configuration a runtime would use on the node:
// the first file of its CNI directory in lexical order (libcni's).
func (l *Lab) conflist(node string) (*libcni.NetworkConfigList, error) {
	files, err := libcni.ConfFiles(l.cniConfDir(node), []string{".conf", ".conflist", ".json"})
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no CNI configuration in %s", l.cniConfDir(node))
	}
	sort.Strings(files)
	if filepath.Ext(files[0]) != ".conflist" {
		// Single-plugin .conf files are deprecated in libcni; the lab's
		// runtime takes conflists only.
		return nil, fmt.Errorf("%s sorts first in %s and is not a .conflist", filepath.Base(files[0]), l.cniConfDir(node))
	}
	return libcni.ConfListFromFile(files[0])
}

// AddPod creates a pod on a node as a runtime would: a network namespace, a
// CNI ADD through libcni, and the Pod object (so that IPAM garbage collection
// sees it exists).
func (l *Lab) AddPod(ctx context.Context, c *labClients, node string, i int) (*PodRecord, error) {
	name := fmt.Sprintf("%s-pod-%d", node, i)
	// The Pod object first, as the kubelet's pod exists before its sandbox.
	obj := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"app": "rhizome-lab"}},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "sandbox", Image: "rhizome-lab/none"}}},
	}
	created, err := c.kube.CoreV1().Pods("default").Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating Pod %s: %w", name, err)
	}
	pns, err := netns.Create(l.podNS(node, i))
	if err != nil {
		return nil, err
	}
	containerID := strings.ReplaceAll(fmt.Sprintf("lab%s%08d", node, i), "-", "")
	pod := cniruntime.Pod{Namespace: "default", Name: name, ContainerID: containerID, NetNS: pns.Path()}
	list, err := l.conflist(node)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	res, err := l.runtime(node).Add(ctx, list, pod)
	took := time.Since(start)
	if err != nil {
		pns.Delete()
		return nil, fmt.Errorf("CNI ADD for %s: %w", name, err)
	}
	rec := &PodRecord{Name: name, Namespace: "default", Node: node, NetNS: pns.Path(), ContainerID: containerID, AddSeconds: took.Seconds()}
	for _, ip := range res.IPs {
		rec.Addresses = append(rec.Addresses, ip.Address.IP.String())
	}
	created.Status.Phase = corev1.PodRunning
	for _, a := range rec.Addresses {
		created.Status.PodIPs = append(created.Status.PodIPs, corev1.PodIP{IP: a})
	}
	if len(rec.Addresses) > 0 {
		created.Status.PodIP = rec.Addresses[0]
	}
	if _, err := c.kube.CoreV1().Pods("default").UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return nil, fmt.Errorf("setting Pod %s status: %w", name, err)
	}
	l.State.Pods = append(l.State.Pods, *rec)
	return rec, l.save()
}

// DelPod removes a pod: CNI DEL, its namespace and its Pod object.
func (l *Lab) DelPod(ctx context.Context, c *labClients, rec PodRecord) error {
	list, err := l.conflist(rec.Node)
	if err != nil {
		return err
	}
	pod := cniruntime.Pod{Namespace: rec.Namespace, Name: rec.Name, ContainerID: rec.ContainerID, NetNS: rec.NetNS}
	start := time.Now()
	if err := l.runtime(rec.Node).Del(ctx, list, pod); err != nil {
		return fmt.Errorf("CNI DEL for %s: %w", rec.Name, err)
	}
	l.lastDel = time.Since(start)
	(&netns.NS{Name: filepath.Base(rec.NetNS)}).Delete()
	// No kubelet confirms a graceful deletion here: delete at once.
	zero := int64(0)
	if err := c.kube.CoreV1().Pods(rec.Namespace).Delete(ctx, rec.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		return err
	}
	var keep []PodRecord
	for _, p := range l.State.Pods {
		if p.Name != rec.Name {
			keep = append(keep, p)
		}
	}
	l.State.Pods = keep
	return l.save()
}

// NewPod creates one more pod on a node (the next free index).
func (l *Lab) NewPod(ctx context.Context, node string) (*PodRecord, error) {
	c, err := clientsFor(l.State.Kubeconfig)
	if err != nil {
		return nil, err
	}
	next := 1
	for _, p := range l.State.Pods {
		if p.Node == node {
			var i int
			if _, err := fmt.Sscanf(strings.TrimPrefix(p.Name, node+"-pod-"), "%d", &i); err == nil && i >= next {
				next = i + 1
			}
		}
	}
	if err := l.prepareCNI(); err != nil {
		return nil, err
	}
	return l.AddPod(ctx, c, node, next)
}

// LastDelDuration is how long the last CNI DEL of DelPod/RemovePod took.
func (l *Lab) LastDelDuration() time.Duration { return l.lastDel }

// RemovePod deletes a pod by name.
func (l *Lab) RemovePod(ctx context.Context, name string) error {
	c, err := clientsFor(l.State.Kubeconfig)
	if err != nil {
		return err
	}
	for _, p := range l.State.Pods {
		if p.Name == name {
			return l.DelPod(ctx, c, p)
		}
	}
	return fmt.Errorf("no pod %s", name)
}
