package lab

import (
	"context"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	rzclient "github.com/rhizome-net/rhizome/crds/client/clientset/versioned"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// Labels the lab puts on its Nodes.
const (
	RackLabel = "topology.rhizome.dev/rack"
	RRLabel   = "rhizome.dev/route-reflector"
	// AgentNamespace holds the agents' Secrets and events.
	AgentNamespace = "rhizome-system"
)

type labClients struct {
	kube kubernetes.Interface
	rz   rzclient.Interface
}

func clientsFor(kubeconfig string) (*labClients, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	rc.QPS, rc.Burst = 200, 400
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	rz, err := rzclient.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	return &labClients{kube: kube, rz: rz}, nil
}

// applyClusterConfig creates the namespace, the default IPPool, the
// BGPConfiguration and the BGPPeers the plan's mode and ToRs call for.
func (l *Lab) applyClusterConfig(ctx context.Context, c *labClients) error {
	if _, err := c.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: AgentNamespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	blockSize := int32(26)
	if l.Plan.Opts.BlockSize != 0 {
		blockSize = int32(l.Plan.Opts.BlockSize)
	}
	mode := v1alpha1.EncapMode(l.Plan.EncapMode())
	pool := &v1alpha1.IPPool{
		ObjectMeta: metav1.ObjectMeta{Name: "default-ipv4"},
		Spec:       v1alpha1.IPPoolSpec{CIDR: PodPool.String(), BlockSize: &blockSize, NATOutgoing: true, IPIPMode: v1alpha1.EncapNever, VXLANMode: v1alpha1.EncapNever},
	}
	switch l.Plan.Opts.Encap {
	case "vxlan":
		pool.Spec.VXLANMode = mode
	case "ipip":
		pool.Spec.IPIPMode = mode
	}
	if _, err := c.rz.RhizomeV1alpha1().IPPools().Create(ctx, pool, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating the default IPPool: %w", err)
	}
	as := int64(ClusterAS)
	mesh := l.Plan.Opts.Mode == "mesh"
	bfd := l.bfdSpec()
	cfg := &v1alpha1.BGPConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.DefaultBGPConfigurationName},
		Spec: v1alpha1.BGPConfigurationSpec{
			ASNumber:       &as,
			NodeToNodeMesh: &mesh,
			KeepaliveTime:  &metav1.Duration{Duration: 3 * time.Second},
			HoldTime:       &metav1.Duration{Duration: 9 * time.Second},
			// On the mesh's sessions; ignored in rr mode (no mesh).
			NodeToNodeMeshBFD: bfd,
		},
	}
	if _, err := c.rz.RhizomeV1alpha1().BGPConfigurations().Create(ctx, cfg, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating the BGPConfiguration: %w", err)
	}
	if l.Plan.Opts.Mode == "rr" {
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
		peer := &v1alpha1.BGPPeer{
			ObjectMeta: metav1.ObjectMeta{Name: "to-route-reflectors"},
			Spec: v1alpha1.BGPPeerSpec{
				PeerSelector: &metav1.LabelSelector{MatchLabels: map[string]string{RRLabel: "true"}},
				BFD:          bfd,
			},
		}
		if _, err := c.rz.RhizomeV1alpha1().BGPPeers().Create(ctx, peer, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	if l.Plan.Opts.ToR != "none" {
		for _, r := range l.Plan.Racks {
			torAS := int64(r.ToRAS)
			peer := &v1alpha1.BGPPeer{
				ObjectMeta: metav1.ObjectMeta{Name: "tor-rack-" + strconv.Itoa(r.Index)},
				Spec: v1alpha1.BGPPeerSpec{
					PeerIP:        r.ToRAddr.Addr().String(),
					ASNumber:      &torAS,
					NodeSelector:  &metav1.LabelSelector{MatchLabels: map[string]string{RackLabel: strconv.Itoa(r.Index)}},
					KeepaliveTime: &metav1.Duration{Duration: 3 * time.Second},
					HoldTime:      &metav1.Duration{Duration: 9 * time.Second},
					BFD:           bfd,
				},
			}
			if _, err := c.rz.RhizomeV1alpha1().BGPPeers().Create(ctx, peer, metav1.CreateOptions{}); err != nil {
				return err
			}
		}
	}
	return nil
}

// registerNode creates the Node object of a lab node, with its address in
// status as a kubelet would report it, and its agent's pod (agentpods.go).
func (l *Lab) registerNode(ctx context.Context, c *labClients, n NodePlan) error {
	labels := map[string]string{
		"kubernetes.io/hostname": n.Name,
		"kubernetes.io/os":       "linux",
		RackLabel:                strconv.Itoa(n.Rack),
	}
	if n.RouteReflector {
		labels[RRLabel] = "true"
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: labels}}
	created, err := c.kube.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating Node %s: %w", n.Name, err)
	}
	created.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: n.Addr.Addr().String()},
		{Type: corev1.NodeHostName, Address: n.Name},
	}
	created.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "RhizomeLab", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
	if _, err := c.kube.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("setting the address of Node %s: %w", n.Name, err)
	}
	if err := l.writeConflist(n.Name); err != nil {
		return err
	}
	return l.registerAgentPod(ctx, c, n)
}

// bfdSpec is the BFD setting of the lab's sessions; nil without --bfd.
func (l *Lab) bfdSpec() *v1alpha1.BFD {
	iv, mult, err := ParseBFD(l.Plan.Opts.BFD)
	if l.Plan.Opts.BFD == "" || err != nil {
		return nil
	}
	on, m := true, int32(mult)
	return &v1alpha1.BFD{Enabled: &on, MinTxInterval: &metav1.Duration{Duration: iv}, MinRxInterval: &metav1.Duration{Duration: iv}, Multiplier: &m}
}
