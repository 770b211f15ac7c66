//go:build privileged

package cni_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/rhizome-net/rhizome/agent/localapi"
	"github.com/rhizome-net/rhizome/cni"
	"github.com/rhizome-net/rhizome/test/cniruntime"
	"github.com/rhizome-net/rhizome/test/netns"
)

// binDir holds the plugin binaries the tests run: rhizome (built from this
// module) and the standard portmap and bandwidth plugins (built from the
// containernetworking/plugins module pinned in go.mod).
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "rhizome-cni-bin-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	build := func(out, pkg string) {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, out), pkg)
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n", pkg, err)
			os.Exit(1)
		}
	}
	build("rhizome", "github.com/rhizome-net/rhizome/cmd/rhizome-cni")
	build("portmap", "github.com/containernetworking/plugins/plugins/meta/portmap")
	build("bandwidth", "github.com/containernetworking/plugins/plugins/meta/bandwidth")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// node is a network namespace standing for a Kubernetes node, with a local
// API server (the agent's, over a fake allocator) and a libcni runtime.
type node struct {
	t      *testing.T
	ns     *netns.NS
	socket string
	alloc  *localapi.FakeAllocator
	state  *localapi.StaticState
	cni    *libcni.CNIConfig
	stop   context.CancelFunc
	done   chan error
}

func newNode(t *testing.T, name string, prefixes ...string) *node {
	t.Helper()
	n := &node{t: t, ns: netns.New(t, name)}
	for _, k := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
		if err := netns.Sysctl(n.ns, k, "1"); err != nil {
			t.Fatal(err)
		}
	}
	n.socket = filepath.Join(t.TempDir(), "agent.sock")
	if len(prefixes) == 0 {
		prefixes = []string{"10.244.1.0/24"}
	}
	n.alloc = localapi.NewFakeAllocator(prefixes...)
	n.state = &localapi.StaticState{Node: name, MTU: 1450}
	n.cni = cniruntime.New(n.ns.Name, []string{binDir}, t.TempDir()).CNI
	n.startAgent()
	t.Cleanup(n.stopAgent)
	return n
}

func (n *node) startAgent() {
	ctx, cancel := context.WithCancel(context.Background())
	n.stop, n.done = cancel, make(chan error, 1)
	srv := localapi.New(n.alloc, n.state, nil)
	srv.GCGrace = 0 // the agent's tests hold the grace period (agent/apibackend_test.go)
	go func() { n.done <- srv.Serve(ctx, n.socket) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", n.socket); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("local API did not start on %s", n.socket)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (n *node) stopAgent() {
	if n.stop == nil {
		return
	}
	n.stop()
	if err := <-n.done; err != nil {
		n.t.Errorf("local API: %v", err)
	}
	n.stop = nil
}

func (n *node) conflist(chain bool, cniVersion string) *libcni.NetworkConfigList {
	n.t.Helper()
	b := cni.Conflist(cni.ConflistOptions{CNIVersion: cniVersion, AgentSocket: n.socket, Chain: chain, LogLevel: "debug"})
	l, err := libcni.ConfListFromBytes(b)
	if err != nil {
		n.t.Fatal(err)
	}
	return l
}

// pod is a network namespace standing for a pod sandbox.
type pod struct {
	ns          *netns.NS
	containerID string
	name        string
	rt          *libcni.RuntimeConf
}

func newPod(t *testing.T, short, podName string) *pod {
	t.Helper()
	p := &pod{ns: netns.New(t, short), name: podName, containerID: fmt.Sprintf("c%x", time.Now().UnixNano())}
	p.rt = p.runtimeConf()
	return p
}

func (p *pod) runtimeConf() *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: p.containerID,
		NetNS:       p.ns.Path(),
		IfName:      "eth0",
		Args:        [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", p.name}, {"IgnoreUnknown", "1"}},
	}
}

func (n *node) add(p *pod, list *libcni.NetworkConfigList) (*current.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := n.cni.AddNetworkList(ctx, list, p.rt)
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(r)
}

func (n *node) mustAdd(p *pod, list *libcni.NetworkConfigList) *current.Result {
	n.t.Helper()
	r, err := n.add(p, list)
	if err != nil {
		n.t.Fatalf("ADD %s: %v", p.name, err)
	}
	return r
}

func (n *node) del(p *pod, list *libcni.NetworkConfigList) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return n.cni.DelNetworkList(ctx, list, p.rt)
}

// podIPs returns the result's addresses without prefix length.
func podIPs(r *current.Result) []string {
	var out []string
	for _, ip := range r.IPs {
		out = append(out, ip.Address.IP.String())
	}
	return out
}

func run(t *testing.T, n *netns.NS, args ...string) string {
	t.Helper()
	out, err := n.Exec(context.Background(), args[0], args[1:]...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func ping(t *testing.T, from *netns.NS, to string) {
	t.Helper()
	args := []string{"ping", "-c1", "-W3", to}
	if strings.Contains(to, ":") {
		args = []string{"ping", "-6", "-c1", "-W3", to}
	}
	if out, err := from.Exec(context.Background(), args[0], args[1:]...); err != nil {
		t.Fatalf("ping %s from %s: %v\n%s", to, from.Name, err, out)
	}
}
