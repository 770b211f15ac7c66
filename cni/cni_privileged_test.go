//go:build privileged

package cni_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/rhizome-net/rhizome/cni"
	"github.com/rhizome-net/rhizome/test/netns"
)

// TestSameNodePodToPod adds two pods on one node through libcni and checks
// the L3 data path: addresses, host routes, ping and TCP between them.
func TestSameNodePodToPod(t *testing.T) {
	n := newNode(t, "node")
	list := n.conflist(false, "1.0.0")
	a, b := newPod(t, "pa", "web-a"), newPod(t, "pb", "web-b")
	ra, rb := n.mustAdd(a, list), n.mustAdd(b, list)
	ipA, ipB := podIPs(ra)[0], podIPs(rb)[0]
	if ipA == ipB {
		t.Fatalf("both pods got %s", ipA)
	}
	if got := run(t, a.ns, "ip", "-4", "addr", "show", "eth0"); !strings.Contains(got, ipA+"/32") {
		t.Fatalf("pod a's eth0 lacks %s/32:\n%s", ipA, got)
	}
	if got := run(t, a.ns, "ip", "route"); !strings.Contains(got, "default via 169.254.1.1 dev eth0") {
		t.Fatalf("pod a's default route:\n%s", got)
	}
	hostVeth := cni.HostVethName("default", "web-a", a.containerID, "eth0")
	if got := run(t, n.ns, "ip", "route", "show", ipA); !strings.Contains(got, "dev "+hostVeth) || !strings.Contains(got, "proto static") {
		t.Fatalf("host route to %s via %s missing:\n%s", ipA, hostVeth, got)
	}
	if got := run(t, n.ns, "cat", "/proc/sys/net/ipv4/conf/"+hostVeth+"/proxy_arp"); strings.TrimSpace(got) != "1" {
		t.Fatalf("proxy_arp on %s = %q", hostVeth, got)
	}
	if ra.Interfaces[0].Name != hostVeth || ra.Interfaces[1].Sandbox != a.ns.Path() {
		t.Fatalf("result interfaces = %+v %+v", ra.Interfaces[0], ra.Interfaces[1])
	}
	ping(t, a.ns, ipB)
	ping(t, b.ns, ipA)
	if err := netns.TCPEcho(a.ns, b.ns, netip.MustParseAddr(ipB)); err != nil {
		t.Fatal(err)
	}
	// MTU came from the agent.
	if got := run(t, a.ns, "cat", "/sys/class/net/eth0/mtu"); strings.TrimSpace(got) != "1450" {
		t.Fatalf("pod MTU = %q, want the agent's 1450", got)
	}
}

// TestDelRemovesEverything checks that DEL removes the veth, the host route
// and the allocation, and that a second DEL (and a DEL after the pod's
// namespace is gone) still succeeds.
func TestDelRemovesEverything(t *testing.T) {
	n := newNode(t, "node")
	list := n.conflist(false, "1.0.0")
	p := newPod(t, "p", "db-0")
	r := n.mustAdd(p, list)
	ip := podIPs(r)[0]
	handle := cni.Handle(list.Name, p.containerID, "eth0")
	if len(n.alloc.Held(handle)) != 1 {
		t.Fatalf("allocation not recorded for %s", handle)
	}
	if err := n.del(p, list); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	hostVeth := cni.HostVethName("default", "db-0", p.containerID, "eth0")
	if out, _ := n.ns.Exec(context.Background(), "ip", "link", "show", hostVeth); !strings.Contains(string(out), "does not exist") {
		t.Fatalf("host veth %s still exists: %s", hostVeth, out)
	}
	if got := run(t, n.ns, "ip", "route", "show", ip); strings.TrimSpace(got) != "" {
		t.Fatalf("host route to %s still exists: %s", ip, got)
	}
	if h := n.alloc.Held(handle); len(h) != 0 {
		t.Fatalf("allocation %v still held", h)
	}
	if err := n.del(p, list); err != nil {
		t.Fatalf("second DEL: %v", err)
	}
	p.ns.Delete()
	if err := n.del(p, list); err != nil {
		t.Fatalf("DEL after the namespace is gone: %v", err)
	}
}

// TestRepeatedAddIsIdempotent: ADD twice for one container returns the same
// address, keeps the pod working and holds one allocation; a failure of the
// second ADD must never release the first one's address.
func TestRepeatedAddFailsAndKeepsTheFirst(t *testing.T) {
	n := newNode(t, "node")
	list := n.conflist(false, "1.0.0")
	p, other := newPod(t, "p", "api-0"), newPod(t, "o", "api-1")
	r1 := n.mustAdd(p, list)
	_, err := n.add(p, list)
	var cerr *types.Error
	if !errors.As(err, &cerr) || cerr.Code != cni.ErrInterfaceExists {
		t.Fatalf("second ADD of one attachment = %v, want code %d (interface exists)", err, cni.ErrInterfaceExists)
	}
	// The failed ADD removed nothing of the first: address, interface,
	// host route all still work.
	if got := len(n.alloc.Allocations()); got != 1 {
		t.Fatalf("%d allocations after the second ADD, want the first's", got)
	}
	n.mustAdd(other, list)
	ping(t, other.ns, podIPs(r1)[0])
}

// TestAddOntoAForeignInterface: the pod already has an eth0 that Rhizome
// did not make (another plugin's, or a leftover). ADD fails before
// allocating anything and leaves that interface alone.
func TestAddOntoAForeignInterface(t *testing.T) {
	n := newNode(t, "node")
	list := n.conflist(false, "1.0.0")
	p := newPod(t, "p", "foreign")
	run(t, p.ns, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "foreign1")
	_, err := n.add(p, list)
	var cerr *types.Error
	if !errors.As(err, &cerr) || cerr.Code != cni.ErrInterfaceExists || !strings.Contains(cerr.Msg, "eth0") {
		t.Fatalf("ADD onto an existing eth0 = %v, want code %d", err, cni.ErrInterfaceExists)
	}
	if out := run(t, p.ns, "ip", "-o", "link", "show", "eth0"); !strings.Contains(out, "eth0@foreign1") {
		t.Fatalf("the foreign eth0 was touched:\n%s", out)
	}
	if n.alloc.Calls != 0 || len(n.alloc.Allocations()) != 0 {
		t.Fatalf("ADD onto a foreign interface allocated: %v", n.alloc.Allocations())
	}
}

// TestDelWhenTheNamespaceIsGone: DEL must succeed (and release the
// address) when the netns path no longer exists or is no namespace at all.
func TestDelWhenTheNamespaceIsGone(t *testing.T) {
	n := newNode(t, "node")
	list := n.conflist(false, "1.0.0")
	for _, how := range []string{"missing", "regular file"} {
		t.Run(how, func(t *testing.T) {
			p := newPod(t, "p", "gone-"+strings.ReplaceAll(how, " ", "-"))
			n.mustAdd(p, list)
			path := filepath.Join(t.TempDir(), "netns")
			if how == "regular file" {
				if err := os.WriteFile(path, []byte("not a namespace"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			rt := *p.rt
			rt.NetNS = path
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := n.cni.DelNetworkList(ctx, list, &rt); err != nil {
				t.Fatalf("DEL with the netns %s: %v", how, err)
			}
			if _, ok := n.alloc.Allocations()[cni.Handle(list.Name, p.containerID, "eth0")]; ok {
				t.Fatalf("DEL with the netns %s left the address allocated", how)
			}
		})
	}
}

// TestDelAndGCIgnoreUnknownFields: a conflist changed after ADD (a field
// of a newer version, a typo) must not strand the address: DEL and GC
// still work, while ADD refuses it.
func TestDelAndGCIgnoreUnknownFields(t *testing.T) {
	n := newNode(t, "node")
	list := n.conflist(false, "1.1.0")
	p := newPod(t, "p", "upgraded")
	n.mustAdd(p, list)
	var raw map[string]any
	if err := json.Unmarshal(list.Bytes, &raw); err != nil {
		t.Fatal(err)
	}
	plugin := raw["plugins"].([]any)[0].(map[string]any)
	plugin["futureField"] = map[string]any{"x": 1}
	plugin["mtu"] = "big"
	b, err := json.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	changed, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(changed.Bytes), "futureField") {
		t.Fatalf("conflist not changed: %s", changed.Bytes)
	}
	ctx := context.Background()
	if err := n.cni.GCNetworkList(ctx, changed, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: p.containerID, IfName: "eth0"}}}); err != nil {
		t.Fatalf("GC with an unknown field: %v", err)
	}
	if err := n.del(p, changed); err != nil {
		t.Fatalf("DEL with an unknown field: %v", err)
	}
	if got := n.alloc.Allocations(); len(got) != 0 {
		t.Fatalf("allocations left: %v", got)
	}
}

// TestCheckAsksTheAgent: the pod's interface, address and routes are all
// in place, but the agent no longer holds the address (released behind
// the pod's back): CHECK must say so.
func TestCheckAsksTheAgent(t *testing.T) {
	n := newNode(t, "node")
	list := n.conflist(false, "1.0.0")
	p := newPod(t, "p", "released")
	r := n.mustAdd(p, list)
	ctx := context.Background()
	if err := n.cni.CheckNetworkList(ctx, list, p.rt); err != nil {
		t.Fatalf("CHECK of a healthy pod: %v", err)
	}
	if _, err := n.alloc.Release(ctx, cni.Handle(list.Name, p.containerID, "eth0")); err != nil {
		t.Fatal(err)
	}
	err := n.cni.CheckNetworkList(ctx, list, p.rt)
	var cerr *types.Error
	if !errors.As(err, &cerr) || cerr.Code != cni.ErrAddressNotHeld || !strings.Contains(cerr.Msg, podIPs(r)[0]) {
		t.Fatalf("CHECK with the address released = %v, want code %d", err, cni.ErrAddressNotHeld)
	}
	n.stopAgent()
	if err := n.cni.CheckNetworkList(ctx, list, p.rt); !errors.As(err, &cerr) || cerr.Code != cni.ErrAgentUnavailable {
		t.Fatalf("CHECK without an agent = %v, want code %d", err, cni.ErrAgentUnavailable)
	}
	n.startAgent()
}

// TestExhaustedIsNotAgentUnavailable: a pool with no address left is a
// different error (code) from an agent that cannot be reached.
func TestExhaustedIsNotAgentUnavailable(t *testing.T) {
	n := newNode(t, "node", "10.244.9.0/30") // the fake hands out .1-.3
	list := n.conflist(false, "1.0.0")
	for i := range 3 {
		n.mustAdd(newPod(t, fmt.Sprintf("p%d", i), fmt.Sprintf("fill-%d", i)), list)
	}
	_, err := n.add(newPod(t, "p9", "one-too-many"), list)
	var cerr *types.Error
	if !errors.As(err, &cerr) || cerr.Code != cni.ErrPoolExhausted {
		t.Fatalf("ADD with the pool exhausted = %v, want code %d", err, cni.ErrPoolExhausted)
	}
}

// TestAgentUnreachableFailsFastAndLeavesNothing stops the agent (socket
// gone), and then leaves a stale socket behind (agent crashed): ADD must
// fail quickly with the plugin's error code and create nothing.
func TestAgentUnreachableFailsFastAndLeavesNothing(t *testing.T) {
	n := newNode(t, "node")
	list := n.conflist(false, "1.0.0")
	n.stopAgent()
	for _, stale := range []bool{false, true} {
		t.Run(fmt.Sprintf("stale-socket=%v", stale), func(t *testing.T) {
			if stale {
				l, err := net.Listen("unix", n.socket)
				if err != nil {
					t.Fatal(err)
				}
				l.(*net.UnixListener).SetUnlinkOnClose(false)
				l.Close() // the file stays, nobody listens
				defer os.Remove(n.socket)
			}
			p := newPod(t, "p", "lonely")
			start := time.Now()
			_, err := n.add(p, list)
			took := time.Since(start)
			var cerr *types.Error
			if !errors.As(err, &cerr) || cerr.Code != cni.ErrAgentUnavailable {
				t.Fatalf("ADD error = %v, want CNI code %d", err, cni.ErrAgentUnavailable)
			}
			if !strings.Contains(cerr.Msg, "rhizome agent") {
				t.Errorf("message %q does not name the agent", cerr.Msg)
			}
			if took > 5*time.Second {
				t.Errorf("ADD took %s to fail; it must fail fast", took)
			}
			if out := run(t, n.ns, "ip", "-o", "link"); strings.Contains(out, cni.HostVethPrefix) {
				t.Fatalf("a veth was left behind:\n%s", out)
			}
			if out := run(t, p.ns, "ip", "-o", "link"); strings.Contains(out, "eth0") {
				t.Fatalf("the pod got an eth0:\n%s", out)
			}
		})
	}
	if got := n.alloc.Calls; got != 0 {
		t.Fatalf("%d allocations reached the allocator", got)
	}
}

// TestAgentRestartBetweenAddAndDel: DEL works against a restarted agent.
func TestAgentRestartBetweenAddAndDel(t *testing.T) {
	n := newNode(t, "node")
	list := n.conflist(false, "1.0.0")
	p := newPod(t, "p", "cache-0")
	n.mustAdd(p, list)
	n.stopAgent()
	// While the agent is down DEL removes the interface but fails, so the
	// runtime retries and the address is not lost track of.
	if err := n.del(p, list); err == nil {
		t.Fatal("DEL succeeded without an agent to release the address")
	}
	n.startAgent()
	if err := n.del(p, list); err != nil {
		t.Fatalf("DEL after the agent restarted: %v", err)
	}
	if got := n.alloc.Allocations(); len(got) != 0 {
		t.Fatalf("allocations left: %v", got)
	}
}

// TestAddFailureReleasesAddress makes ADD fail after allocation (the pod's
// namespace vanished) and checks that the address was released and no veth
// remains.
func TestAddFailureReleasesAddress(t *testing.T) {
	n := newNode(t, "node")
	list := n.conflist(false, "1.0.0")
	p := newPod(t, "p", "gone")
	p.rt.NetNS = "/run/netns/does-not-exist"
	_, err := n.add(p, list)
	var cerr *types.Error
	if !errors.As(err, &cerr) || cerr.Code != cni.ErrNetworkSetupFailed {
		t.Fatalf("ADD error = %v, want code %d", err, cni.ErrNetworkSetupFailed)
	}
	if got := n.alloc.Allocations(); len(got) != 0 {
		t.Fatalf("address leaked after a failed ADD: %v", got)
	}
	if out := run(t, n.ns, "ip", "-o", "link"); strings.Contains(out, cni.HostVethPrefix) {
		t.Fatalf("a veth was left behind:\n%s", out)
	}
}

// TestCheckReportsMissingHostRoute deletes the host route behind CHECK's
// back.
func TestCheckReportsMissingHostRoute(t *testing.T) {
	n := newNode(t, "node")
	list := n.conflist(false, "1.0.0")
	p := newPod(t, "p", "checked")
	r := n.mustAdd(p, list)
	ctx := context.Background()
	if err := n.cni.CheckNetworkList(ctx, list, p.rt); err != nil {
		t.Fatalf("CHECK of a healthy pod: %v", err)
	}
	ip := podIPs(r)[0]
	run(t, n.ns, "ip", "route", "del", ip+"/32")
	err := n.cni.CheckNetworkList(ctx, list, p.rt)
	var cerr *types.Error
	if !errors.As(err, &cerr) || cerr.Code != cni.ErrHostRouteMissing || !strings.Contains(cerr.Msg, ip) {
		t.Fatalf("CHECK error = %v, want code %d naming %s", err, cni.ErrHostRouteMissing, ip)
	}
}

// TestBadConfigGetsCNIError feeds broken configurations: each must come
// back as a CNI error with code and message, never a crash.
func TestBadConfigGetsCNIError(t *testing.T) {
	n := newNode(t, "node")
	cases := []struct {
		name, conf string
		code       uint
		msg        string
	}{
		{"unknown field", `{"cniVersion":"1.0.0","name":"rhizome","plugins":[{"type":"rhizome","mtuu":1400}]}`, types.ErrInvalidNetworkConfig, "unknown field(s) mtuu"},
		{"wrong type", `{"cniVersion":"1.0.0","name":"rhizome","plugins":[{"type":"rhizome","mtu":"big"}]}`, types.ErrInvalidNetworkConfig, "wrong type"},
		{"mtu out of range", `{"cniVersion":"1.0.0","name":"rhizome","plugins":[{"type":"rhizome","mtu":100}]}`, types.ErrInvalidNetworkConfig, "mtu 100 is out of range"},
		{"bad timeout", `{"cniVersion":"1.0.0","name":"rhizome","plugins":[{"type":"rhizome","timeout":"soon"}]}`, types.ErrInvalidNetworkConfig, `timeout "soon"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			list, err := libcni.ConfListFromBytes([]byte(c.conf))
			if err != nil {
				t.Fatal(err)
			}
			_, err = n.add(newPod(t, "p", "bad"), list)
			var cerr *types.Error
			if !errors.As(err, &cerr) {
				t.Fatalf("error %v (%T) is not a CNI error", err, err)
			}
			if cerr.Code != c.code || !strings.Contains(cerr.Msg, c.msg) {
				t.Fatalf("got code %d %q, want code %d containing %q", cerr.Code, cerr.Msg, c.code, c.msg)
			}
		})
	}
	if n.alloc.Calls != 0 {
		t.Fatalf("a bad configuration reached the allocator")
	}
}

// TestChainedPortmapAndBandwidth runs the production conflist (rhizome,
// portmap, bandwidth) with a host port and a bandwidth limit.
func TestChainedPortmapAndBandwidth(t *testing.T) {
	n := newNode(t, "node")
	b := cni.Conflist(cni.ConflistOptions{CNIVersion: "1.1.0", AgentSocket: n.socket, Chain: true, PortmapBackend: "nftables"})
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	p := newPod(t, "p", "shaped")
	p.rt.CapabilityArgs = map[string]any{
		"portMappings": []map[string]any{{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}},
		"bandwidth":    map[string]any{"ingressRate": 1000000, "ingressBurst": 100000, "egressRate": 1000000, "egressBurst": 100000},
	}
	r := n.mustAdd(p, list)
	if len(r.IPs) != 1 {
		t.Fatalf("result through the chain: %+v", r)
	}
	if got := run(t, n.ns, "nft", "list", "ruleset"); !strings.Contains(got, "8080") {
		t.Fatalf("portmap installed no rule for host port 8080:\n%s", got)
	}
	hostVeth := cni.HostVethName("default", "shaped", p.containerID, "eth0")
	if got := run(t, n.ns, "tc", "qdisc", "show", "dev", hostVeth); !strings.Contains(got, "tbf") {
		t.Fatalf("bandwidth installed no tbf qdisc on %s:\n%s", hostVeth, got)
	}
	if err := n.cni.CheckNetworkList(context.Background(), list, p.rt); err != nil {
		t.Fatalf("CHECK through the chain: %v", err)
	}
	if err := n.del(p, list); err != nil {
		t.Fatalf("DEL through the chain: %v", err)
	}
	if got := run(t, n.ns, "nft", "list", "ruleset"); strings.Contains(got, "8080") {
		t.Fatalf("portmap rule left after DEL:\n%s", got)
	}
	if len(n.alloc.Allocations()) != 0 {
		t.Fatal("allocation left after DEL")
	}
}

// TestGCAndStatus covers the CNI 1.1 verbs: GC releases the allocations of
// attachments the runtime no longer lists; STATUS follows the agent.
func TestGCAndStatus(t *testing.T) {
	n := newNode(t, "node")
	list := n.conflist(false, "1.1.0")
	ctx := context.Background()
	if err := n.cni.GetStatusNetworkList(ctx, list); err != nil {
		t.Fatalf("STATUS with a ready agent: %v", err)
	}
	keep, lose := newPod(t, "k", "keep"), newPod(t, "l", "lose")
	n.mustAdd(keep, list)
	n.mustAdd(lose, list)
	// A GC request without cni.dev/valid-attachments (a broken runtime,
	// an older libcni) must free nothing: every attachment would look
	// stale. The plugin is invoked directly: libcni always adds the key.
	gcNoList := exec.Command(filepath.Join(binDir, "rhizome"))
	gcNoList.Env = append(os.Environ(), "CNI_COMMAND=GC", "CNI_PATH="+binDir)
	gcNoList.Stdin = strings.NewReader(fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"type":"rhizome","agentSocket":%q}`, list.Name, n.socket))
	if out, err := gcNoList.CombinedOutput(); err != nil {
		t.Fatalf("GC without valid attachments: %v\n%s", err, out)
	}
	if got := len(n.alloc.Allocations()); got != 2 {
		t.Fatalf("GC without valid attachments freed addresses: %v", n.alloc.Allocations())
	}
	// Another network's GC (a second conflist named otherwise) lists none
	// of this network's attachments and must free none of them.
	otherNet := *list
	otherNet.Name = "another-network"
	if err := n.cni.GCNetworkList(ctx, &otherNet, &libcni.GCArgs{}); err != nil {
		t.Fatalf("GC of another network: %v", err)
	}
	if got := len(n.alloc.Allocations()); got != 2 {
		t.Fatalf("another network's GC freed this network's addresses: %v", n.alloc.Allocations())
	}
	err := n.cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: keep.containerID, IfName: "eth0"}}})
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	allocs := n.alloc.Allocations()
	if _, ok := allocs[cni.Handle(list.Name, keep.containerID, "eth0")]; !ok || len(allocs) != 1 {
		t.Fatalf("after GC: %v, want only the kept attachment", allocs)
	}
	n.state.SetNotReady("IPAM cache not synced")
	var cerr *types.Error
	if err := n.cni.GetStatusNetworkList(ctx, list); !errors.As(err, &cerr) || cerr.Code != types.ErrPluginNotAvailable {
		t.Fatalf("STATUS with an unready agent = %v, want code %d", err, types.ErrPluginNotAvailable)
	}
	n.state.SetNotReady("")
}

// TestDualStack gives pods an IPv4 and an IPv6 address and pings over both.
func TestDualStack(t *testing.T) {
	n := newNode(t, "node", "10.244.2.0/24", "fd00:10:244:2::/120")
	list := n.conflist(false, "1.0.0")
	a, b := newPod(t, "a", "v6-a"), newPod(t, "b", "v6-b")
	ra, rb := n.mustAdd(a, list), n.mustAdd(b, list)
	if len(ra.IPs) != 2 || len(rb.IPs) != 2 {
		t.Fatalf("want two addresses per pod, got %v and %v", podIPs(ra), podIPs(rb))
	}
	if got := run(t, a.ns, "ip", "-6", "route"); !strings.Contains(got, "default via fe80::1 dev eth0") {
		t.Fatalf("IPv6 default route:\n%s", got)
	}
	ping(t, a.ns, podIPs(rb)[0])
	ping(t, a.ns, podIPs(rb)[1])
	ping(t, b.ns, podIPs(ra)[1])
}

// TestTwoHundredPods fills one node with 200 pods, checks that each has its
// own veth and route, then removes them all and checks nothing is left.
func TestTwoHundredPods(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: creates 200 network namespaces")
	}
	n := newNode(t, "node", "10.244.8.0/22")
	list := n.conflist(false, "1.0.0")
	var pods []*pod
	var ips []string
	seen := map[string]bool{}
	start := time.Now()
	for i := range 200 {
		p := newPod(t, fmt.Sprintf("p%d", i), fmt.Sprintf("pod-%d", i))
		r := n.mustAdd(p, list)
		ip := podIPs(r)[0]
		if seen[ip] {
			t.Fatalf("address %s handed out twice", ip)
		}
		seen[ip] = true
		pods = append(pods, p)
		ips = append(ips, ip)
	}
	t.Logf("200 ADDs in %s", time.Since(start).Round(time.Millisecond))
	links := run(t, n.ns, "ip", "-o", "link")
	if got := strings.Count(links, ": "+cni.HostVethPrefix); got != 200 {
		t.Fatalf("%d host veths, want 200", got)
	}
	if got := len(strings.Split(strings.TrimSpace(run(t, n.ns, "ip", "route", "show", "proto", "static")), "\n")); got != 200 {
		t.Fatalf("%d host routes, want 200", got)
	}
	ping(t, pods[0].ns, ips[199])
	for _, p := range pods {
		if err := n.del(p, list); err != nil {
			t.Fatalf("DEL %s: %v", p.name, err)
		}
	}
	if out := run(t, n.ns, "ip", "-o", "link"); strings.Contains(out, cni.HostVethPrefix) {
		t.Fatalf("veths left after 200 DELs")
	}
	if got := n.alloc.Allocations(); len(got) != 0 {
		t.Fatalf("%d allocations left", len(got))
	}
}
