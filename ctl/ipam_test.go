package ctl

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

func TestAnalyzeIPAM(t *testing.T) {
	pools := []v1alpha1.IPPool{{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.0/16"},
		Status: v1alpha1.IPPoolStatus{Conditions: []metav1.Condition{{Type: "Exhausted", Status: metav1.ConditionFalse}}}}}
	nodes := []corev1.Node{{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, {ObjectMeta: metav1.ObjectMeta{Name: "n2"}}}
	pod := func(ns, name, node, ip string) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.PodSpec{NodeName: node}}
		if ip != "" {
			p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
		}
		return p
	}
	block := func(cidr, aff string, als ...v1alpha1.IPAMAllocation) v1alpha1.IPAMBlock {
		return v1alpha1.IPAMBlock{ObjectMeta: metav1.ObjectMeta{Name: cidr}, Spec: v1alpha1.IPAMBlockSpec{CIDR: cidr, Affinity: aff, Allocations: als}}
	}
	al := func(addr, handle, ns, pod, node string) v1alpha1.IPAMAllocation {
		return v1alpha1.IPAMAllocation{Address: addr, Handle: handle, Namespace: ns, Pod: pod, Node: node}
	}
	cases := []struct {
		name   string
		blocks []v1alpha1.IPAMBlock
		pods   []corev1.Pod
		want   []string // finding kinds with a distinctive part of the message
	}{
		{name: "healthy", blocks: []v1alpha1.IPAMBlock{block("10.244.0.0/26", "n1", al("10.244.0.1", "a.eth0", "default", "web", "n1"), al("10.244.0.0", "rhizome-tunnel.vxlan.n1", "", "", "n1"))},
			pods: []corev1.Pod{pod("default", "web", "n1", "10.244.0.1")}},
		{name: "pod gone", blocks: []v1alpha1.IPAMBlock{block("10.244.0.0/26", "n1", al("10.244.0.1", "a.eth0", "default", "web", "n1"))},
			want: []string{"leak: 10.244.0.1 (block 10.244.0.0/26) belongs to pod default/web, which no longer exists"}},
		{name: "allocating node gone", blocks: []v1alpha1.IPAMBlock{block("10.244.0.0/26", "n1", al("10.244.0.2", "b.eth0", "", "", "n9"))},
			want: []string{"leak: 10.244.0.2 (block 10.244.0.0/26) was allocated by node n9"}},
		{name: "owner gone", blocks: []v1alpha1.IPAMBlock{block("10.244.0.64/26", "n9")},
			want: []string{"stale-affinity: block 10.244.0.64/26 is owned by node n9"}},
		{name: "outside every pool", blocks: []v1alpha1.IPAMBlock{block("10.99.0.0/26", "n1")},
			want: []string{"orphan-block: block 10.99.0.0/26"}},
		{name: "pod address nobody allocated", pods: []corev1.Pod{pod("default", "ghost", "n1", "10.244.3.3")},
			want: []string{"unallocated: pod default/ghost uses 10.244.3.3"}},
		{name: "held by the wrong node", blocks: []v1alpha1.IPAMBlock{block("10.244.0.0/26", "n1", al("10.244.0.1", "a.eth0", "default", "web", "n1"))},
			pods: []corev1.Pod{pod("default", "web", "n2", "10.244.0.1")},
			want: []string{"node-mismatch: 10.244.0.1 is held for pod default/web by node n1, but the pod runs on n2"}},
		{name: "allocated twice", blocks: []v1alpha1.IPAMBlock{
			block("10.244.0.0/26", "n1", al("10.244.0.1", "a.eth0", "", "", "n1")),
			block("10.244.0.0/27", "n2", al("10.244.0.1", "b.eth0", "", "", "n2"))},
			want: []string{"duplicate: 10.244.0.1 is allocated twice"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := analyzeIPAM(c.blocks, pools, nodes, c.pods)
			if len(got) != len(c.want) {
				t.Fatalf("findings %+v, want %d", got, len(c.want))
			}
			for i, w := range c.want {
				if s := got[i].Kind + ": " + got[i].Message; !strings.HasPrefix(s, w) {
					t.Errorf("finding %q, want it to start with %q", s, w)
				}
			}
		})
	}
}
