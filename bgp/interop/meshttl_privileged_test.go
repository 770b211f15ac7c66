//go:build privileged

package interop

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/test/netns"
)

// meshNodeState is the node side with the mesh on and a second Node,
// node-2, at peerIP: whatever speaks BGP there is, to our node, a mesh
// peer. Keepalives every second show dropped segments at once; the hold
// time is long enough that a few seconds of drops do not end the session.
func meshNodeState(peerIP string, mut func(*v1alpha1.BGPConfigurationSpec)) helperState {
	st := nodeState()
	n2 := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-2", Labels: map[string]string{"rack": "a"}}}
	n2.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: peerIP}}
	st.Nodes = append(st.Nodes, n2)
	on := true
	spec := &st.Configs[0].Spec
	spec.NodeToNodeMesh = &on
	spec.KeepaliveTime, spec.HoldTime = &metav1.Duration{Duration: time.Second}, &metav1.Duration{Duration: 30 * time.Second}
	if mut != nil {
		mut(spec)
	}
	return st
}

// setPeerTTL makes the ToR namespace send its BGP segments with this TTL,
// as that many routers between it and the node would (255 - ttl of them).
func setPeerTTL(t *testing.T, ns *netns.NS, ttl int) {
	t.Helper()
	cmds := [][]string{{"nft", "delete", "table", "ip", "hop"}} // may not exist yet
	cmds = append(cmds,
		[]string{"nft", "add", "table", "ip", "hop"},
		[]string{"nft", "add", "chain", "ip", "hop", "out", "{ type filter hook output priority 0 ; }"},
	)
	for _, dir := range []string{"dport", "sport"} {
		cmds = append(cmds, []string{"nft", "add", "rule", "ip", "hop", "out", "tcp", dir, "179", "ip", "ttl", "set", strconv.Itoa(ttl)})
	}
	for i, cmd := range cmds {
		if out, err := ns.Exec(context.Background(), cmd[0], cmd[1:]...); err != nil && i > 0 {
			t.Fatalf("%v: %v\n%s", cmd, err, out)
		}
	}
}

// minTTLDrops reads TcpExt TCPMinTTLDrop in a namespace: segments the
// kernel dropped for arriving below a socket's minimum TTL (GTSM).
func minTTLDrops(t *testing.T, ns *netns.NS) uint64 {
	t.Helper()
	out, err := ns.Exec(context.Background(), "cat", "/proc/net/netstat")
	must(t, err)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		names := strings.Fields(sc.Text())
		if !sc.Scan() {
			break
		}
		values := strings.Fields(sc.Text())
		for i, n := range names {
			if n == "TCPMinTTLDrop" && i < len(values) {
				v, err := strconv.ParseUint(values[i], 10, 64)
				must(t, err)
				return v
			}
		}
	}
	t.Fatal("no TCPMinTTLDrop in /proc/net/netstat")
	return 0
}

// startBIRDMeshPeer runs BIRD in the ToR namespace as node-2 would speak:
// iBGP in the nodes' AS with GTSM on (it sends with TTL 255 and wants 255).
func (l *lab) startBIRDMeshPeer() {
	l.t.Helper()
	dir := filepath.Join(l.dir, "bird-mesh")
	must(l.t, os.MkdirAll(dir, 0o755))
	conf := filepath.Join(dir, "bird.conf")
	must(l.t, os.WriteFile(conf, []byte(fmt.Sprintf(`router id %s;
log "%s/bird.log" all;
protocol device {}
protocol bgp node {
  local %s as %d;
  neighbor %s as %d;
  hold time 30;
  keepalive time 1;
  connect retry time 2;
  error wait time 1, 10;
  ttl security on;
  ipv4 { import all; export none; };
}
`, torIP, dir, torIP, nodeAS, nodeIP, nodeAS)), 0o644))
	sock := filepath.Join(dir, "bird.ctl")
	l.start(l.tor, "bird-mesh", nil, "bird", "-f", "-c", conf, "-s", sock, "-P", filepath.Join(dir, "bird.pid"))
	waitFor(l.t, "BIRD's control socket", 20*time.Second, func() bool {
		_, err := l.tor.Exec(context.Background(), "birdc", "-s", sock, "show status")
		return err == nil
	})
}

// TestMeshTTLSecurity plays a mesh peer one router away: a Node whose
// speaker (BIRD, GTSM on) reaches our node through a router, which an
// nftables rule in its namespace plays by lowering its segments' TTL to
// 254. With nodeMeshTTLSecurity 1 (directly connected only) the mesh
// session must never come up; with 2 it does. Then, on the live session,
// the setting must change in place, never resetting the session: off (the
// peer may now be 55 routers away: no segment dropped), 2 again (segments
// at TTL 200 are dropped at once, with no new connection), 1 (the peer's
// TTL 254 segments are dropped too).
func TestMeshTTLSecurity(t *testing.T) {
	l := newLab(t)
	setPeerTTL(t, l.tor, 254)
	l.startBIRDMeshPeer()
	one, two := int32(1), int32(2)
	h := l.startHelper(meshNodeState(torIP, func(s *v1alpha1.BGPConfigurationSpec) { s.NodeMeshTTLSecurity = &one }))
	for end := time.Now().Add(12 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if s := h.session(torIP); s.State == "Established" {
			t.Fatalf("nodeMeshTTLSecurity 1 let a mesh peer one router away (TTL 254) in: %+v", s)
		}
	}
	if s := h.session(torIP); s.Kind != v1alpha1.SessionMesh {
		t.Fatalf("the session to node-2 is %s, want mesh", s.Kind)
	}
	h.reload(func(s *helperState) { s.Configs[0].Spec.NodeMeshTTLSecurity = &two })
	waitState(t, h, "Established")
	since := h.session(torIP).Since

	// quiet reports whether the node's kernel dropped none of the peer's
	// segments for its minimum TTL over a few keepalives; dropping whether
	// it dropped one within as many.
	quiet := func() bool {
		t.Helper()
		base := minTTLDrops(t, l.node)
		time.Sleep(3 * time.Second)
		return minTTLDrops(t, l.node) == base
	}
	dropping := func() bool {
		t.Helper()
		base := minTTLDrops(t, l.node)
		for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if minTTLDrops(t, l.node) > base {
				return true
			}
		}
		return false
	}
	sameSession := func(step string) {
		t.Helper()
		s := h.session(torIP)
		if s.State != "Established" || !s.Since.Equal(since) {
			t.Fatalf("%s: the session was reset or went down (state %s since %v, was up since %v): %s", step, s.State, s.Since, since, s.LastError)
		}
	}

	h.reload(func(s *helperState) { s.Configs[0].Spec.NodeMeshTTLSecurity = nil })
	setPeerTTL(t, l.tor, 200)
	if !quiet() {
		t.Errorf("TTL security turned off, yet the node still drops the peer's segments for their TTL")
	}
	sameSession("turned off")

	h.reload(func(s *helperState) { s.Configs[0].Spec.NodeMeshTTLSecurity = &two })
	if !dropping() {
		t.Errorf("nodeMeshTTLSecurity 2 turned on in place: the peer's TTL 200 segments were not dropped")
	}
	setPeerTTL(t, l.tor, 254) // the peer one router away again: TCP retransmits what was dropped
	if !quiet() {
		t.Errorf("nodeMeshTTLSecurity 2: segments at TTL 254 dropped")
	}
	sameSession("turned on again")

	h.reload(func(s *helperState) { s.Configs[0].Spec.NodeMeshTTLSecurity = &one })
	if !dropping() {
		t.Errorf("nodeMeshTTLSecurity 1 in place: the peer's TTL 254 segments were not dropped")
	}
}
