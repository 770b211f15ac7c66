package lab

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/test/controlplane"
)

// WaitWorkloads waits until every replica of the lab's Deployments runs with
// an address and no pod of theirs is left terminating, then records the
// pods (SyncPods).
func (l *Lab) WaitWorkloads(ctx context.Context, timeout time.Duration) error {
	c, err := clientsFor(l.State.Kubeconfig)
	if err != nil {
		return err
	}
	var why string
	err = poll(ctx, timeout, func() (bool, error) {
		want := 0
		for _, n := range l.Plan.Nodes {
			d, err := c.kube.AppsV1().Deployments(WorkloadNamespace).Get(ctx, workloadName(n.Name), metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			want += int(*d.Spec.Replicas)
		}
		pods, err := c.kube.CoreV1().Pods(WorkloadNamespace).List(ctx, metav1.ListOptions{LabelSelector: workloadLabel})
		if err != nil {
			return false, err
		}
		running, other := 0, 0
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" && podReady(&p) {
				running++
			} else {
				other++
			}
		}
		why = fmt.Sprintf("%d of %d pods running with an address, %d pending or terminating", running, want, other)
		return running == want && other == 0, nil
	}, func() string { return why })
	if err != nil {
		return err
	}
	return l.SyncPods(ctx)
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// SyncPods records the lab's running workload pods from the API, with the
// network namespace of each: /proc/PID/ns/net of its container's process,
// found through the node's containerd (the namespace containerd mounted is
// visible only inside the node's mount namespace).
func (l *Lab) SyncPods(ctx context.Context) error {
	c, err := clientsFor(l.State.Kubeconfig)
	if err != nil {
		return err
	}
	pods, err := c.kube.CoreV1().Pods(WorkloadNamespace).List(ctx, metav1.ListOptions{LabelSelector: workloadLabel})
	if err != nil {
		return err
	}
	pids := map[string]map[string]int{} // node → container ID → PID
	var recs []PodRecord
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning || len(p.Status.ContainerStatuses) == 0 {
			continue
		}
		id := strings.TrimPrefix(p.Status.ContainerStatuses[0].ContainerID, "containerd://")
		node := p.Spec.NodeName
		if pids[node] == nil {
			if pids[node], err = l.containerPIDs(ctx, node); err != nil {
				return err
			}
		}
		pid, ok := pids[node][id]
		if !ok {
			continue // restarting; the next sync sees it
		}
		rec := PodRecord{Name: p.Name, Namespace: p.Namespace, Node: node, ContainerID: id, NetNS: fmt.Sprintf("/proc/%d/ns/net", pid)}
		for _, ip := range p.Status.PodIPs {
			rec.Addresses = append(rec.Addresses, ip.IP)
		}
		recs = append(recs, rec)
	}
	slices.SortFunc(recs, func(a, b PodRecord) int {
		if a.Node != b.Node {
			return strings.Compare(a.Node, b.Node)
		}
		return strings.Compare(a.Name, b.Name)
	})
	l.State.Pods = recs
	return l.save()
}

// containerPIDs lists a node's running containers (containerd's tasks in the
// k8s.io namespace) by ID.
func (l *Lab) containerPIDs(ctx context.Context, node string) (map[string]int, error) {
	bins, err := controlplane.EnsureNodeBinaries(ctx, nil)
	if err != nil {
		return nil, err
	}
	out, err := l.inNodeMounts(ctx, node, bins.Ctr, "--address", containerdSocket, "-n", "k8s.io", "tasks", "ls")
	if err != nil {
		return nil, err
	}
	pids := map[string]int{}
	for _, line := range strings.Split(string(out), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) >= 3 && f[2] == "RUNNING" {
			var pid int
			fmt.Sscanf(f[1], "%d", &pid)
			pids[f[0]] = pid
		}
	}
	return pids, nil
}
