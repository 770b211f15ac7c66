package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/internal/kubecore/fromclientset"
	"github.com/rhizome-net/rhizome/ipam"
)

// poolRow is one pool in rhizomectl pools -o json|yaml.
type poolRow struct {
	Name           string   `json:"name"`
	CIDR           string   `json:"cidr"`
	BlockSize      string   `json:"blockSize"`
	Encapsulation  string   `json:"encapsulation"`
	NATOutgoing    bool     `json:"natOutgoing"`
	State          string   `json:"state"`
	Blocks         int64    `json:"blocks"`
	BlocksInUse    int64    `json:"blocksInUse"`
	AddressesInUse int64    `json:"addressesInUse"`
	AddressesFree  int64    `json:"addressesFree"`
	Conditions     []string `json:"conditions"`
}

func poolRowOf(p *v1alpha1.IPPool) poolRow {
	r := poolRow{Name: p.Name, CIDR: p.Spec.CIDR, BlockSize: "default", Encapsulation: "none", NATOutgoing: p.Spec.NATOutgoing, State: "enabled",
		Blocks: int64(p.Status.Blocks), BlocksInUse: int64(p.Status.BlocksInUse), AddressesInUse: int64(p.Status.AddressesInUse),
		AddressesFree: int64(p.Status.AddressesFree), Conditions: []string{}}
	if p.Spec.BlockSize != nil {
		r.BlockSize = fmt.Sprint(*p.Spec.BlockSize)
	}
	if p.Spec.VXLANMode != "" && p.Spec.VXLANMode != v1alpha1.EncapNever {
		r.Encapsulation = "vxlan " + string(p.Spec.VXLANMode)
	}
	if p.Spec.IPIPMode != "" && p.Spec.IPIPMode != v1alpha1.EncapNever {
		r.Encapsulation = "ipip " + string(p.Spec.IPIPMode)
	}
	if p.Spec.Disabled {
		r.State = "disabled"
	}
	if p.DeletionTimestamp != nil {
		r.State = "deleting"
	}
	for _, cnd := range p.Status.Conditions {
		if cnd.Status == metav1.ConditionTrue {
			r.Conditions = append(r.Conditions, cnd.Type)
		}
	}
	return r
}

func (g *globals) poolsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "pools",
		Short: "IP pools with their use (blocks, addresses) and conditions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			pools, err := c.rz.RhizomeV1alpha1().IPPools().List(cmd.Context(), metav1.ListOptions{})
			if err != nil {
				return err
			}
			rows := make([]poolRow, 0, len(pools.Items))
			for i := range pools.Items {
				rows = append(rows, poolRowOf(&pools.Items[i]))
			}
			return g.emit(listOf(rows), func(w io.Writer, wide bool) error {
				fmt.Fprintln(w, "NAME\tCIDR\tBLOCK\tENCAP\tNAT\tSTATE\tBLOCKS USED\tADDRESSES USED\tFREE\tCONDITIONS")
				for _, r := range rows {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%v\t%s\t%d/%d\t%d\t%d\t%s\n", r.Name, r.CIDR, r.BlockSize, r.Encapsulation, r.NATOutgoing, r.State,
						r.BlocksInUse, r.Blocks, r.AddressesInUse, r.AddressesFree, strings.Join(r.Conditions, ","))
				}
				return nil
			})
		},
	}
}

// blockRow and allocationRow are rhizomectl ipam show's documents.
type blockRow struct {
	CIDR       string `json:"cidr"`
	Affinity   string `json:"affinity,omitempty"`
	Allocated  int    `json:"allocated"`
	Borrowed   int64  `json:"borrowed"`
	EmptySince string `json:"emptySince,omitempty"`
}

type allocationRow struct {
	Address   string `json:"address"`
	Block     string `json:"block"`
	Affinity  string `json:"affinity,omitempty"`
	Node      string `json:"node,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Pod       string `json:"pod,omitempty"`
	Handle    string `json:"handle"`
}

func (g *globals) ipamCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "ipam", Short: "Inspect and repair address allocations"}
	var node string
	var allocations bool
	show := &cobra.Command{
		Use:   "show",
		Short: "Blocks (CIDR, owner, use) and, with --allocations, every allocated address",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			blocks, err := c.rz.RhizomeV1alpha1().IPAMBlocks().List(cmd.Context(), metav1.ListOptions{})
			if err != nil {
				return err
			}
			items := blocks.Items
			sort.Slice(items, func(i, j int) bool { return lessCIDR(items[i].Spec.CIDR, items[j].Spec.CIDR) })
			var brows []blockRow
			var arows []allocationRow
			for _, b := range items {
				if node != "" && b.Spec.Affinity != node && !allocatedBy(&b, node) {
					continue
				}
				if !allocations {
					r := blockRow{CIDR: b.Spec.CIDR, Affinity: b.Spec.Affinity, Allocated: len(b.Spec.Allocations), Borrowed: int64(b.Status.Borrowed)}
					if b.Spec.EmptySince != nil {
						r.EmptySince = b.Spec.EmptySince.UTC().Format("2006-01-02T15:04:05Z")
					}
					brows = append(brows, r)
					continue
				}
				for _, al := range b.Spec.Allocations {
					if node != "" && al.Node != node && b.Spec.Affinity != node {
						continue
					}
					arows = append(arows, allocationRow{Address: al.Address, Block: b.Spec.CIDR, Affinity: b.Spec.Affinity, Node: al.Node,
						Namespace: al.Namespace, Pod: al.Pod, Handle: al.Handle})
				}
			}
			if allocations {
				return g.emit(listOf(arows), func(w io.Writer, _ bool) error {
					fmt.Fprintln(w, "ADDRESS\tBLOCK\tBLOCK OWNER\tALLOCATED BY\tPOD\tHANDLE")
					for _, r := range arows {
						pod := "-"
						if r.Pod != "" {
							pod = r.Namespace + "/" + r.Pod
						}
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Address, r.Block, orDash(r.Affinity), orDash(r.Node), pod, r.Handle)
					}
					return nil
				})
			}
			return g.emit(listOf(brows), func(w io.Writer, _ bool) error {
				fmt.Fprintln(w, "BLOCK\tOWNER\tALLOCATED\tBORROWED\tEMPTY SINCE")
				for _, r := range brows {
					fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\n", r.CIDR, orDash(r.Affinity), r.Allocated, r.Borrowed, orDash(r.EmptySince))
				}
				return nil
			})
		},
	}
	show.Flags().StringVar(&node, "node", "", "only blocks owned by, or addresses allocated by, this node")
	show.Flags().BoolVar(&allocations, "allocations", false, "list every allocated address")

	check := &cobra.Command{
		Use:   "check",
		Short: "Find leaks and inconsistencies between blocks, pools, nodes and pods; exit 1 if any",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			findings, err := checkIPAM(cmd.Context(), c)
			if err != nil {
				return err
			}
			err = g.emit(struct {
				Findings []finding `json:"findings"`
			}{append([]finding{}, findings...)}, func(w io.Writer, _ bool) error {
				for _, f := range findings {
					fmt.Fprintf(w, "%s: %s\n", f.Kind, f.Message)
				}
				if len(findings) == 0 {
					fmt.Fprintln(w, "ipam check: no leaks or inconsistencies")
				}
				return nil
			})
			if err != nil {
				return err
			}
			if len(findings) > 0 {
				return fmt.Errorf("%d problem(s) found", len(findings))
			}
			return nil
		},
	}

	var force bool
	release := &cobra.Command{
		Use:   "release ADDRESS",
		Short: "Free one allocated address; refuses an address whose pod exists unless --force",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr, err := netip.ParseAddr(args[0])
			if err != nil {
				return fmt.Errorf("%q is not an IP address", args[0])
			}
			c, err := g.clients()
			if err != nil {
				return err
			}
			rel, err := ipam.ReleaseAddress(cmd.Context(), fromclientset.Rhizome(c.rz.RhizomeV1alpha1()), fromclientset.Wrap(c.kube), addr, ipam.ReleaseOptions{Force: force})
			if errors.Is(err, ipam.ErrInUse) {
				return fmt.Errorf("%w\n(add --force to release it anyway)", err)
			}
			if err != nil {
				return err
			}
			doc := allocationRow{Address: rel.Addr.String(), Block: rel.Block, Node: rel.Node, Namespace: rel.Namespace, Pod: rel.Pod, Handle: rel.Handle}
			return g.emit(doc, func(w io.Writer, _ bool) error {
				pod := "no pod"
				if rel.Pod != "" {
					pod = "pod " + rel.Namespace + "/" + rel.Pod
				}
				_, err := fmt.Fprintf(w, "released %s (block %s, handle %s, %s, node %s)\n", rel.Addr, rel.Block, rel.Handle, pod, orDash(rel.Node))
				return err
			})
		},
	}
	release.Flags().BoolVar(&force, "force", false, "release even if the address's pod still exists")
	cmd.AddCommand(show, check, release)
	return cmd
}

func allocatedBy(b *v1alpha1.IPAMBlock, node string) bool {
	for _, al := range b.Spec.Allocations {
		if al.Node == node {
			return true
		}
	}
	return false
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func lessCIDR(a, b string) bool {
	pa, ea := netip.ParsePrefix(a)
	pb, eb := netip.ParsePrefix(b)
	if ea != nil || eb != nil {
		return a < b
	}
	return pa.Addr().Less(pb.Addr())
}

// finding is one problem ipam check reports.
type finding struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

// checkIPAM cross-checks IPAMBlocks against IPPools, Nodes and Pods.
func checkIPAM(ctx context.Context, c *clusterClients) ([]finding, error) {
	blocks, err := c.rz.RhizomeV1alpha1().IPAMBlocks().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	pools, err := c.rz.RhizomeV1alpha1().IPPools().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	nodes, err := c.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	pods, err := c.kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	return analyzeIPAM(blocks.Items, pools.Items, nodes.Items, pods.Items), nil
}

// analyzeIPAM is checkIPAM's pure part, table-tested.
func analyzeIPAM(blocks []v1alpha1.IPAMBlock, pools []v1alpha1.IPPool, nodes []corev1.Node, pods []corev1.Pod) []finding {
	var out []finding
	add := func(kind, format string, args ...any) {
		out = append(out, finding{Kind: kind, Message: fmt.Sprintf(format, args...)})
	}
	nodeSet := map[string]bool{}
	for _, n := range nodes {
		nodeSet[n.Name] = true
	}
	var poolCIDRs []netip.Prefix
	for _, p := range pools {
		if pfx, err := netip.ParsePrefix(p.Spec.CIDR); err == nil {
			poolCIDRs = append(poolCIDRs, pfx)
		}
	}
	inPool := func(a netip.Addr) bool {
		for _, p := range poolCIDRs {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	type podKey struct{ ns, name string }
	podByKey := map[podKey]*corev1.Pod{}
	for i := range pods {
		podByKey[podKey{pods[i].Namespace, pods[i].Name}] = &pods[i]
	}
	allocated := map[netip.Addr]string{} // address → "block handle"
	for _, b := range blocks {
		cidr, err := netip.ParsePrefix(b.Spec.CIDR)
		if err != nil {
			add("invalid-block", "block %s has an unparsable cidr %q", b.Name, b.Spec.CIDR)
			continue
		}
		if !inPool(cidr.Addr()) {
			add("orphan-block", "block %s (%s) lies in no IPPool; its %d allocations cannot be served or advertised", b.Name, cidr, len(b.Spec.Allocations))
		}
		if b.Spec.Affinity != "" && !nodeSet[b.Spec.Affinity] {
			add("stale-affinity", "block %s is owned by node %s, which does not exist; the IPAM controller frees it once empty", cidr, b.Spec.Affinity)
		}
		for _, al := range b.Spec.Allocations {
			a, err := netip.ParseAddr(al.Address)
			if err != nil {
				continue
			}
			if prev, ok := allocated[a]; ok {
				add("duplicate", "%s is allocated twice: %s and block %s handle %s", a, prev, cidr, al.Handle)
			}
			allocated[a] = "block " + cidr.String() + " handle " + al.Handle
			if al.Node != "" && !nodeSet[al.Node] {
				add("leak", "%s (block %s) was allocated by node %s, which no longer exists (handle %s)", a, cidr, al.Node, al.Handle)
			}
			if al.Pod != "" {
				p, ok := podByKey[podKey{al.Namespace, al.Pod}]
				switch {
				case !ok:
					add("leak", "%s (block %s) belongs to pod %s/%s, which no longer exists (handle %s); the garbage collector frees it after its grace period, or run: rhizomectl ipam release %s", a, cidr, al.Namespace, al.Pod, al.Handle, a)
				case p.Spec.NodeName != "" && al.Node != "" && p.Spec.NodeName != al.Node:
					add("node-mismatch", "%s is held for pod %s/%s by node %s, but the pod runs on %s", a, al.Namespace, al.Pod, al.Node, p.Spec.NodeName)
				}
			}
		}
	}
	for _, p := range pods {
		if p.Spec.HostNetwork {
			continue
		}
		for _, ip := range p.Status.PodIPs {
			a, err := netip.ParseAddr(ip.IP)
			if err != nil || !inPool(a) {
				continue
			}
			if _, ok := allocated[a]; !ok {
				add("unallocated", "pod %s/%s uses %s, which no block allocates: another pod may be given the same address", p.Namespace, p.Name, a)
			}
		}
	}
	for _, p := range pools {
		if cond := meta.FindStatusCondition(p.Status.Conditions, "Exhausted"); cond != nil && cond.Status == metav1.ConditionTrue {
			add("exhausted", "pool %s (%s) is exhausted: %s", p.Name, p.Spec.CIDR, cond.Message)
		}
	}
	return out
}
