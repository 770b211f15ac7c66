package lab

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/deploy"
)

// A lab node runs its agent as a process, not as a pod of the DaemonSet,
// so the lab writes the Pod object a kubelet would report for it, as a
// kubelet does for a static pod (its "mirror pod"): on the node, host
// network, the DaemonSet's label and metrics port, Running at the node's
// address. rhizomectl --node and version find agents by these, and the API
// server's pod proxy reaches the agent's port through them (and the lab's
// egress, egress.go). No kubelet runs here to change them; the agent's own
// process is what answers.

// agentHTTPListen is where lab agents serve health, metrics and /status:
// every address of the node's namespace, as the DaemonSet's agents do on
// their host.
const agentHTTPListen = ":9099"

func agentPodName(node string) string { return "rhizome-agent-" + node }

// registerAgentPod creates (or refreshes) the node's agent mirror pod.
func (l *Lab) registerAgentPod(ctx context.Context, c *labClients, n NodePlan) error {
	pods := c.kube.CoreV1().Pods(deploy.AgentNamespace)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: agentPodName(n.Name), Namespace: deploy.AgentNamespace,
			Labels:      map[string]string{"app.kubernetes.io/name": "rhizome-agent"},
			Annotations: map[string]string{"rhizome.dev/lab": "the agent process of a lab node (a mirror pod: no kubelet runs it)"}},
		Spec: corev1.PodSpec{
			NodeName: n.Name, HostNetwork: true,
			Containers: []corev1.Container{{Name: "agent", Image: "rhizome-lab/agent",
				Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9099, Protocol: corev1.ProtocolTCP}}}},
		},
	}
	got, err := pods.Create(ctx, pod, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, err = pods.Get(ctx, pod.Name, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("creating the agent pod of %s: %w", n.Name, err)
	}
	addr := n.Addr.Addr().String()
	now := metav1.Now()
	got.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, HostIP: addr, PodIP: addr, PodIPs: []corev1.PodIP{{IP: addr}}, StartTime: &now,
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now}},
	}
	if _, err := pods.UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("setting the status of the agent pod of %s: %w", n.Name, err)
	}
	return nil
}
