//go:build e2e

package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rhizome-net/rhizome/test/lab"
)

// BenchmarkFailover measures, for each setting of RHIZOME_BENCH_BFD (default
// "off,300x3,100x3"), RHIZOME_BENCH_REPS times (default 3), the time from
// cutting a node's link until the ToR (BIRD, or RHIZOME_BENCH_TOR) and both
// other nodes have withdrawn the node's block from their kernels. The lab:
// 3 nodes in one rack, full mesh, eBGP to the ToR, hold time 9 s. One line
// per run on stdout:
//
//	bfd=300x3 t_ms=512 tor_ms=480 nodes_ms=512
//
// t_ms is the last of the three withdrawals; `make bench-failover` runs it.
func BenchmarkFailover(b *testing.B) {
	settings := strings.Split(envString("RHIZOME_BENCH_BFD", "off,300x3,100x3"), ",")
	reps := envInt("RHIZOME_BENCH_REPS", 3)
	tor := envString("RHIZOME_BENCH_TOR", "bird")
	for _, s := range settings {
		o := lab.Options{Nodes: 3, Racks: 1, ToR: tor, Mode: "mesh", Encap: "none", Pods: 1}
		if s != "off" {
			o.BFD = s
		}
		b.Run("bfd="+s, func(b *testing.B) {
			l := up(b, o)
			ctx := ctxFor(b, 10*time.Minute)
			block := blockOfB(b, l, "node-3")
			for range reps {
				w := newWithdrawWatch(b, l, block, "tor-1", "node-1", "node-2")
				// Start from a settled state: the route everywhere, every
				// session up (BFD's too) and past the agents' settle time.
				w.waitPresent(b, 60*time.Second)
				settle()
				cutNode(b, ctx, l, "node-3")
				w.begin()
				gone := w.waitGone(b, 60*time.Second)
				nodes := max(gone["node-1"], gone["node-2"])
				fmt.Fprintf(os.Stdout, "bfd=%s t_ms=%d tor_ms=%d nodes_ms=%d\n", s, maxOf(gone).Milliseconds(), gone["tor-1"].Milliseconds(), nodes.Milliseconds())
				restoreNode(b, ctx, l, "node-3")
				w.waitBack(b, 90*time.Second)
			}
		})
	}
}

func envString(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// blockOfB is blockOf for benchmarks.
func blockOfB(b *testing.B, l *lab.Lab, node string) string {
	b.Helper()
	for _, p := range l.State.Pods {
		if p.Node == node {
			a := netip.MustParseAddr(p.Addresses[0])
			return netip.PrefixFrom(a, 26).Masked().String()
		}
	}
	b.Fatalf("no pod on %s", node)
	return ""
}
