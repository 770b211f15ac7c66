//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	rzclient "github.com/rhizome-net/rhizome/crds/client/clientset/versioned"
	rzinformers "github.com/rhizome-net/rhizome/crds/client/informers/externalversions"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/test/bench/chart"
	"github.com/rhizome-net/rhizome/test/lab"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s)-1) * p)
	return s[i]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// BenchmarkCNIAddDel measures CNI ADD and DEL end to end on one node — the
// plugin executed by libcni as a runtime does, the agent allocating from its
// IPAM blocks against the real API server — over RHIZOME_BENCH_PODS
// sequential pods (default 100). It reports p50/p99 latencies and pods per
// second (sequential ADDs).
func BenchmarkCNIAddDel(b *testing.B) {
	n := envInt("RHIZOME_BENCH_PODS", 100)
	l := up(b, lab.Options{Nodes: 1, Racks: 1, ToR: "none", Mode: "mesh", Encap: "none"})
	ctx := ctxFor(b, 10*time.Minute)
	b.ResetTimer()
	var adds, dels []time.Duration
	var names []string
	start := time.Now()
	for range n {
		rec, err := l.NewPod(ctx, "node-1")
		if err != nil {
			b.Fatal(err)
		}
		adds = append(adds, time.Duration(rec.AddSeconds*float64(time.Second)))
		names = append(names, rec.Name)
	}
	wall := time.Since(start)
	for _, name := range names {
		if err := l.RemovePod(ctx, name); err != nil {
			b.Fatal(err)
		}
		dels = append(dels, l.LastDelDuration())
	}
	b.StopTimer()
	var sum time.Duration
	for _, d := range adds {
		sum += d
	}
	b.ReportMetric(ms(percentile(adds, 0.5)), "add-p50-ms")
	b.ReportMetric(ms(percentile(adds, 0.99)), "add-p99-ms")
	b.ReportMetric(ms(percentile(dels, 0.5)), "del-p50-ms")
	b.ReportMetric(ms(percentile(dels, 0.99)), "del-p99-ms")
	b.ReportMetric(float64(n)/sum.Seconds(), "pods/s")
	fmt.Printf("cni n=%d add_p50_ms=%.1f add_p99_ms=%.1f del_p50_ms=%.1f del_p99_ms=%.1f pods_per_s=%.0f pods_per_s_with_runtime_work=%.0f\n",
		n, ms(percentile(adds, 0.5)), ms(percentile(adds, 0.99)), ms(percentile(dels, 0.5)), ms(percentile(dels, 0.99)),
		float64(n)/sum.Seconds(), float64(n)/wall.Seconds())
	appendResult(b, "cni", chart.CNIResult{Label: time.Now().UTC().Format("2006-01-02"), Pods: n,
		AddP50ms: ms(percentile(adds, 0.5)), AddP99ms: ms(percentile(adds, 0.99)), DelP50ms: ms(percentile(dels, 0.5)), DelP99ms: ms(percentile(dels, 0.99)),
		PodsPerSec: float64(n) / sum.Seconds()}, chart.CNISVG)
}

// appendResult adds a run's result to $RHIZOME_BENCH_OUT/NAME.json (the
// history docs/benchmarks.md shows) and renders NAME.svg from the whole.
func appendResult[T any](b *testing.B, name string, r T, render func([]T) string) {
	out := os.Getenv("RHIZOME_BENCH_OUT")
	if out == "" {
		return
	}
	var all []T
	path := filepath.Join(out, name+".json")
	if err := chart.ReadJSON(path, &all); err != nil && !errors.Is(err, os.ErrNotExist) {
		b.Fatal(err)
	}
	all = append(all, r)
	if err := chart.WriteJSON(path, all); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, name+".svg"), []byte(render(all)), 0o644); err != nil {
		b.Fatal(err)
	}
}

// routeWatch records when each node's kernel first holds a route for a
// prefix, from netlink notifications in each node's namespace.
type routeWatch struct {
	mu   sync.Mutex
	seen map[netip.Prefix]map[string]time.Time
	done chan struct{}
}

func watchRoutes(b testing.TB, l *lab.Lab) *routeWatch {
	w := &routeWatch{seen: map[netip.Prefix]map[string]time.Time{}, done: make(chan struct{})}
	b.Cleanup(func() { close(w.done) })
	for _, n := range l.Plan.Nodes {
		h, err := netns.GetFromPath("/run/netns/" + l.NodeNS(n.Name))
		if err != nil {
			b.Fatal(err)
		}
		ch := make(chan netlink.RouteUpdate, 4096)
		if err := netlink.RouteSubscribeWithOptions(ch, w.done, netlink.RouteSubscribeOptions{Namespace: &h}); err != nil {
			b.Fatal(err)
		}
		h.Close()
		go func(node string) {
			for u := range ch {
				if u.Type != 24 /* RTM_NEWROUTE */ || u.Dst == nil {
					continue
				}
				now := time.Now()
				a, _ := netip.AddrFromSlice(u.Dst.IP)
				ones, _ := u.Dst.Mask.Size()
				p := netip.PrefixFrom(a.Unmap(), ones)
				w.mu.Lock()
				if w.seen[p] == nil {
					w.seen[p] = map[string]time.Time{}
				}
				if _, ok := w.seen[p][node]; !ok {
					w.seen[p][node] = now
				}
				w.mu.Unlock()
			}
		}(n.Name)
	}
	return w
}

// BenchmarkBlockPropagation measures, in a 10-node full mesh, the time from
// a block being claimed on one node (its IPAMBlock appearing in a watch)
// until every other node's kernel has the route, over 50 trials
// (RHIZOME_BENCH_TRIALS). Blocks are /32 here, so every new pod claims one.
// It also reports the agents' idle RSS.
func BenchmarkBlockPropagation(b *testing.B) {
	nodes, trials := envInt("RHIZOME_BENCH_NODES", 10), envInt("RHIZOME_BENCH_TRIALS", 50)
	l := up(b, lab.Options{Nodes: nodes, Racks: 1, ToR: "none", Mode: "mesh", Encap: "none", BlockSize: 32})
	ctx := ctxFor(b, 15*time.Minute)
	time.Sleep(10 * time.Second) // let the cluster settle before measuring idle memory
	var rss []float64
	for _, n := range l.Plan.Nodes {
		if kb, err := vmRSS(l.AgentPID(n.Name)); err == nil {
			rss = append(rss, kb/1024)
		}
	}
	sort.Float64s(rss)

	cfg, err := clientcmd.BuildConfigFromFlags("", l.State.Kubeconfig)
	if err != nil {
		b.Fatal(err)
	}
	f := rzinformers.NewSharedInformerFactory(rzclient.NewForConfigOrDie(cfg), 0)
	var mu sync.Mutex
	claimed := map[netip.Prefix]time.Time{}
	f.Rhizome().V1alpha1().IPAMBlocks().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: func(o any) {
		now := time.Now()
		if p, err := netip.ParsePrefix(o.(*v1alpha1.IPAMBlock).Spec.CIDR); err == nil {
			mu.Lock()
			claimed[p] = now
			mu.Unlock()
		}
	}})
	stop := w2done(b)
	f.Start(stop)
	f.WaitForCacheSync(stop)
	w := watchRoutes(b, l)
	b.ResetTimer()
	var lat []time.Duration
	for i := 0; i < trials; i++ {
		node := l.Plan.Nodes[i%len(l.Plan.Nodes)].Name
		rec, err := l.NewPod(ctx, node)
		if err != nil {
			b.Fatal(err)
		}
		block := netip.PrefixFrom(netip.MustParseAddr(rec.Addresses[0]), 32)
		deadline := time.Now().Add(30 * time.Second)
		for {
			mu.Lock()
			t0, ok := claimed[block]
			mu.Unlock()
			w.mu.Lock()
			var last time.Time
			count := 0
			for _, n := range l.Plan.Nodes {
				if n.Name == node {
					continue
				}
				if t, ok := w.seen[block][n.Name]; ok {
					count++
					if t.After(last) {
						last = t
					}
				}
			}
			w.mu.Unlock()
			if ok && count == len(l.Plan.Nodes)-1 {
				lat = append(lat, last.Sub(t0))
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("trial %d: block %s claimed=%v, on %d of %d other kernels after 30s", i, block, ok, count, len(l.Plan.Nodes)-1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	b.StopTimer()
	b.ReportMetric(ms(percentile(lat, 0.5)), "p50-ms")
	b.ReportMetric(ms(percentile(lat, 0.99)), "p99-ms")
	b.ReportMetric(rss[len(rss)/2], "idle-rss-median-MiB")
	fmt.Printf("propagation nodes=%d trials=%d p50_ms=%.1f p99_ms=%.1f max_ms=%.1f idle_rss_mib_median=%.1f idle_rss_mib_max=%.1f\n",
		nodes, trials, ms(percentile(lat, 0.5)), ms(percentile(lat, 0.99)), ms(percentile(lat, 1)), rss[len(rss)/2], rss[len(rss)-1])
	appendResult(b, "propagation", chart.PropagationResult{Label: time.Now().UTC().Format("2006-01-02"), Nodes: nodes, Trials: trials,
		P50ms: ms(percentile(lat, 0.5)), P99ms: ms(percentile(lat, 0.99)), MaxMs: ms(percentile(lat, 1))}, chart.PropagationSVG)
}

func w2done(b testing.TB) chan struct{} {
	ch := make(chan struct{})
	b.Cleanup(func() { close(ch) })
	return ch
}

// vmRSS reads a process's resident set size in KiB.
func vmRSS(pid int) (float64, error) {
	bs, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(bs), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			return strconv.ParseFloat(f[1], 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS for %d", pid)
}
