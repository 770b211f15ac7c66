//go:build e2e

package e2e

import (
	"fmt"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	rzclient "github.com/rhizome-net/rhizome/crds/client/clientset/versioned"
	"github.com/rhizome-net/rhizome/test/controlplane"
	"github.com/rhizome-net/rhizome/test/lab"
)

// TestHitlessTunnels (issue 16, item 3): VXLAN between racks. A transient
// API failure never takes a node's tunnel endpoint away: other nodes keep
// the last good VTEP instead of deleting working routes. Watched with
// 10 ms pings across racks and `ip monitor route` on every node.
func TestHitlessTunnels(t *testing.T) {
	l := up(t, lab.Options{Nodes: 3, Racks: 2, ToR: "bird", Mode: "mesh", Encap: "vxlan", Pods: 1})
	ctx := ctxFor(t, 10*time.Minute)
	var blocks []string
	pods := map[string]lab.PodRecord{}
	for _, n := range l.Plan.Nodes {
		blocks = append(blocks, blockOf(t, l, n.Name))
		pods[n.Name] = podOn(t, l, n.Name)
	}
	eventually(t, 60*time.Second, "every pod reaches every pod", func() (bool, string) {
		f := lab.PingMatrix(ctx, l.State.Pods).Failures()
		return len(f) == 0, fmt.Sprint(f)
	})
	var ws watchSet
	for _, n := range []string{"node-1", "node-2", "node-3"} {
		ws.watches = append(ws.watches, monitorRoutes(t, l, n))
	}
	pingAll := func() {
		for _, pr := range [][2]string{{"node-1", "node-3"}, {"node-2", "node-3"}, {"node-3", "node-1"}} {
			ws.pings = append(ws.pings, startFastPing(t, l, pods[pr[0]], pods[pr[1]].Addresses[0], pr[0]+"->"+pr[1]))
		}
		time.Sleep(500 * time.Millisecond)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", l.State.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	rz := rzclient.NewForConfigOrDie(cfg).RhizomeV1alpha1().RhizomeNodes()

	t.Run("rhizomenode-deleted", func(t *testing.T) {
		// Someone deletes node-3's RhizomeNode (or it is re-created):
		// the other nodes keep its VTEP and their routes through it; its
		// agent publishes it again.
		ws.begin()
		pingAll()
		if err := rz.Delete(ctx, "node-3", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		deleted := time.Now()
		eventually(t, 30*time.Second, "node-3's RhizomeNode published again", func() (bool, string) {
			r, err := rz.Get(ctx, "node-3", metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return r.Spec.VXLANTunnelAddress != "", fmt.Sprintf("%+v", r.Spec)
		})
		t.Logf("node-3's RhizomeNode back %s after its deletion", time.Since(deleted).Round(10*time.Millisecond))
		time.Sleep(3 * time.Second)
		ws.end(t, "vxlan/node-3's RhizomeNode deleted", blocks).requireNoLoss(t)
	})

	t.Run("agent-restart-api-down", func(t *testing.T) {
		// The API server is down while node-3's agent is killed and
		// started again: the new agent cannot read anything for 20 s, then
		// comes up with the tunnel address it had, without writing it.
		ws.begin()
		pingAll()
		if err := controlplane.StopAPIServer(l.ControlPlaneDir()); err != nil {
			t.Fatal(err)
		}
		l.StopAgent("node-3", true)
		time.Sleep(time.Second)
		if err := l.StartAgentNoWait("node-3"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Second)
		if err := controlplane.StartAPIServer(ctx, l.ControlPlaneDir()); err != nil {
			t.Fatal(err)
		}
		if err := l.WaitAgentReady(ctx, "node-3", 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		waitSessions(t, l, "node-3", 60*time.Second)
		time.Sleep(3 * time.Second)
		ws.end(t, "vxlan/agent restart while the API server is down", blocks).requireNoLoss(t)
		r, err := rz.Get(ctx, "node-3", metav1.GetOptions{})
		if apierrors.IsNotFound(err) || err == nil && r.Spec.VXLANTunnelAddress == "" {
			t.Errorf("node-3's VTEP is not published after the restart: %+v %v", r, err)
		}
	})
	requireMatrix(t, l)
}
