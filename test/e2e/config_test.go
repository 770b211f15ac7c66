//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	rzclient "github.com/rhizome-net/rhizome/crds/client/clientset/versioned"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/test/lab"
)

// Issue 16, item 2: configuration changes take effect, verified on the
// wire, and disturb no other session (their uptimes), under the watches.

// uptimes reads every node's sessions: "node peer" → uptime, for the
// established ones (gobgp neighbor's Up/Down column).
func (h *hitlessLab) uptimes(t *testing.T) map[string]time.Duration {
	t.Helper()
	out := map[string]time.Duration{}
	for _, n := range h.l.Plan.Nodes {
		b, err := h.l.Exec(context.Background(), n.Name, "gobgp", "neighbor")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 4 || !strings.HasPrefix(f[3], "Establ") {
				continue
			}
			if d, ok := parseUptime(f[2]); ok {
				out[n.Name+" "+f[0]] = d
			}
		}
	}
	return out
}

// parseUptime reads gobgp's "hh:mm:ss" or "Nd hh:mm:ss" (only the first).
func parseUptime(s string) (time.Duration, bool) {
	p := strings.Split(s, ":")
	if len(p) != 3 {
		return 0, false
	}
	var v [3]int
	for i, x := range p {
		n, err := strconv.Atoi(x)
		if err != nil {
			return 0, false
		}
		v[i] = n
	}
	return time.Duration(v[0])*time.Hour + time.Duration(v[1])*time.Minute + time.Duration(v[2])*time.Second, true
}

// requireUndisturbed fails for every session of before, other than those
// changed matches, that is gone or restarted since (its uptime did not
// grow with the time that passed).
func requireUndisturbed(t *testing.T, what string, before, after map[string]time.Duration, elapsed time.Duration, changed func(key string) bool) {
	t.Helper()
	for k, up := range before {
		if changed(k) {
			continue
		}
		now, ok := after[k]
		switch {
		case !ok:
			t.Errorf("%s: session %s is no longer established", what, k)
		case now+2*time.Second < up+elapsed:
			t.Errorf("%s: session %s restarted (uptime %s, was %s %s ago)", what, k, now, up, elapsed.Round(time.Second))
		}
	}
}

type clusterClients struct {
	kube kubernetes.Interface
	rz   rzclient.Interface
}

func clientsOf(t *testing.T, l *lab.Lab) clusterClients {
	cfg, err := clientcmd.BuildConfigFromFlags("", l.State.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	return clusterClients{kube: kubernetes.NewForConfigOrDie(cfg), rz: rzclient.NewForConfigOrDie(cfg)}
}

var holdTimeIs = regexp.MustCompile(`(?i)hold time is (\d+)`)

func testConfigChanges(t *testing.T, h *hitlessLab) {
	c := clientsOf(t, h.l)
	ctx := ctxFor(t, 15*time.Minute)
	merge := func(t *testing.T, kind, name string, patch string) {
		t.Helper()
		var err error
		switch kind {
		case "bgppeer":
			_, err = c.rz.RhizomeV1alpha1().BGPPeers().Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		case "bgpconfiguration":
			_, err = c.rz.RhizomeV1alpha1().BGPConfigurations().Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		case "node":
			_, err = c.kube.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		}
		if err != nil {
			t.Fatalf("patching %s %s: %v", kind, name, err)
		}
	}
	// scenario runs one change under the watches and checks that every
	// session not named by changed kept its uptime.
	scenario := func(t *testing.T, name string, changed func(key string) bool, do func(t *testing.T)) {
		t.Helper()
		h.watch.begin()
		h.pingAll(t)
		before := h.uptimes(t)
		start := time.Now()
		do(t)
		time.Sleep(2 * time.Second)
		res := h.watch.end(t, h.tor+"/"+name, h.blocks)
		res.requireNoLoss(t)
		requireUndisturbed(t, res.Name, before, h.uptimes(t), time.Since(start), changed)
	}
	none := func(string) bool { return false }

	t.Run("tor-timers", func(t *testing.T) {
		// Rack 2's ToR peer gets a 6 s hold time: node-3's and node-4's
		// sessions to tor-2 start over (gracefully) and negotiate it.
		scenario(t, "tor-2 session timers changed", func(k string) bool { return strings.HasSuffix(k, " 10.0.2.1") }, func(t *testing.T) {
			merge(t, "bgppeer", "tor-rack-2", `{"spec":{"holdTime":"6s","keepaliveTime":"2s"}}`)
			for _, n := range []string{"node-3", "node-4"} {
				eventually(t, 60*time.Second, n+" negotiates the new hold time with tor-2", func() (bool, string) {
					out, _ := h.l.Exec(ctx, n, "gobgp", "neighbor", "10.0.2.1")
					m := holdTimeIs.FindStringSubmatch(string(out))
					return m != nil && m[1] == "6" && h.torSessionUp(n), string(out)
				})
			}
		})
	})

	t.Run("add-remove-peer", func(t *testing.T) {
		scenario(t, "a BGPPeer added and removed", none, func(t *testing.T) {
			as := int64(65099)
			p := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "extra"}, Spec: v1alpha1.BGPPeerSpec{
				PeerIP: "10.0.1.99", ASNumber: &as,
				NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{lab.RackLabel: "1"}},
			}}
			if _, err := c.rz.RhizomeV1alpha1().BGPPeers().Create(ctx, p, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			for _, n := range []string{"node-1", "node-2"} {
				eventually(t, 30*time.Second, n+" configures the new peer", func() (bool, string) {
					out, _ := h.l.Exec(ctx, n, "gobgp", "neighbor")
					return strings.Contains(string(out), "10.0.1.99"), string(out)
				})
			}
			if err := c.rz.RhizomeV1alpha1().BGPPeers().Delete(ctx, "extra", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			for _, n := range []string{"node-1", "node-2"} {
				eventually(t, 30*time.Second, n+" removes the peer", func() (bool, string) {
					out, _ := h.l.Exec(ctx, n, "gobgp", "neighbor")
					return !strings.Contains(string(out), "10.0.1.99"), string(out)
				})
			}
		})
	})

	t.Run("mesh-password", func(t *testing.T) {
		// Every agent gets a TCP MD5 password for the mesh at once, and
		// later loses it: each time every node-to-node session starts over
		// (gracefully: no NOTIFICATION, then the Restart State and
		// Forwarding State bits), both ends keep each other's routes until
		// it is back, and it comes back signed (then unsigned). The ToR
		// sessions have no password and are not touched. The password goes
		// again before the next scenarios, whose route-reflector sessions
		// are not mesh sessions and would not have it.
		mesh := func(k string) bool { return !strings.HasSuffix(k, ".1") }
		waitMesh := func(t *testing.T, signed bool, since time.Time) {
			t.Helper()
			for _, n := range h.l.Plan.Nodes {
				eventually(t, 60*time.Second, fmt.Sprintf("%s's mesh sessions back (signed: %v)", n.Name, signed), func() (bool, string) {
					var mine []string
					for k, d := range h.uptimes(t) {
						if strings.HasPrefix(k, n.Name+" ") && mesh(k) {
							if d > time.Since(since)+time.Second {
								return false, k + " has not started over"
							}
							mine = append(mine, k)
						}
					}
					if len(mine) != len(h.l.Plan.Nodes)-1 {
						return false, fmt.Sprintf("%d mesh sessions established: %v", len(mine), mine)
					}
					// The kernel signs a session's segments when it has
					// the connection's MD5 key, which ss shows.
					out, _ := h.l.Exec(ctx, n.Name, "ss", "-Htni", "state", "established", "( sport = :179 or dport = :179 )")
					keyed := strings.Count(string(out), "md5keys:")
					if signed {
						return keyed == len(h.l.Plan.Nodes)-1, fmt.Sprintf("%d connections signed, want the %d mesh ones:\n%s", keyed, len(mine), out)
					}
					return keyed == 0, fmt.Sprintf("%d connections still signed:\n%s", keyed, out)
				})
			}
		}
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bgp-mesh", Namespace: lab.AgentNamespace},
			StringData: map[string]string{"password": "mesh-s3cret"}}
		if _, err := c.kube.CoreV1().Secrets(lab.AgentNamespace).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second) // the agents' Secret informers have it before the configuration names it
		scenario(t, "the mesh password set", mesh, func(t *testing.T) {
			since := time.Now()
			merge(t, "bgpconfiguration", v1alpha1.DefaultBGPConfigurationName,
				`{"spec":{"nodeMeshPassword":{"secretKeyRef":{"name":"bgp-mesh","key":"password"}}}}`)
			waitMesh(t, true, since)
		})
		scenario(t, "the mesh password removed", mesh, func(t *testing.T) {
			since := time.Now()
			merge(t, "bgpconfiguration", v1alpha1.DefaultBGPConfigurationName, `{"spec":{"nodeMeshPassword":null}}`)
			waitMesh(t, false, since)
		})
	})

	t.Run("mesh-ttl-security", func(t *testing.T) {
		// GTSM on every mesh session, set and removed on the live cluster
		// (issue 15 item 2): the racks are two routers apart (ToR, ToR),
		// so 3 hops. Each agent applies it to its live connections in
		// place, one agent after the other: no session starts over, no
		// route is deleted, no ping is lost, and every node's GoBGP holds
		// it with minimum TTL 253, then no more.
		gtsm := func(t *testing.T, want string) {
			t.Helper()
			for k := range h.uptimes(t) {
				node, peer, _ := strings.Cut(k, " ")
				if strings.HasSuffix(peer, ".1") {
					continue // the ToR: a BGPPeer of its own
				}
				eventually(t, 30*time.Second, fmt.Sprintf("%s's session to %s with TTL security %s", node, peer, want), func() (bool, string) {
					out, _ := h.l.Exec(ctx, node, "gobgp", "neighbor", peer, "-j")
					on := strings.Contains(string(out), `"ttl_min":253`)
					return on == (want == "on"), string(out)
				})
			}
		}
		scenario(t, "mesh TTL security on", none, func(t *testing.T) {
			merge(t, "bgpconfiguration", v1alpha1.DefaultBGPConfigurationName, `{"spec":{"nodeMeshTTLSecurity":3}}`)
			gtsm(t, "on")
		})
		scenario(t, "mesh TTL security off", none, func(t *testing.T) {
			merge(t, "bgpconfiguration", v1alpha1.DefaultBGPConfigurationName, `{"spec":{"nodeMeshTTLSecurity":null}}`)
			gtsm(t, "off")
		})
	})

	block3 := h.blocks[2]
	t.Run("route-reflector", func(t *testing.T) {
		// node-1 becomes a route reflector (mesh still on): its sessions
		// to the others become client sessions in place — no session
		// restarts anywhere — and it reflects: node-2 gets node-3's block
		// from node-1 too.
		scenario(t, "node-1 made a route reflector", none, func(t *testing.T) {
			merge(t, "node", "node-1", fmt.Sprintf(`{"metadata":{"labels":{%q:"true"}}}`, lab.RRLabel))
			rr := &v1alpha1.BGPConfiguration{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.NodeBGPConfigurationPrefix + "node-1"},
				Spec: v1alpha1.BGPConfigurationSpec{RouteReflectorClusterID: "224.0.0.1"}}
			if _, err := c.rz.RhizomeV1alpha1().BGPConfigurations().Create(ctx, rr, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			p := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "to-route-reflectors"}, Spec: v1alpha1.BGPPeerSpec{
				PeerSelector: &metav1.LabelSelector{MatchLabels: map[string]string{lab.RRLabel: "true"}},
			}}
			if _, err := c.rz.RhizomeV1alpha1().BGPPeers().Create(ctx, p, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			eventually(t, 30*time.Second, "node-2 gets node-3's block reflected by node-1", func() (bool, string) {
				out, _ := h.l.Exec(ctx, "node-2", "gobgp", "global", "rib", "-a", "ipv4", block3)
				return strings.Contains(string(out), "ClusterList: [224.0.0.1]"), string(out)
			})
		})
		// The mesh goes: the node-to-node sessions between clients are
		// removed, their routes stay, learned through the reflector.
		scenario(t, "the full mesh turned off", func(k string) bool {
			// sessions between two clients (neither is node-1 at 10.0.1.10)
			f := strings.Fields(k)
			return f[0] != "node-1" && f[1] != "10.0.1.10" && strings.HasPrefix(f[1], "10.0.") && !strings.HasSuffix(f[1], ".1")
		}, func(t *testing.T) {
			merge(t, "bgpconfiguration", v1alpha1.DefaultBGPConfigurationName, `{"spec":{"nodeToNodeMesh":false}}`)
			eventually(t, 30*time.Second, "node-2 peers only with node-1 and its ToR", func() (bool, string) {
				out, _ := h.l.Exec(ctx, "node-2", "gobgp", "neighbor")
				return !strings.Contains(string(out), "10.0.2.10") && strings.Contains(string(out), "10.0.1.10"), string(out)
			})
		})
		scenario(t, "the cluster ID changed", none, func(t *testing.T) {
			merge(t, "bgpconfiguration", v1alpha1.NodeBGPConfigurationPrefix+"node-1", `{"spec":{"routeReflectorClusterID":"224.0.0.2"}}`)
			eventually(t, 30*time.Second, "node-2 gets node-3's block with the new cluster ID", func() (bool, string) {
				out, _ := h.l.Exec(ctx, "node-2", "gobgp", "global", "rib", "-a", "ipv4", block3)
				return strings.Contains(string(out), "ClusterList: [224.0.0.2]"), string(out)
			})
		})
	})

	t.Run("listen-port", func(t *testing.T) {
		// node-2 listens on another port: its speaker is replaced (a new
		// port cannot be taken live). Its kernel routes stay until its new
		// sessions have converged, its peers keep its routes (no
		// NOTIFICATION, then the F bit), and node-1 follows it to the new
		// port without dropping its routes.
		scenario(t, "node-2's listen port changed", func(k string) bool {
			return strings.HasPrefix(k, "node-2 ") || strings.HasSuffix(k, " 10.0.1.11")
		}, func(t *testing.T) {
			cfg := &v1alpha1.BGPConfiguration{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.NodeBGPConfigurationPrefix + "node-2"},
				Spec: v1alpha1.BGPConfigurationSpec{ListenPort: ptrTo(int32(1790))}}
			if _, err := c.rz.RhizomeV1alpha1().BGPConfigurations().Create(ctx, cfg, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			eventually(t, 60*time.Second, "node-1's session to node-2 at its new port", func() (bool, string) {
				out, _ := h.l.Exec(ctx, "node-1", "gobgp", "neighbor", "10.0.1.11")
				conn, _ := h.l.Exec(ctx, "node-1", "ss", "-Htn", "state", "established", "dst", "10.0.1.11:1790")
				return strings.Contains(strings.ToLower(string(out)), "bgp state = established") && strings.TrimSpace(string(conn)) != "", string(out) + string(conn)
			})
			waitSessions(t, h.l, "node-2", 60*time.Second)
			time.Sleep(3 * time.Second) // End-of-RIBs, stale routes dropped
		})
	})
}
