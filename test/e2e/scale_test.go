//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	rzclient "github.com/rhizome-net/rhizome/crds/client/clientset/versioned"
	"github.com/rhizome-net/rhizome/test/bench/chart"
	"github.com/rhizome-net/rhizome/test/lab"
)

// ScaleResult is one scale run, as written to the results file the plot
// is rendered from.
type ScaleResult = chart.ScaleResult

// BenchmarkScale starts large labs — RHIZOME_SCALE_RUNS, default
// "30:mesh,100:rr" (100 nodes with two route reflectors) — and measures the
// convergence time, from the agents' start until every node's kernel holds a
// route to every other node's block, and each agent's RSS afterwards. With
// RHIZOME_SCALE_OUT set, results go to $RHIZOME_SCALE_OUT/scale.json and a
// plot to $RHIZOME_SCALE_OUT/scale.svg.
func BenchmarkScale(b *testing.B) {
	runs := os.Getenv("RHIZOME_SCALE_RUNS")
	if runs == "" {
		runs = "30:mesh,100:rr"
	}
	var results []ScaleResult
	for _, r := range strings.Split(runs, ",") {
		n, mode, _ := strings.Cut(r, ":")
		nodes, err := strconv.Atoi(n)
		if err != nil {
			b.Fatalf("RHIZOME_SCALE_RUNS entry %q: want NODES:mesh|rr", r)
		}
		b.Run(fmt.Sprintf("%d-%s", nodes, mode), func(b *testing.B) {
			res := scaleRun(b, nodes, mode)
			results = append(results, res)
			b.ReportMetric(res.ConvergenceSec, "convergence-s")
			b.ReportMetric(res.RSSMedianMiB, "rss-median-MiB")
			fmt.Printf("scale nodes=%d mode=%s convergence_s=%.1f rss_mib_median=%.1f rss_mib_max=%.1f blocks=%d\n",
				res.Nodes, res.Mode, res.ConvergenceSec, res.RSSMedianMiB, res.RSSMaxMiB, res.Blocks)
		})
	}
	if out := os.Getenv("RHIZOME_SCALE_OUT"); out != "" && len(results) > 0 {
		j, _ := json.MarshalIndent(results, "", "  ")
		if err := os.WriteFile(filepath.Join(out, "scale.json"), append(j, '\n'), 0o644); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(out, "scale.svg"), []byte(chart.ScaleSVG(results)), 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

func scaleRun(b *testing.B, nodes int, mode string) ScaleResult {
	// VXLAN makes every agent claim a block at start (its tunnel address),
	// so convergence needs no pods.
	o := lab.Options{Nodes: nodes, Racks: 1, ToR: "none", Mode: mode, Encap: "vxlan"}
	var started time.Time
	dir := filepath.Join(os.TempDir(), "rhizome-e2e", "scale")
	l := lab.New(dir, binDir(b), "rzs-", logWriter{b})
	l.OnAgentsStarted = func() { started = time.Now() }
	b.Cleanup(func() { l.Down() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if err := l.Up(ctx, o); err != nil {
		b.Fatalf("lab up: %v", err)
	}
	cfg, _ := clientcmd.BuildConfigFromFlags("", l.State.Kubeconfig)
	rz := rzclient.NewForConfigOrDie(cfg)
	handles := map[string]*netlink.Handle{}
	for _, n := range l.Plan.Nodes {
		ns, err := netns.GetFromPath("/run/netns/" + l.NodeNS(n.Name))
		if err != nil {
			b.Fatal(err)
		}
		h, err := netlink.NewHandleAt(ns)
		ns.Close()
		if err != nil {
			b.Fatal(err)
		}
		defer h.Close()
		handles[n.Name] = h
	}
	var blocks map[netip.Prefix]string
	for {
		list, err := rz.RhizomeV1alpha1().IPAMBlocks().List(ctx, metav1.ListOptions{})
		if err != nil {
			b.Fatal(err)
		}
		blocks = map[netip.Prefix]string{}
		for _, bl := range list.Items {
			if p, err := netip.ParsePrefix(bl.Spec.CIDR); err == nil && bl.Spec.Affinity != "" {
				blocks[p] = bl.Spec.Affinity
			}
		}
		if converged(handles, blocks) && len(blocks) >= nodes {
			break
		}
		if ctx.Err() != nil {
			b.Fatalf("not converged: %d blocks", len(blocks))
		}
		time.Sleep(250 * time.Millisecond)
	}
	conv := time.Since(started)
	time.Sleep(5 * time.Second)
	var rss []float64
	for _, n := range l.Plan.Nodes {
		if kb, err := vmRSS(l.AgentPID(n.Name)); err == nil {
			rss = append(rss, kb/1024)
		}
	}
	sort.Float64s(rss)
	return ScaleResult{Nodes: nodes, Mode: mode, ConvergenceSec: conv.Seconds(), RSSMedianMiB: rss[len(rss)/2], RSSMaxMiB: rss[len(rss)-1], Blocks: len(blocks)}
}

// converged reports whether every node's kernel routes every other node's
// block.
func converged(handles map[string]*netlink.Handle, blocks map[netip.Prefix]string) bool {
	for node, h := range handles {
		rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: 114}, netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			return false
		}
		have := map[netip.Prefix]bool{}
		for _, r := range rs {
			if r.Dst != nil {
				a, _ := netip.AddrFromSlice(r.Dst.IP)
				ones, _ := r.Dst.Mask.Size()
				have[netip.PrefixFrom(a.Unmap(), ones)] = true
			}
		}
		for p, owner := range blocks {
			if owner != node && !have[p] {
				return false
			}
		}
	}
	return true
}
