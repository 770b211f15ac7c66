package ctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/agent/agentapi"
)

// A node's own view (status, bgp peers, routes) comes from its agent: on
// the node itself through the agent's unix socket, and from anywhere else
// (--node NAME, or as kubectl rhizome) through the API server's proxy to
// the agent pod's read-only HTTP endpoint on its metrics port (GET /status:
// the same StatusResponse, as protojson). Why the proxy rather than an exec
// into the pod, as cilium does: it needs only `get pods/proxy` in the
// agent's namespace (exec needs `create pods/exec`, a shell on every node),
// no rhizomectl inside the image, and it answers in the API's own types
// instead of parsing a CLI's text; the API server must reach the pods'
// port 9099, which Prometheus needs anyway, and which konnectivity (the
// API server's egress selector) provides where the control plane cannot
// reach nodes directly — the lab uses that path (docs/design/0016).

const (
	// agentSelector selects the agent DaemonSet's pods (deploy/base).
	agentSelector = "app.kubernetes.io/name=rhizome-agent"
	// agentHTTPPort is the agent's health, metrics and status port.
	agentHTTPPort = "9099"
	// envSocket, envNode and envAgentLog let an environment (a lab node)
	// tell rhizomectl where its agent is without flags.
	envSocket   = "RHIZOME_AGENT_SOCKET"
	envNode     = "RHIZOME_NODE_NAME"
	envAgentLog = "RHIZOME_AGENT_LOG"
)

func defaultSocket() string {
	if s := os.Getenv(envSocket); s != "" {
		return s
	}
	return agentapi.DefaultSocket
}

// localStatus asks the agent on this node through its socket.
func (g *globals) localStatus(ctx context.Context) (*agentapi.StatusResponse, error) {
	client, conn, err := agentapi.Dial(g.socket)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := client.Status(ctx, &agentapi.StatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("asking the agent at %s: %w", g.socket, err)
	}
	return st, nil
}

// nodeStatus is the status of --node's agent (through the API server), or
// of the local one.
func (g *globals) nodeStatus(ctx context.Context) (*agentapi.StatusResponse, error) {
	if g.node == "" {
		return g.localStatus(ctx)
	}
	c, err := g.clients()
	if err != nil {
		return nil, err
	}
	pod, err := c.agentPod(ctx, g.namespace, g.node)
	if err != nil {
		return nil, err
	}
	return c.remoteStatus(ctx, pod)
}

// agentPods lists the running agent pods, of one node or (node "") all,
// sorted by node.
func (c *clusterClients) agentPods(ctx context.Context, ns, node string) ([]corev1.Pod, error) {
	opts := metav1.ListOptions{LabelSelector: agentSelector}
	if node != "" {
		opts.FieldSelector = "spec.nodeName=" + node
	}
	l, err := c.kube.CoreV1().Pods(ns).List(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("listing the agent pods in %s: %w", ns, err)
	}
	var out []corev1.Pod
	for _, p := range l.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Spec.NodeName < out[j].Spec.NodeName })
	return out, nil
}

func (c *clusterClients) agentPod(ctx context.Context, ns, node string) (*corev1.Pod, error) {
	pods, err := c.agentPods(ctx, ns, node)
	if err != nil {
		return nil, err
	}
	if len(pods) == 0 {
		return nil, fmt.Errorf("no running agent pod on node %s (pods %q in namespace %s); is the node's name right (kubectl get rhizomenodes)?", node, agentSelector, ns)
	}
	return &pods[0], nil
}

// agentGet GETs a path of an agent pod's HTTP port through the API server.
func (c *clusterClients) agentGet(ctx context.Context, pod *corev1.Pod, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	b, err := c.kube.CoreV1().Pods(pod.Namespace).ProxyGet("http", pod.Name, agentHTTPPort, path, nil).DoRaw(ctx)
	if err != nil {
		msg := strings.TrimSpace(string(b))
		if msg == "" {
			msg = err.Error()
		}
		return nil, fmt.Errorf("reaching the agent of node %s (pod %s/%s, port %s) through the API server: %s", pod.Spec.NodeName, pod.Namespace, pod.Name, agentHTTPPort, msg)
	}
	return b, nil
}

func (c *clusterClients) remoteStatus(ctx context.Context, pod *corev1.Pod) (*agentapi.StatusResponse, error) {
	b, err := c.agentGet(ctx, pod, "/status")
	if err != nil {
		return nil, err
	}
	st := &agentapi.StatusResponse{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("the agent of node %s answered /status with something else: %w", pod.Spec.NodeName, err)
	}
	return st, nil
}

// errNoLocalAgent tells a missing local agent from other failures: the
// commands that have a cluster-wide view fall back to it.
func errNoLocalAgent(err error) bool { return errors.Is(err, agentapi.ErrAgentNotRunning) }
