//go:build privileged

package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/bgp/reconcile"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/test/netns"
)

// lab is two namespaces joined by a veth: the ToR (10.0.1.1) and our node
// (10.0.1.2), on 10.0.1.0/24. Every address exists only inside them.
type lab struct {
	t    *testing.T
	tor  *netns.NS
	node *netns.NS
	dir  string
}

const (
	torIP  = "10.0.1.1"
	nodeIP = "10.0.1.2"
	torAS  = 65001
	nodeAS = 64512
)

func newLab(t *testing.T) *lab {
	t.Helper()
	l := &lab{t: t, tor: netns.New(t, "tor"), node: netns.New(t, "node")}
	must(t, netns.Veth(l.tor, "eth0", l.node, "eth0"))
	must(t, netns.AddAddr(l.tor, "eth0", netns.Prefix(torIP+"/24")))
	must(t, netns.AddAddr(l.node, "eth0", netns.Prefix(nodeIP+"/24")))
	dir, err := os.MkdirTemp("", "rhizome-bgp-interop-")
	must(t, err)
	// FRR's daemons run as user frr and must reach their directory.
	must(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	l.dir = dir
	return l
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// proc is a process a test started.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// start runs a command inside a namespace until the test ends; its output
// goes to dir/name.log.
func (l *lab) start(ns *netns.NS, name string, env []string, args ...string) *proc {
	l.t.Helper()
	logf, err := os.OpenFile(filepath.Join(l.dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	must(l.t, err)
	cmd := ns.Cmd(context.Background(), args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	must(l.t, cmd.Start())
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	l.t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	return &proc{cmd: cmd, done: done}
}

// helper is our node's BGP stack running in the node namespace.
type helper struct {
	l    *lab
	dir  string
	http *http.Client
	st   helperState
	p    *proc
}

func (l *lab) startHelper(st helperState) *helper {
	l.t.Helper()
	h := &helper{l: l, dir: filepath.Join(l.dir, "helper"), st: st}
	must(l.t, os.MkdirAll(h.dir, 0o755))
	h.write()
	self, err := os.Executable()
	must(l.t, err)
	sock := filepath.Join(h.dir, "api.sock")
	os.Remove(sock)
	h.p = l.start(l.node, "helper", []string{helperEnv + "=" + h.dir}, self, "-test.run=^$")
	h.http = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	waitFor(l.t, "the helper's API", 30*time.Second, func() bool {
		_, err := os.Stat(sock)
		return err == nil
	})
	return h
}

// stop ends the helper with SIGTERM, as an agent is stopped for a restart.
func (h *helper) stop() {
	h.l.t.Helper()
	must(h.l.t, h.p.cmd.Process.Signal(syscall.SIGTERM))
	waitFor(h.l.t, "the helper to exit", 20*time.Second, h.p.exited)
}

func (h *helper) write() {
	b, err := json.MarshalIndent(h.st, "", "  ")
	must(h.l.t, err)
	must(h.l.t, os.WriteFile(filepath.Join(h.dir, "state.json"), b, 0o644))
}

// reload applies a changed state.
func (h *helper) reload(mut func(*helperState)) {
	h.l.t.Helper()
	mut(&h.st)
	h.write()
	resp, err := h.http.Post("http://helper/reload", "", nil)
	must(h.l.t, err)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		h.l.t.Logf("reload: %s", b) // a failed session is reported, not fatal
	}
}

func (h *helper) get(path string, v any) error {
	resp, err := h.http.Get("http://helper" + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", path, b)
	}
	return json.Unmarshal(b, v)
}

func (h *helper) status() reconcile.Status {
	h.l.t.Helper()
	var s reconcile.Status
	must(h.l.t, h.get("/status", &s))
	return s
}

func (h *helper) session(peer string) v1alpha1.BGPSessionStatus {
	h.l.t.Helper()
	for _, s := range h.status().Sessions {
		if s.Peer == peer {
			return s
		}
	}
	h.l.t.Fatalf("no session %s", peer)
	return v1alpha1.BGPSessionStatus{}
}

func (h *helper) routes() helperRoutes {
	h.l.t.Helper()
	var r helperRoutes
	must(h.l.t, h.get("/routes", &r))
	return r
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// nodeState is the cluster state of the node side: one node, no mesh
// (its only session is the ToR), one pool, one block.
func nodeState(peers ...v1alpha1.BGPPeer) helperState {
	n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", Labels: map[string]string{"rack": "a"}}}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: nodeIP}}
	f := false
	asn := int64(nodeAS)
	return helperState{
		NodeName: "node-1",
		Nodes:    []corev1.Node{n},
		Configs: []v1alpha1.BGPConfiguration{{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1alpha1.BGPConfigurationSpec{
			ASNumber: &asn, NodeToNodeMesh: &f,
			ServiceClusterIPs: []v1alpha1.ServiceIPBlock{{CIDR: "10.96.0.0/12"}},
		}}},
		Peers:   peers,
		Pools:   []v1alpha1.IPPool{{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1alpha1.IPPoolSpec{CIDR: "10.244.0.0/16"}}},
		Blocks:  []netip.Prefix{netip.MustParsePrefix("10.244.1.0/26")},
		Secrets: map[string]string{},
		API:     "127.0.0.1:50051",
	}
}

// torPeer is the BGPPeer of the ToR, with an MD5 password from Secret
// bgp-passwords and the import filters given.
func torPeer(filters ...v1alpha1.FilterRule) v1alpha1.BGPPeer {
	asn := int64(torAS)
	return v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "tor"}, Spec: v1alpha1.BGPPeerSpec{
		PeerIP: torIP, ASNumber: &asn, NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"rack": "a"}},
		SourceAddress: v1alpha1.SourceAddressNodeIP,
		Password:      &v1alpha1.BGPPassword{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "bgp-passwords"}, Key: "tor"}},
		KeepaliveTime: &metav1.Duration{Duration: 3 * time.Second}, HoldTime: &metav1.Duration{Duration: 9 * time.Second},
		ConnectRetryTime: &metav1.Duration{Duration: 2 * time.Second},
		ImportFilters:    filters,
	}}
}

// acceptDefaultAndOffice accepts exactly the default route and anything in
// 192.168.0.0/16.
var acceptDefaultAndOffice = []v1alpha1.FilterRule{
	{CIDR: "0.0.0.0/0", MatchOperator: v1alpha1.MatchEqual, Action: v1alpha1.FilterAccept},
	{CIDR: "192.168.0.0/16", MatchOperator: v1alpha1.MatchIn, Action: v1alpha1.FilterAccept},
}

// torRoutes are what the ToR announces: a default route, another node's
// block, our own block (a hijack) and an office range.
var torRoutes = []string{"0.0.0.0/0", "10.244.2.0/26", "10.244.1.0/26", "192.168.10.0/24"}

// md5Failures reads TcpExtTCPMD5Failure in a namespace.
func md5Failures(t *testing.T, ns *netns.NS) uint64 {
	t.Helper()
	out, err := ns.Exec(context.Background(), "cat", "/proc/net/netstat")
	must(t, err)
	s, err := reconcile.ParseMD5Stats(out)
	must(t, err)
	return s.Failure
}

// frrOwned makes dir belong to FRR's user.
func frrOwned(t *testing.T, dir string) {
	t.Helper()
	u, err := user.Lookup("frr")
	if err != nil {
		t.Fatalf("FRR's user: %v (is frr installed? make deps)", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	must(t, filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chown(p, uid, gid)
	}))
}
