package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/deploy"
	"github.com/rhizome-net/rhizome/test/controlplane"
)

// In kubelet mode (rhizome-lab up --kubelet) every node namespace runs a
// real containerd and kubelet, and Rhizome is installed the way users install
// it: its image imported into each node's containerd, then one
// `kubectl apply -k` of a real overlay with only the image reference changed.
// Workloads are Deployments; the kubelet starts their pods and containerd
// wires them through rhizome-cni. See design note 0013.

// KubeImages are the images a kubelet lab imports into every node.
type KubeImages struct {
	// Pause is the sandbox image (containerd's pinned sandbox image).
	Pause string `json:"pause"`
	// Workload is the test Deployments' image.
	Workload string `json:"workload"`
	// Rhizome is the reference of the Rhizome image under test.
	Rhizome string `json:"rhizome"`
	// Tarballs are the archives imported into each node's containerd.
	Tarballs []string `json:"tarballs"`
}

// WorkloadNamespace holds the lab's test Deployments.
const WorkloadNamespace = "default"

// workloadLabel marks the lab's test pods.
const workloadLabel = "rhizome-lab/workload"

// overlayFor picks the deploy/ overlay that fits the lab's topology: ToR
// peering with BGP ToRs, route reflectors in rr mode, the full mesh otherwise.
func overlayFor(o Options) string {
	switch {
	case o.ToR == "bird" || o.ToR == "frr":
		return "tor"
	case o.Mode == "rr":
		return "route-reflector"
	}
	return "mesh"
}

// upKubelet is the second half of Up in kubelet mode: nodes with containerd
// and a kubelet, the install from the overlay, and the workloads.
func (l *Lab) upKubelet(ctx context.Context, cp *controlplane.ControlPlane, c *labClients) error {
	bins, err := controlplane.EnsureNodeBinaries(ctx, l.Out)
	if err != nil {
		return err
	}
	l.step("images: pause and workload built here, Rhizome's from %s", l.State.Options.Image)
	if err := l.prepareImages(ctx); err != nil {
		return err
	}
	l.step("nodes: containerd %s and kubelet %s in %d node namespaces", controlplane.ContainerdVersion, controlplane.K8sVersion, len(l.Plan.Nodes))
	for _, n := range l.Plan.Nodes {
		if err := l.startAPIProxy(n.Name); err != nil {
			return err
		}
		if err := l.startKubeNode(ctx, n, bins); err != nil {
			return err
		}
	}
	if err := l.waitNodesRegistered(ctx, c); err != nil {
		return err
	}
	l.step("nodes: %d registered (NotReady until a CNI configuration appears)", len(l.Plan.Nodes))
	l.step("install: kubectl apply -k of deploy/overlays/%s with the image %s", overlayFor(l.State.Options), l.State.Images.Rhizome)
	took, err := l.Install(ctx, cp)
	if err != nil {
		return err
	}
	l.State.RolloutSeconds = took.Seconds()
	if err := l.save(); err != nil {
		return err
	}
	l.step("install: DaemonSet rhizome-agent Ready on %d nodes %.1fs after the apply", len(l.Plan.Nodes), took.Seconds())
	if err := l.applyTopologyExtras(ctx, c); err != nil {
		return err
	}
	if err := l.waitNodesReady(ctx, c); err != nil {
		return err
	}
	names := make([]string, 0, len(l.Plan.Nodes))
	for _, n := range l.Plan.Nodes {
		names = append(names, n.Name)
	}
	if err := l.waitAgentsReady(ctx, names, l.readyTimeout()); err != nil {
		return err
	}
	if l.State.Options.Pods > 0 {
		l.step("pods: one Deployment per node, %d replicas each", l.State.Options.Pods)
		if err := l.ScaleWorkloads(ctx, l.State.Options.Pods); err != nil {
			return err
		}
		if err := l.WaitWorkloads(ctx, 5*time.Minute); err != nil {
			return err
		}
	}
	return nil
}

// Install installs Rhizome as docs/install.md says: the CRDs on their own
// (deploy/crds, then wait until they are Established), then one apply of
// the lab's kustomization (the overlay with the image reference changed,
// nothing else) with the control plane's kubectl. It returns how long the
// DaemonSet took to be Ready on every node after that apply.
func (l *Lab) Install(ctx context.Context, cp *controlplane.ControlPlane) (time.Duration, error) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return 0, err
	}
	crds := filepath.Join(root, "deploy", "crds")
	if _, err := cp.Kubectl(ctx, nil, "apply", "-k", crds); err != nil {
		return 0, fmt.Errorf("installing the CRDs: %w", err)
	}
	if _, err := cp.Kubectl(ctx, nil, "wait", "--for=condition=Established", "--timeout=60s", "crd", "-l", "app.kubernetes.io/part-of=rhizome"); err != nil {
		return 0, fmt.Errorf("waiting for the CRDs: %w", err)
	}
	dir, err := l.writeKustomization()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	out, err := cp.Kubectl(ctx, nil, "apply", "-k", dir)
	if err != nil {
		return 0, fmt.Errorf("installing: %w", err)
	}
	fmt.Fprintf(l.Out, "%s", out)
	c, err := clientsFor(l.State.Kubeconfig)
	if err != nil {
		return 0, err
	}
	if err := l.WaitDaemonSet(ctx, c, 5*time.Minute); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// KustomizationDir is where the lab's install kustomization is written.
func (l *Lab) KustomizationDir() string { return filepath.Join(l.Dir, "install") }

// writeKustomization writes a kustomization that takes a deploy/ overlay as
// it is and overrides only the image reference, as a user pointing the
// install at their own registry would.
func (l *Lab) writeKustomization() (string, error) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return "", err
	}
	dir := l.KustomizationDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// kustomize takes only relative paths to other kustomizations.
	overlay, err := filepath.Rel(dir, filepath.Join(root, "deploy", "overlays", overlayFor(l.State.Options)))
	if err != nil {
		return "", err
	}
	name, tag := splitRef(l.State.Images.Rhizome)
	k := fmt.Sprintf(`# rhizome-lab: deploy/overlays/%s with the lab's image; generated.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- %s
images:
- name: %s
  newName: %s
  newTag: %s
`, overlayFor(l.State.Options), overlay, deploy.ImageName(), name, tag)
	// Only an explicit --encap changes the overlay's pool.
	if e := l.State.Options.Encap; e != "" {
		vx, ip := "Never", "Never"
		switch e {
		case "vxlan":
			vx = l.Plan.EncapMode()
		case "ipip":
			ip = l.Plan.EncapMode()
		}
		k += fmt.Sprintf(`patches:
- target: {kind: IPPool, name: default-ipv4}
  patch: |-
    - {op: add, path: /spec/vxlanMode, value: %s}
    - {op: add, path: /spec/ipipMode, value: %s}
`, vx, ip)
	}
	return dir, os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644)
}

// splitRef splits "registry/name:tag" into name and tag.
func splitRef(ref string) (string, string) {
	i := strings.LastIndexByte(ref, ':')
	if i < 0 || strings.Contains(ref[i:], "/") {
		return ref, "latest"
	}
	return ref[:i], ref[i+1:]
}

// WaitDaemonSet waits until the agent DaemonSet has an up-to-date, Ready pod
// on every node of the plan.
func (l *Lab) WaitDaemonSet(ctx context.Context, c *labClients, timeout time.Duration) error {
	want := int32(len(l.Plan.Nodes))
	var last string
	return poll(ctx, timeout, func() (bool, error) {
		ds, err := c.kube.AppsV1().DaemonSets(deploy.AgentNamespace).Get(ctx, "rhizome-agent", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			last = "no DaemonSet yet"
			return false, nil
		}
		if err != nil {
			return false, err
		}
		s := ds.Status
		last = fmt.Sprintf("desired %d, updated %d, ready %d, available %d (generation %d observed %d)",
			s.DesiredNumberScheduled, s.UpdatedNumberScheduled, s.NumberReady, s.NumberAvailable, ds.Generation, s.ObservedGeneration)
		return s.ObservedGeneration >= ds.Generation && s.DesiredNumberScheduled == want &&
			s.UpdatedNumberScheduled == want && s.NumberReady == want && s.NumberAvailable == want, nil
	}, func() string { return "DaemonSet rhizome-agent: " + last })
}

// applyTopologyExtras adds what an operator adds to the overlay for this
// topology, as its comments say: a BGPPeer (and its password) per further
// rack for the tor overlay, the per-node configuration of each route
// reflector.
func (l *Lab) applyTopologyExtras(ctx context.Context, c *labClients) error {
	switch overlayFor(l.State.Options) {
	case "tor":
		for _, r := range l.Plan.Racks[1:] {
			key := "tor-rack-" + rackLabelValue(r.Index)
			sec, err := c.kube.CoreV1().Secrets(deploy.AgentNamespace).Get(ctx, "bgp-passwords", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if sec.Data == nil {
				sec.Data = map[string][]byte{}
			}
			sec.Data[key] = []byte(labToRPassword)
			if _, err := c.kube.CoreV1().Secrets(deploy.AgentNamespace).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
				return err
			}
			as := int64(r.ToRAS)
			maxPrefix := int64(1000)
			peer := &v1alpha1.BGPPeer{
				ObjectMeta: metav1.ObjectMeta{Name: key},
				Spec: v1alpha1.BGPPeerSpec{
					PeerIP:        r.ToRAddr.Addr().String(),
					ASNumber:      &as,
					NodeSelector:  &metav1.LabelSelector{MatchLabels: map[string]string{RackLabel: rackLabelValue(r.Index)}},
					Password:      &v1alpha1.BGPPassword{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "bgp-passwords"}, Key: key}},
					KeepaliveTime: &metav1.Duration{Duration: 3 * time.Second},
					HoldTime:      &metav1.Duration{Duration: 9 * time.Second},
					MaxPrefix:     &maxPrefix,
					ImportFilters: []v1alpha1.FilterRule{{CIDR: "0.0.0.0/0", MatchOperator: "Equal", Action: "Accept"}},
				},
			}
			if _, err := c.rz.RhizomeV1alpha1().BGPPeers().Create(ctx, peer, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("creating BGPPeer %s: %w", key, err)
			}
		}
	case "route-reflector":
		for _, n := range l.Plan.Nodes {
			if !n.RouteReflector {
				continue
			}
			rr := &v1alpha1.BGPConfiguration{
				ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.NodeBGPConfigurationPrefix + n.Name},
				Spec:       v1alpha1.BGPConfigurationSpec{RouteReflectorClusterID: "224.0.0.1"},
			}
			if _, err := c.rz.RhizomeV1alpha1().BGPConfigurations().Create(ctx, rr, metav1.CreateOptions{}); err != nil {
				return err
			}
		}
	}
	return nil
}

// labToRPassword is the MD5 password of the tor overlay's example Secret,
// which the lab's BGP ToRs are configured with in kubelet mode.
const labToRPassword = "change-me"

func (l *Lab) waitNodesRegistered(ctx context.Context, c *labClients) error {
	var missing []string
	return poll(ctx, 2*time.Minute, func() (bool, error) {
		missing = missing[:0]
		for _, n := range l.Plan.Nodes {
			if _, err := c.kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{}); err != nil {
				missing = append(missing, n.Name)
			}
		}
		return len(missing) == 0, nil
	}, func() string {
		return fmt.Sprintf("nodes not registered: %v (kubelet logs in %s/nodes/*/kubelet.log)", missing, l.Dir)
	})
}

func (l *Lab) waitNodesReady(ctx context.Context, c *labClients) error {
	var why []string
	return poll(ctx, 2*time.Minute, func() (bool, error) {
		why = why[:0]
		for _, n := range l.Plan.Nodes {
			node, err := c.kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				why = append(why, n.Name+": "+err.Error())
				continue
			}
			if msg, ok := nodeReady(node); !ok {
				why = append(why, n.Name+": "+msg)
			}
		}
		return len(why) == 0, nil
	}, func() string { return "nodes not Ready: " + strings.Join(why, "; ") })
}

func nodeReady(n *corev1.Node) (string, bool) {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Message, c.Status == corev1.ConditionTrue
		}
	}
	return "no Ready condition", false
}

// workloadName is the Deployment pinned to a node.
func workloadName(node string) string { return "lab-" + node }

// ScaleWorkloads creates or scales the lab's Deployments, one per node
// (pinned by nodeSelector), to perNode replicas each.
func (l *Lab) ScaleWorkloads(ctx context.Context, perNode int) error {
	c, err := clientsFor(l.State.Kubeconfig)
	if err != nil {
		return err
	}
	for _, n := range l.Plan.Nodes {
		if err := l.scaleWorkload(ctx, c, n.Name, perNode); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) scaleWorkload(ctx context.Context, c *labClients, node string, replicas int) error {
	deps := c.kube.AppsV1().Deployments(WorkloadNamespace)
	r := int32(replicas)
	// A merge patch of the replicas alone: a Get then Update raced the
	// deployment controller, which writes the object's annotations
	// (a conflict seen in CI: "the object has been modified").
	patch := []byte(fmt.Sprintf(`{"spec":{"replicas":%d}}`, r))
	_, err := deps.Patch(ctx, workloadName(node), types.MergePatchType, patch, metav1.PatchOptions{})
	if err == nil || !apierrors.IsNotFound(err) {
		return err
	}
	labels := map[string]string{workloadLabel: workloadName(node)}
	zero := int64(0)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: workloadName(node), Namespace: WorkloadNamespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: &r,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector:                  map[string]string{"kubernetes.io/hostname": node},
					TerminationGracePeriodSeconds: &zero,
					DNSPolicy:                     corev1.DNSDefault, // the lab has no cluster DNS
					AutomountServiceAccountToken:  new(bool),
					EnableServiceLinks:            new(bool),
					Containers: []corev1.Container{{
						Name:            "workload",
						Image:           l.State.Images.Workload,
						ImagePullPolicy: corev1.PullNever,
						// The pods only hold addresses; the tests ping
						// from their network namespaces.
						Command: []string{"sleep", "2147483647"},
					}},
				},
			},
		},
	}
	_, err = deps.Create(ctx, d, metav1.CreateOptions{})
	return err
}

// poll calls cond every 200 ms until it holds, fails, or timeout passes;
// why explains the last state in the timeout's error.
func poll(ctx context.Context, timeout time.Duration, cond func() (bool, error), why func() string) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %s: %s", timeout, why())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s", ctx.Err(), why())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Kubectl runs the control plane's kubectl (the version the install is
// tested with) against the lab with the admin kubeconfig.
func (l *Lab) Kubectl(ctx context.Context, args ...string) ([]byte, error) {
	bins, err := controlplane.EnsureBinaries(ctx, nil)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bins.Kubectl, append([]string{"--kubeconfig", l.State.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

// TagImage gives an image imported into every node's containerd a second
// reference, as pushing a new tag to a registry would.
func (l *Lab) TagImage(ctx context.Context, src, dst string) error {
	bins, err := controlplane.EnsureNodeBinaries(ctx, nil)
	if err != nil {
		return err
	}
	for _, n := range l.Plan.Nodes {
		if _, err := l.inNodeMounts(ctx, n.Name, bins.Ctr, "--address", containerdSocket, "-n", "k8s.io", "images", "tag", "--force", src, dst); err != nil {
			return err
		}
	}
	return nil
}

// AgentPods returns the agent DaemonSet's pods by node.
func (l *Lab) AgentPods(ctx context.Context) (map[string]corev1.Pod, error) {
	c, err := clientsFor(l.State.Kubeconfig)
	if err != nil {
		return nil, err
	}
	pods, err := c.kube.CoreV1().Pods(deploy.AgentNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=rhizome-agent"})
	if err != nil {
		return nil, err
	}
	out := map[string]corev1.Pod{}
	for _, p := range pods.Items {
		out[p.Spec.NodeName] = p
	}
	return out, nil
}

// WaitAgentRollout waits until the DaemonSet runs the given image, Ready, on
// every node.
func (l *Lab) WaitAgentRollout(ctx context.Context, timeout time.Duration) error {
	c, err := clientsFor(l.State.Kubeconfig)
	if err != nil {
		return err
	}
	return l.WaitDaemonSet(ctx, c, timeout)
}
