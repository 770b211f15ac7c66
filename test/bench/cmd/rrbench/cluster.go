package main

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	rzclient "github.com/rhizome-net/rhizome/crds/client/clientset/versioned"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/ipam/blockmath"
	"github.com/rhizome-net/rhizome/test/controlplane"
)

// cluster is the API server the Rhizome reflector reads: the Node,
// RhizomeNode and IPAMBlock of every client as a cluster of that size holds
// them, and the reflector's own Node and configuration. Clients are added
// as the invocation moves to larger N and never removed: runs go from the
// smallest N up.
type cluster struct {
	cp      *controlplane.ControlPlane
	kube    kubernetes.Interface
	rz      rzclient.Interface
	port    int
	clients int // how many clients exist
}

// agentNamespace is where the agent runs (its Events, the IPAM Lease).
const agentNamespace = "rhizome-system"

// RRLabel marks the reflector node (deploy/overlays/route-reflector).
const rrLabel = "rhizome.dev/route-reflector"

func startCluster(ctx context.Context, dir string) (*cluster, error) {
	cp, err := controlplane.Start(ctx, controlplane.Options{Dir: dir, Log: os.Stderr})
	if err != nil {
		return nil, err
	}
	c := &cluster{cp: cp}
	rc := cp.RESTConfig()
	rc.QPS, rc.Burst = 1000, 1000
	if c.kube, err = kubernetes.NewForConfig(rc); err != nil {
		cp.Stop()
		return nil, err
	}
	if c.rz, err = rzclient.NewForConfig(rc); err != nil {
		cp.Stop()
		return nil, err
	}
	u, err := url.Parse(cp.URL)
	if err == nil {
		c.port, err = strconv.Atoi(u.Port())
	}
	if err != nil {
		cp.Stop()
		return nil, fmt.Errorf("control plane URL %q: %w", cp.URL, err)
	}
	if err := c.base(ctx); err != nil {
		cp.Stop()
		return nil, err
	}
	return c, nil
}

func (c *cluster) stop() { c.cp.Stop() }

// base creates what does not depend on N: the pool, the BGP
// configuration (no mesh; the reflector's cluster ID), the BGPPeer that
// makes every node peer with the reflectors (deploy/overlays/route-reflector)
// and the reflector's Node.
func (c *cluster) base(ctx context.Context) error {
	rz := c.rz.RhizomeV1alpha1()
	as := int64(asn)
	mesh := false
	bs := int32(blockBits)
	objs := []func() error{
		func() error {
			// The agent's namespace: its Events and the IPAM controller's
			// Lease (the reflector is the only agent, so it leads).
			_, err := c.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: agentNamespace}}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := rz.IPPools().Create(ctx, &v1alpha1.IPPool{
				ObjectMeta: metav1.ObjectMeta{Name: "bench"},
				Spec:       v1alpha1.IPPoolSpec{CIDR: poolCIDR, BlockSize: &bs, VXLANMode: v1alpha1.EncapNever, IPIPMode: v1alpha1.EncapNever},
			}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := rz.BGPConfigurations().Create(ctx, &v1alpha1.BGPConfiguration{
				ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.DefaultBGPConfigurationName},
				Spec:       v1alpha1.BGPConfigurationSpec{ASNumber: &as, NodeToNodeMesh: &mesh},
			}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := rz.BGPConfigurations().Create(ctx, &v1alpha1.BGPConfiguration{
				ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.NodeBGPConfigurationPrefix + rrNode},
				Spec:       v1alpha1.BGPConfigurationSpec{RouteReflectorClusterID: clusterID},
			}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := rz.BGPPeers().Create(ctx, &v1alpha1.BGPPeer{
				ObjectMeta: metav1.ObjectMeta{Name: "to-route-reflectors"},
				Spec: v1alpha1.BGPPeerSpec{
					PeerSelector: &metav1.LabelSelector{MatchLabels: map[string]string{rrLabel: "true"}},
				},
			}, metav1.CreateOptions{})
			return err
		},
		func() error {
			return c.node(ctx, rrNode, netip.MustParseAddr(rrAddr), map[string]string{rrLabel: "true"})
		},
	}
	for _, f := range objs {
		if err := f(); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	return nil
}

// grow creates clients up to n (Node, RhizomeNode with status, IPAMBlock
// with allocations), 16 at a time.
func (c *cluster) grow(ctx context.Context, n int) error {
	if n <= c.clients {
		return nil
	}
	start := time.Now()
	work := make(chan int)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if err := c.client(ctx, i, n); err != nil {
					select {
					case errc <- fmt.Errorf("client %d: %w", i, err):
					default:
					}
				}
			}
		}()
	}
	// Borrowers' /32s live in the next client's block, so the last client
	// of the previous size (which borrowed from block 0) and client 0 are
	// written again.
	if c.clients > 0 {
		work <- 0
		if c.clients > 1 {
			work <- c.clients - 1
		}
	}
	for i := c.clients; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
	}
	fmt.Fprintf(os.Stderr, "rrbench: %d clients in the API server (%d new in %s)\n", n, n-c.clients, time.Since(start).Round(time.Second))
	c.clients = n
	return nil
}

// client writes client i of n: what its kubelet and agent would have
// written.
func (c *cluster) client(ctx context.Context, i, n int) error {
	name := clientName(i)
	addr := clientAddr(i)
	if err := c.node(ctx, name, addr, nil); err != nil {
		return err
	}
	rz := c.rz.RhizomeV1alpha1()
	rzn := &v1alpha1.RhizomeNode{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       v1alpha1.RhizomeNodeSpec{IPv4Address: netip.PrefixFrom(addr, 16).String(), VXLANTunnelMACAddr: fmt.Sprintf("66:%02x:%02x:%02x:%02x:%02x", 0xac, 20, byte(i>>16), byte(i>>8), byte(i))},
	}
	created, err := rz.RhizomeNodes().Create(ctx, rzn, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = rz.RhizomeNodes().Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return err
	}
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	created.Status = v1alpha1.RhizomeNodeStatus{
		RouterID: addr.String(), ASNumber: asn, SessionsEstablished: "1/1",
		Sessions: []v1alpha1.BGPSessionStatus{{
			Peer: rrAddr, PeerAS: asn, Kind: v1alpha1.SessionRR, Source: "to-route-reflectors", State: "Established",
			Since: &now, PrefixesReceived: int64(n), PrefixesAccepted: int64(n), PrefixesAdvertised: 1,
		}},
		RoutesProgrammed: int64(n),
		Blocks:           []string{block(i).String()},
		ObservedAt:       &now,
		Conditions: []metav1.Condition{
			{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Ready", LastTransitionTime: now},
			{Type: "BGPReady", Status: metav1.ConditionTrue, Reason: "AllSessionsEstablished", Message: "1/1 sessions established", LastTransitionTime: now},
			{Type: "RoutesSynced", Status: metav1.ConditionTrue, Reason: "Synced", LastTransitionTime: now},
		},
	}
	if a, ok := borrowed(i, n); ok {
		created.Status.BorrowedAddresses = []string{a.String()}
	}
	if _, err := rz.RhizomeNodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return err
	}
	// The block: the node's pods' addresses, and the address a borrower
	// holds in it. Pods are not modelled as objects: allocations without a
	// pod stay until their node goes (the IPAM controller's rule), so the
	// reflector's garbage collector leaves them alone.
	b := block(i)
	blk := &v1alpha1.IPAMBlock{
		ObjectMeta: metav1.ObjectMeta{Name: blockmath.Name(b)},
		Spec:       v1alpha1.IPAMBlockSpec{CIDR: b.String(), Affinity: name},
	}
	a := b.Addr()
	for k := range 16 {
		a = a.Next()
		blk.Spec.Allocations = append(blk.Spec.Allocations, v1alpha1.IPAMAllocation{
			Address: a.String(), Handle: fmt.Sprintf("%064x.eth0", uint64(i)<<20|uint64(k)), Node: name,
		})
	}
	if j := (i + n - 1) % n; j != i {
		if ba, ok := borrowed(j, n); ok && b.Contains(ba) {
			blk.Spec.Allocations = append(blk.Spec.Allocations, v1alpha1.IPAMAllocation{
				Address: ba.String(), Handle: fmt.Sprintf("%064x.eth0", uint64(j)<<20|0xfffff), Node: clientName(j),
			})
			blk.Status.Borrowed++
		}
	}
	blk.Status.Allocated = int32(len(blk.Spec.Allocations))
	_, err = rz.IPAMBlocks().Create(ctx, blk, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		var cur *v1alpha1.IPAMBlock
		if cur, err = rz.IPAMBlocks().Get(ctx, blk.Name, metav1.GetOptions{}); err == nil {
			cur.Spec, cur.Status = blk.Spec, blk.Status
			_, err = rz.IPAMBlocks().Update(ctx, cur, metav1.UpdateOptions{})
		}
	}
	return err
}

// node creates a Node as a kubelet registers it: labels, addresses,
// conditions, capacity and the images it holds. The reflector's agent
// caches every Node of the cluster, so their size is part of its memory.
func (c *cluster) node(ctx context.Context, name string, addr netip.Addr, extra map[string]string) error {
	labels := map[string]string{
		"kubernetes.io/hostname":           name,
		"kubernetes.io/os":                 "linux",
		"kubernetes.io/arch":               "amd64",
		"beta.kubernetes.io/os":            "linux",
		"beta.kubernetes.io/arch":          "amd64",
		"node.kubernetes.io/instance-type": "m5.2xlarge",
		"topology.kubernetes.io/region":    "eu-west-1",
		"topology.kubernetes.io/zone":      "eu-west-1" + string(rune('a'+len(name)%3)),
	}
	for k, v := range extra {
		labels[k] = v
	}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: map[string]string{
		"node.alpha.kubernetes.io/ttl":                           "0",
		"volumes.kubernetes.io/controller-managed-attach-detach": "true",
	}}}
	created, err := c.kube.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err != nil {
		return err
	}
	now := metav1.Now()
	res := corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("32Gi"),
		corev1.ResourcePods: resource.MustParse("110"), corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	created.Status = corev1.NodeStatus{
		Capacity: res, Allocatable: res,
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: addr.String()},
			{Type: corev1.NodeHostName, Address: name},
		},
		NodeInfo: corev1.NodeSystemInfo{
			MachineID: fmt.Sprintf("%032x", len(name)), KernelVersion: "6.1.0-18-amd64", OSImage: "Debian GNU/Linux 12 (bookworm)",
			ContainerRuntimeVersion: "containerd://2.0.0", KubeletVersion: "v1.33.0", OperatingSystem: "linux", Architecture: "amd64",
		},
	}
	for _, t := range []corev1.NodeConditionType{corev1.NodeMemoryPressure, corev1.NodeDiskPressure, corev1.NodePIDPressure} {
		created.Status.Conditions = append(created.Status.Conditions, corev1.NodeCondition{Type: t, Status: corev1.ConditionFalse,
			Reason: "KubeletHas" + "No" + string(t), Message: "kubelet has no " + string(t), LastHeartbeatTime: now, LastTransitionTime: now})
	}
	created.Status.Conditions = append(created.Status.Conditions, corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
		Reason: "KubeletReady", Message: "kubelet is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now})
	for k := range 12 {
		created.Status.Images = append(created.Status.Images, corev1.ContainerImage{
			Names: []string{
				fmt.Sprintf("registry.example.com/team-%d/service@sha256:%064x", k, k),
				fmt.Sprintf("registry.example.com/team-%d/service:v1.%d.0", k, k),
			},
			SizeBytes: int64(50+k) << 20,
		})
	}
	_, err = c.kube.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
	return err
}
