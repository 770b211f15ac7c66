//go:build e2e

package e2e

// The doctor as an operator meets it (issue 17): silent on a healthy lab,
// naming each fault injected into a node.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/test/lab"
)

type doctorFinding struct {
	Check, Severity, Message string
}

// runDoctor runs the doctor in node-1 and returns its findings and exit
// code.
func runDoctor(t *testing.T, l *lab.Lab) ([]doctorFinding, int) {
	t.Helper()
	out, err := ctl(t, l, "lab", "exec", "node-1", "--", "rhizomectl", "doctor", "-o", "json")
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var doc struct{ Findings []doctorFinding }
	if jerr := json.Unmarshal(out, &doc); jerr != nil {
		t.Fatalf("doctor -o json: %v (%v)\n%s", jerr, err, out)
	}
	return doc.Findings, code
}

func doctorFaults(t *testing.T, l *lab.Lab) {
	// The faults' inject and revert run inside subtests with this t: they
	// report, they do not stop (FailNow is for a test's own goroutine).
	sh := func(target string, args ...string) {
		t.Helper()
		if out, err := l.Exec(context.Background(), target, args...); err != nil {
			t.Errorf("%v\n%s", err, out)
		}
	}
	check := func(err error) {
		t.Helper()
		if err != nil {
			t.Error(err)
		}
	}
	findings, code := runDoctor(t, l)
	if len(findings) != 0 || code != 0 {
		t.Fatalf("doctor on the healthy lab: exit %d, %+v", code, findings)
	}
	// The pods of node-1 and of node-2 (another rack: through VXLAN).
	var pod1, pod2 lab.PodRecord
	for _, p := range l.State.Pods {
		switch p.Node {
		case "node-1":
			pod1 = p
		case "node-2":
			pod2 = p
		}
	}
	addr1, addr2 := strings.Split(pod1.Addresses[0], "/")[0], strings.Split(pod2.Addresses[0], "/")[0]
	dev1, dev2 := routeDev(t, l, "node-1", addr1), routeDev(t, l, "node-2", addr2)
	rack2 := 0
	for _, n := range l.Plan.Nodes {
		if n.Name == "node-2" {
			rack2 = n.Rack
		}
	}
	rz := rzClient(t, l)
	pools := rz.RhizomeV1alpha1().IPPools()
	setNAT := func(on bool) func() {
		return func() {
			_, err := pools.Patch(context.Background(), podPoolName, types.MergePatchType, []byte(fmt.Sprintf(`{"spec":{"natOutgoing":%v}}`, on)), metav1.PatchOptions{})
			check(err)
		}
	}
	otherConf := filepath.Join(l.Dir, "nodes", "node-1", "cni-net.d", "05-other.conflist")
	type fault struct {
		name           string
		inject, revert func()
		want           []string // the checks expected, sorted
		code           int
	}
	cases := []fault{
		{"nftables forward policy drop",
			func() {
				sh("node-1", "nft", "add table inet ops-fw; add chain inet ops-fw fwchain { type filter hook forward priority 0; policy drop; }; add rule inet ops-fw fwchain ct state established accept")
			},
			func() { sh("node-1", "nft", "delete", "table", "inet", "ops-fw") },
			[]string{"firewall"}, 3},
		{"iptables FORWARD drop rule for the pods",
			func() { sh("node-1", "iptables", "-A", "FORWARD", "-d", lab.PodPool.String(), "-j", "DROP") },
			func() { sh("node-1", "iptables", "-D", "FORWARD", "-d", lab.PodPool.String(), "-j", "DROP") },
			[]string{"firewall"}, 3},
		{"legacy iptables FORWARD policy DROP",
			func() { sh("node-1", "iptables-legacy", "-P", "FORWARD", "DROP") },
			func() { sh("node-1", "iptables-legacy", "-P", "FORWARD", "ACCEPT") },
			[]string{"firewall"}, 3},
		{"another CNI configuration sorts first",
			func() {
				check(os.WriteFile(otherConf, []byte(`{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"bridge","bridge":"cni0"}]}`), 0o644))
			},
			func() { check(os.Remove(otherConf)) },
			[]string{"cni-config"}, 3},
		{"pod interface without proxy ARP",
			func() { sh("node-1", "sysctl", "-qw", "net.ipv4.conf."+dev1+".proxy_arp=0") },
			func() { sh("node-1", "sysctl", "-qw", "net.ipv4.conf."+dev1+".proxy_arp=1") },
			[]string{"pod-interfaces"}, 3},
		{"pod interface without its route",
			func() { sh("node-1", "ip", "route", "del", addr1+"/32") },
			func() { sh("node-1", "ip", "route", "add", addr1+"/32", "dev", dev1, "scope", "link") },
			[]string{"pod-interfaces", "pod-routes"}, 3},
		{"a pod on another node does not answer",
			func() { sh("node-2", "ip", "route", "del", addr2+"/32") },
			func() { sh("node-2", "ip", "route", "add", addr2+"/32", "dev", dev2, "scope", "link") },
			[]string{"probe"}, 3},
		{"path MTU below the pod MTU on the way to another rack",
			func() { sh(fmt.Sprintf("tor-%d", rack2), "ip", "link", "set", "n2", "mtu", "1400") },
			func() { sh(fmt.Sprintf("tor-%d", rack2), "ip", "link", "set", "n2", "mtu", "1500") },
			[]string{"path-mtu"}, 3},
		{"pool without natOutgoing and no router learning it", setNAT(false), setNAT(true), []string{"return-path"}, 2},
	}
	// An IPIP pool that selects no node (so no agent builds a device for
	// it): the doctor still says the kernel cannot serve it. This
	// machine's kernel has no ipip module, a real positive case; where it
	// has one, the same pool must raise nothing.
	ipipPool := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "ops-ipip"}, Spec: v1alpha1.IPPoolSpec{CIDR: "10.246.0.0/16",
		IPIPMode: v1alpha1.EncapAlways, VXLANMode: v1alpha1.EncapNever, NATOutgoing: true, NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"rhizome.dev/ops-test": "none"}}}}
	want, code := []string{"kernel-modules"}, 3
	if moduleAvailable("ipip") {
		want, code = nil, 0
	}
	cases = append(cases, fault{"IPIP pool on this kernel",
		func() { _, err := pools.Create(context.Background(), ipipPool, metav1.CreateOptions{}); check(err) },
		func() { check(pools.Delete(context.Background(), ipipPool.Name, metav1.DeleteOptions{})) },
		want, code})

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.inject()
			findings, code := runDoctor(t, l)
			c.revert()
			var got []string
			for _, f := range findings {
				got = append(got, f.Check)
			}
			sort.Strings(got)
			if !slices.Equal(got, c.want) || code != c.code {
				t.Errorf("doctor after the fault: exit %d, findings %+v; want exactly %v and exit %d", code, findings, c.want, c.code)
			}
		})
	}
	// Every fault undone: silent again (the agent re-added nothing by
	// hand; what the test broke it restored).
	eventually(t, 30*time.Second, "doctor silent after the faults are undone", func() (bool, string) {
		f, code := runDoctor(t, l)
		return len(f) == 0 && code == 0, fmt.Sprintf("exit %d %+v", code, f)
	})
}
