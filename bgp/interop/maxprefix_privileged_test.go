//go:build privileged

package interop

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/test/netns"
)

const (
	rogueIP     = "10.0.2.1"
	nodeRogueIP = "10.0.2.2"
)

// startRogue runs a stock gobgpd in a namespace of its own, joined to the
// node's by a second link, speaking iBGP in the nodes' AS to our node: to
// our node it is node-2, a mesh peer (passive: our node, the lower
// address, connects). It returns a function that makes it
// announce more prefixes (host routes from 172.16.0.0/16, outside every
// pool), counting on from the last.
func (l *lab) startRogue(t *testing.T) (announce func(n int)) {
	t.Helper()
	rogue := netns.New(t, "rogue")
	must(t, netns.Veth(rogue, "eth0", l.node, "eth1"))
	must(t, netns.AddAddr(rogue, "eth0", netns.Prefix(rogueIP+"/24")))
	must(t, netns.AddAddr(l.node, "eth1", netns.Prefix(nodeRogueIP+"/24")))
	must(t, netns.AddRoute(rogue, netns.Prefix("10.0.1.0/24"), netip.MustParseAddr(nodeRogueIP)))
	conf := filepath.Join(l.dir, "gobgpd.toml")
	must(t, os.WriteFile(conf, []byte(fmt.Sprintf(`[global.config]
  as = %d
  router-id = %q
[[neighbors]]
  [neighbors.config]
    neighbor-address = %q
    peer-as = %d
  [neighbors.transport.config]
    passive-mode = true
`, nodeAS, rogueIP, nodeIP, nodeAS)), 0o644))
	l.start(rogue, "gobgpd", nil, "gobgpd", "-f", conf, "--api-hosts", "127.0.0.1:50051", "--pprof-disable")
	waitFor(t, "gobgpd's API", 20*time.Second, func() bool {
		_, err := rogue.Exec(context.Background(), "gobgp", "global")
		return err == nil
	})
	sent := 0
	return func(n int) {
		t.Helper()
		var script strings.Builder
		for i := sent; i < sent+n; i++ {
			fmt.Fprintf(&script, "gobgp global rib add -a ipv4 172.16.%d.%d/32 nexthop %s || exit 1\n", i/250, i%250+1, rogueIP)
		}
		sent += n
		if out, err := rogue.Exec(context.Background(), "sh", "-c", script.String()); err != nil {
			t.Fatalf("gobgpd announcing: %v\n%s", err, out)
		}
	}
}

// TestNodeMaxPrefix plays a node that leaks a table into the mesh: a real
// gobgpd registered as a Node sends first fewer prefixes than the default
// limit of sessions between nodes (derived from the pools: here one /24
// of /26 blocks and one Service range, 256 + 4 + 1 = 261), then more. The
// agent must close that session, say why, and keep every other session
// and route: the ToR's session stays up without a reset, its routes stay
// installed throughout, and the ToR keeps ours. A pool change then raises
// the limit on the live sessions.
func TestNodeMaxPrefix(t *testing.T) {
	l := newLab(t)
	b := l.startBIRD("s3cret", torRoutes)
	st := meshNodeState(rogueIP, nil)
	st.Peers = []v1alpha1.BGPPeer{torPeer(acceptDefaultAndOffice...)}
	st.Secrets["bgp-passwords/tor"] = "s3cret"
	st.Pools[0].Spec.CIDR = "10.244.1.0/24"
	const limit = 261
	announce := l.startRogue(t)
	h := l.startHelper(st)
	torRoutes := []string{"0.0.0.0/0 via " + torIP, "192.168.10.0/24 via " + torIP}
	waitState(t, h, "Established")
	waitRoutes(t, h, "the ToR's", torRoutes...)
	waitFor(t, "the session to the rogue node", 30*time.Second, func() bool { return h.session(rogueIP).State == "Established" })
	if s := h.session(rogueIP); s.Kind != v1alpha1.SessionMesh {
		t.Fatalf("the session to node-2 is %s, want mesh", s.Kind)
	}
	torSince := h.session(torIP).Since

	// Under the limit: nothing happens (the import policy rejects them all).
	announce(200)
	waitFor(t, "the rogue's 200 prefixes to arrive", 30*time.Second, func() bool { return h.session(rogueIP).PrefixesReceived == 200 })
	if s := h.session(rogueIP); s.State != "Established" {
		t.Fatalf("the session closed under its limit: %+v", s)
	}

	// Over it, watched all along: the ToR's routes never leave, nothing
	// through the rogue is ever installed.
	stop := make(chan struct{})
	watched := make(chan []string)
	go func() {
		var bad []string
		for {
			select {
			case <-stop:
				watched <- bad
				return
			case <-time.After(20 * time.Millisecond):
			}
			var r helperRoutes
			if err := h.get("/routes", &r); err != nil {
				continue
			}
			if !slices.Equal(r.Routes, sorted(torRoutes...)) {
				bad = append(bad, strings.Join(r.Routes, "; "))
			}
		}
	}()
	announce(limit + 1 - 200)
	waitFor(t, "the agent to close the session to the leaking node", 30*time.Second, func() bool {
		return h.session(rogueIP).State != "Established"
	})
	time.Sleep(2 * time.Second) // gobgpd keeps dialling: the session must stay down
	close(stop)
	if bad := <-watched; len(bad) > 0 {
		t.Errorf("the node's routes changed during the leak (%d times), e.g. %s", len(bad), bad[0])
	}
	s := h.session(rogueIP)
	want := fmt.Sprintf("maximum prefix limit exceeded: the peer sent more than %d prefixes; session closed, enabled again at", limit)
	if s.State == "Established" || !strings.Contains(s.LastError, want) {
		t.Errorf("the leaking node's session: state %s, last error %q, want %q", s.State, s.LastError, want)
	}
	if ts := h.session(torIP); ts.State != "Established" || !ts.Since.Equal(torSince) {
		t.Errorf("the ToR's session was touched: %+v (up since %v before)", ts, torSince)
	}
	if got := sorted(b.received(t)...); !slices.Equal(got, sorted("10.244.1.0/26", "10.96.0.0/12")) {
		t.Errorf("BIRD holds %v of ours, want our block and Service range", got)
	}

	// A larger pool raises the limit (512 + 8 + 1) in place: the session
	// is enabled again at once and holds the whole table; the ToR's is
	// still not touched.
	h.reload(func(s *helperState) { s.Pools[0].Spec.CIDR = "10.244.0.0/23" })
	waitFor(t, "the session to the node to come back under its new limit", 30*time.Second, func() bool {
		s := h.session(rogueIP)
		return s.State == "Established" && s.PrefixesReceived == limit+1
	})
	if ts := h.session(torIP); ts.State != "Established" || !ts.Since.Equal(torSince) {
		t.Errorf("the ToR's session was touched by the new limit: %+v (up since %v before)", ts, torSince)
	}
}
