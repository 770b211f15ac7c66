//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	rzclient "github.com/rhizome-net/rhizome/crds/client/clientset/versioned"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/ipam/blockmath"
	"github.com/rhizome-net/rhizome/test/lab"
)

// TestRogueNode (issue 15 item 1, design note 0014): a machine registered
// as a Node runs a real gobgpd instead of our agent, and every agent peers
// with it as with any node of the mesh. It announces other nodes' routes in
// every shape: a block, a more specific of it, a pod's address, an address
// another node's pod borrowed, a block of the borrowed addresses' node,
// the pool, a default route, a prefix outside every pool, a block of its
// own through another node's address, and a block nobody has claimed yet.
// Nothing of it may reach any node's kernel, as an `ip monitor route` on a
// node sees throughout, while 10 ms pings to a pod and to a genuinely
// borrowed address lose nothing; the agents count the rejections by reason
// (metrics, rhizomectl bgp peers) and warn with an Event. The unclaimed
// block was held: once its IPAMBlock names the rogue node, it is installed
// without being announced again — it is then the node's to announce.
func TestRogueNode(t *testing.T) {
	l := up(t, lab.Options{Nodes: 3, Racks: 1, ToR: "none", Mode: "mesh", Encap: "none", Pods: 1})
	ctx := ctxFor(t, 6*time.Minute)
	cfg, err := clientcmd.BuildConfigFromFlags("", l.State.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	rz, kube := rzclient.NewForConfigOrDie(cfg), kubernetes.NewForConfigOrDie(cfg)

	// A genuine borrowed address: a one-block pool, the default one
	// disabled; node-1 claims the block, node-2's pod borrows from it.
	bs := int32(28)
	if _, err := rz.RhizomeV1alpha1().IPPools().Create(ctx, &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "one-block"},
		Spec: v1alpha1.IPPoolSpec{CIDR: "10.245.0.0/28", BlockSize: &bs, IPIPMode: v1alpha1.EncapNever, VXLANMode: v1alpha1.EncapNever}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Kubectl(ctx, "patch", "ippool", "default-ipv4", "--type", "merge", "-p", `{"spec":{"disabled":true}}`); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "node-1's pod in the one-block pool", func() (bool, string) {
		p, err := l.NewPod(ctx, "node-1")
		if err != nil {
			return false, err.Error()
		}
		return strings.HasPrefix(p.Addresses[0], "10.245.0."), "got " + p.Addresses[0]
	})
	borrower, err := l.NewPod(ctx, "node-2")
	if err != nil {
		t.Fatal(err)
	}
	borrowed := borrower.Addresses[0]
	if !strings.HasPrefix(borrowed, "10.245.0.") {
		t.Fatalf("node-2's pod got %s, not an address borrowed from node-1's 10.245.0.0/28", borrowed)
	}
	n1, n2 := addrOf(t, l, "node-1"), addrOf(t, l, "node-2")
	for _, n := range []string{"node-1", "node-3"} {
		eventually(t, 30*time.Second, n+" routes the borrowed address to node-2", func() (bool, string) {
			r := routeTo(t, l, n, borrowed) // ip route shows a host route without /32
			return strings.Contains(r, "via "+n2+" "), "route " + r
		})
	}
	requireMatrix(t, l)

	// The rogue: node-4, gobgpd in its namespace, in the cluster's AS.
	rogue, err := l.JoinNodeWithoutAgent(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	ra := rogue.Addr.Addr().String()
	startGoBGPd(t, l, rogue, lab.ClusterAS, n1, n2, addrOf(t, l, "node-3"))

	// Watch node-3's kernel and ping node-2's pods from node-3's pod
	// during the whole attack.
	monitor := watchRouteEvents(t, l, "node-3")
	from := podOn(t, l, "node-3")
	victim := podOn(t, l, "node-2").Addresses[0]
	pings := []*pinger{startPingEvery(t, from, victim, "0.01"), startPingEvery(t, from, borrowed, "0.01")}

	b2 := netip.MustParsePrefix(blockOf(t, l, "node-2"))
	half := netip.PrefixFrom(b2.Addr(), 27)
	claimed, elsewhere := "10.244.250.0/26", "10.244.251.0/26"
	announce := []struct{ prefix, nextHop string }{
		{b2.String(), ra},      // node-2's block
		{half.String(), ra},    // a more specific of it
		{victim + "/32", ra},   // node-2's pod
		{borrowed + "/32", ra}, // the address node-2's pod borrowed
		{"10.245.0.0/28", ra},  // node-1's block in the one-block pool
		{"10.244.0.0/16", ra},  // the pool
		{"0.0.0.0/0", ra},      // a default route
		{"192.0.2.0/24", ra},   // outside every pool
		{b2.String(), n2},      // node-2's block through node-2 (a path of its own)
		{claimed, ra},          // nobody's yet: held
		{elsewhere, n2},        // nobody's yet, through node-2
	}
	for _, a := range announce {
		if out, err := l.Exec(ctx, rogue.Name, "gobgp", "global", "rib", "add", "-a", "ipv4", a.prefix, "nexthop", a.nextHop); err != nil {
			t.Fatalf("gobgp global rib add %s: %v\n%s", a.prefix, err, out)
		}
	}
	// gobgpd keeps one path per prefix: b2 through node-2 replaced b2
	// through the rogue. Ten prefixes reach each node.
	for _, n := range []string{"node-1", "node-2", "node-3"} {
		eventually(t, 60*time.Second, n+" holds the rogue's ten prefixes, all rejected", func() (bool, string) {
			s := rogueSession(t, l, n, ra)
			return s.State == "Established" && s.PrefixesReceived == 10 && s.PrefixesAccepted == 0, fmt.Sprintf("%+v", s)
		})
	}
	for _, n := range []string{"node-1", "node-2", "node-3"} {
		routes, err := l.KernelRoutes(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		for p, r := range routes {
			if strings.Contains(r, "via "+ra+" ") {
				t.Errorf("%s: %s %s: the rogue's route is installed", n, p, r)
			}
		}
		for _, p := range []string{claimed, elsewhere, "default", "192.0.2.0/24", "10.244.0.0/16", half.String(), victim} {
			if r, ok := routes[p]; ok {
				t.Errorf("%s: route %s %s installed", n, p, r)
			}
		}
		if n != "node-2" {
			if r := routes[b2.String()]; !strings.Contains(r, "via "+n2+" ") {
				t.Errorf("%s: node-2's block %s is routed %q, want via node-2", n, b2, r)
			}
		}
		if n != "node-2" {
			if r := routes[borrowed]; !strings.Contains(r, "via "+n2+" ") {
				t.Errorf("%s: the borrowed address %s is routed %q, want via node-2", n, borrowed, r)
			}
		}
		if n != "node-1" {
			if r := routes["10.245.0.0/28"]; !strings.Contains(r, "via "+n1+" ") {
				t.Errorf("%s: node-1's block 10.245.0.0/28 is routed %q, want via node-1", n, r)
			}
		}
	}
	// By reason, at node-1: node-2's block, its pod, the borrowed address
	// and node-1's block are not the rogue's; the more specific and the
	// pool not a route any node originates (the pool covers node-1's own
	// block: own-block); outside every pool twice; held twice.
	s := rogueSession(t, l, "node-1", ra)
	want := map[string]int64{"not-owner": 3, "own-block": 2, "not-originated": 1, "not-in-pool": 2, "held": 2}
	if !mapsEqual(s.PrefixesRejected, want) {
		t.Errorf("node-1: the rogue's session rejected %v, want %v", s.PrefixesRejected, want)
	}
	m, err := l.AgentMetrics(ctx, "node-3")
	if err != nil {
		t.Fatal(err)
	}
	if m[`rhizome_bgp_prefixes_rejected{reason="not-owner"}`] < 4 || m[`rhizome_bgp_prefixes_rejected{reason="held"}`] != 2 {
		t.Errorf("node-3's rejection metrics: not-owner %v, held %v", m[`rhizome_bgp_prefixes_rejected{reason="not-owner"}`], m[`rhizome_bgp_prefixes_rejected{reason="held"}`])
	}
	eventually(t, 30*time.Second, "RoutesRejected events on every other node's RhizomeNode", func() (bool, string) {
		evs, err := kube.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=RhizomeNode,reason=RoutesRejected"})
		if err != nil {
			return false, err.Error()
		}
		var on []string
		for _, e := range evs.Items {
			if strings.Contains(e.Message, ra) && !slices.Contains(on, e.InvolvedObject.Name) {
				on = append(on, e.InvolvedObject.Name)
			}
		}
		return len(on) == 3, fmt.Sprintf("on %v", on)
	})

	// The held block becomes the rogue node's: installed everywhere
	// through it without a new announcement; the one through node-2's
	// address stays out (next hop not its own).
	for _, b := range []string{claimed, elsewhere} {
		p := netip.MustParsePrefix(b)
		if _, err := rz.RhizomeV1alpha1().IPAMBlocks().Create(ctx, &v1alpha1.IPAMBlock{ObjectMeta: metav1.ObjectMeta{Name: blockmath.Name(p)},
			Spec: v1alpha1.IPAMBlockSpec{CIDR: b, Affinity: rogue.Name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"node-1", "node-2", "node-3"} {
		eventually(t, 30*time.Second, n+" installs the rogue node's own block", func() (bool, string) {
			r := routeTo(t, l, n, claimed)
			return strings.Contains(r, "via "+ra+" "), "route " + r
		})
		if r := routeTo(t, l, n, elsewhere); r != "" {
			t.Errorf("%s: %s through node-2's address installed: %s", n, elsewhere, r)
		}
		// Through node-2's address: not the rogue's own next hop, and at
		// node-2 its own address (next-hop-self).
		reason := "next-hop"
		if n == "node-2" {
			reason = "next-hop-self"
		}
		if s := rogueSession(t, l, n, ra); s.PrefixesRejected[reason] != 1 || s.PrefixesAccepted != 1 || s.PrefixesRejected["held"] != 0 {
			t.Errorf("%s: after the blocks, the rogue's session %+v", n, s)
		}
	}
	// The pings and the monitor go on a little after the last verdict,
	// so that they also cover the moments right after it.
	time.Sleep(2 * time.Second)
	for i, p := range pings {
		sent, received := p.stop(t)
		if sent < 100 || received != sent {
			t.Errorf("ping %d from node-3's pod: %d sent, %d received", i, sent, received)
		}
		t.Logf("ping %d from node-3's pod during the attack: %d sent, %d received", i, sent, received)
	}
	for _, line := range monitor() {
		if strings.Contains(line, "via "+ra+" ") && !strings.HasPrefix(line, claimed+" ") {
			t.Errorf("node-3's kernel saw a route through the rogue: %s", line)
		}
	}
	requireMatrix(t, l)
}

// startGoBGPd runs gobgpd in a node's namespace, peering with the given
// addresses in the cluster's AS; it is killed when the test ends.
func startGoBGPd(t *testing.T, l *lab.Lab, n lab.NodePlan, as int, peers ...string) {
	t.Helper()
	addr := n.Addr.Addr().String()
	var conf strings.Builder
	fmt.Fprintf(&conf, "[global.config]\n  as = %d\n  router-id = %q\n  local-address-list = [%q]\n", as, addr, addr)
	for _, p := range peers {
		fmt.Fprintf(&conf, "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = %q\n    peer-as = %d\n", p, as)
	}
	path := filepath.Join(t.TempDir(), "gobgpd.toml")
	if err := os.WriteFile(path, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	argv := lab.InNetNS(l.NodeNS(n.Name), "gobgpd", "-f", path, "--api-hosts", "127.0.0.1:50051", "--pprof-disable", "-p")
	cmd := exec.Command(argv[0], argv[1:]...)
	logf, err := os.Create(filepath.Join(t.TempDir(), "gobgpd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("gobgpd log:\n%s", b[max(0, len(b)-4000):])
		}
	})
	eventually(t, 20*time.Second, "gobgpd's API", func() (bool, string) {
		out, err := l.Exec(context.Background(), n.Name, "gobgp", "global")
		return err == nil, string(out)
	})
}

// rogueSessionRow is what the test reads of rhizomectl bgp peers -o json.
type rogueSessionRow struct {
	Peer             string           `json:"peer"`
	State            string           `json:"state"`
	PrefixesReceived int64            `json:"prefixesReceived"`
	PrefixesAccepted int64            `json:"prefixesAccepted"`
	PrefixesRejected map[string]int64 `json:"prefixesRejected"`
}

// rogueSession is node's session with peer, from rhizomectl bgp peers run
// in the node as an operator would.
func rogueSession(t *testing.T, l *lab.Lab, node, peer string) rogueSessionRow {
	t.Helper()
	out, err := ctl(t, l, "lab", "exec", node, "--", "rhizomectl", "bgp", "peers", "-o", "json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var list struct {
		Items []rogueSessionRow `json:"items"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		t.Fatalf("rhizomectl bgp peers -o json: %v\n%s", err, out)
	}
	for _, s := range list.Items {
		if s.Peer == peer {
			return s
		}
	}
	return rogueSessionRow{State: "no session"}
}

// watchRouteEvents runs ip monitor route in a node's namespace until the
// returned function is called, which returns every line it printed.
func watchRouteEvents(t *testing.T, l *lab.Lab, node string) func() []string {
	t.Helper()
	argv := lab.InNetNS(l.NodeNS(node), "ip", "-4", "monitor", "route")
	cmd := exec.Command(argv[0], argv[1:]...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var lines []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			mu.Lock()
			lines = append(lines, sc.Text())
			mu.Unlock()
		}
	}()
	stopped := false
	stop := func() []string {
		if !stopped {
			stopped = true
			cmd.Process.Kill()
			<-done
			cmd.Wait()
		}
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(lines)
	}
	t.Cleanup(func() { stop() })
	return stop
}

// addrOf is a lab node's address.
func addrOf(t *testing.T, l *lab.Lab, node string) string {
	t.Helper()
	n, ok := l.Plan.Node(node)
	if !ok {
		t.Fatalf("no node %s", node)
	}
	return n.Addr.Addr().String()
}

func mapsEqual(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
