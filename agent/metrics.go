package agent

import (
	"context"
	"runtime"
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/labels"
	clientmetrics "k8s.io/client-go/tools/metrics"

	rzlisters "github.com/rhizome-net/rhizome/crds/client/listers/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/internal/version"
	"github.com/rhizome-net/rhizome/ipam"
)

// agentMetrics are the agent's own metrics; the components register theirs
// (rhizome_bgp_*, rhizome_routes_*, rhizome_ipam_*) on the same registry.
type agentMetrics struct {
	passDuration  prometheus.Histogram
	ready         *prometheus.GaugeVec
	allocDuration *prometheus.HistogramVec
}

func newAgentMetrics(reg prometheus.Registerer, r *readiness) *agentMetrics {
	m := &agentMetrics{
		passDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "rhizome", Subsystem: "agent", Name: "reconcile_duration_seconds",
			Help:    "Duration of the agent's reconcile passes (desired state to IPAM, routes and BGP).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		ready: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "rhizome", Subsystem: "agent", Name: "ready",
			Help: "1 when the readiness condition holds, 0 when not (caches, node, ipam, routes, bgp).",
		}, []string{"condition"}),
		// What a pod's CNI ADD waits for: the local API's allocation,
		// usually one compare-and-swap of a block (docs/benchmarks.md).
		allocDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "rhizome", Subsystem: "ipam", Name: "allocation_duration_seconds",
			Help:    "Duration of address allocations for pods through the local API, by result (ok, error).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}, []string{"result"}),
	}
	// Both results exist from the start, so rates and alerts see zeros.
	m.allocDuration.WithLabelValues("ok")
	m.allocDuration.WithLabelValues("error")
	reg.MustRegister(m.passDuration, readinessCollector{r: r, desc: m.ready}, apiRequests, newBuildInfo(), m.allocDuration)
	return m
}

// newBuildInfo is rhizome_build_info{version,revision,goversion} 1, the
// Prometheus convention for a build's identity: count the versions running
// during a rolling upgrade, or join on it to label other series.
func newBuildInfo() prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "rhizome", Name: "build_info",
		Help: "Build of the running agent (internal/version); always 1.",
		ConstLabels: prometheus.Labels{
			"version": version.Version, "revision": version.Revision, "goversion": runtime.Version(),
		},
	})
	g.Set(1)
	return g
}

// readinessCollector exports the readiness conditions at scrape time.
type readinessCollector struct {
	r    *readiness
	desc *prometheus.GaugeVec
}

func (c readinessCollector) Describe(ch chan<- *prometheus.Desc) { c.desc.Describe(ch) }

func (c readinessCollector) Collect(ch chan<- prometheus.Metric) {
	c.r.mu.Lock()
	names := make([]string, 0, len(c.r.checks))
	for n := range c.r.checks {
		names = append(names, n)
	}
	sort.Strings(names)
	vals := map[string]float64{}
	for _, n := range names {
		if c.r.checks[n] == "" {
			vals[n] = 1
		}
	}
	c.r.mu.Unlock()
	for _, n := range names {
		c.desc.WithLabelValues(n).Set(vals[n])
	}
	c.desc.Collect(ch)
}

// apiRequests counts the agent's API server requests by result code, so that
// API errors (5xx, 429, connection failures as "<error>") show up.
var (
	apiRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "rhizome", Subsystem: "agent", Name: "api_requests_total",
		Help: "Requests to the Kubernetes API server by HTTP method and result code.",
	}, []string{"method", "code"})
	registerAPIOnce sync.Once
)

type apiResult struct{}

func (apiResult) Increment(_ context.Context, code, method, _ string) {
	apiRequests.WithLabelValues(method, code).Inc()
}

// hookClientMetrics routes client-go's request results into apiRequests.
// client-go takes the first registration only, so it runs before any
// client is built.
func hookClientMetrics() {
	registerAPIOnce.Do(func() {
		clientmetrics.Register(clientmetrics.RegisterOpts{RequestResult: apiResult{}})
	})
}

// ipamUsage exports IPAM utilisation at scrape time: per pool (from the
// pools' status, which the elected IPAM controller keeps) and for this node
// (its blocks and their allocations, from the IPAM snapshot).
type ipamUsage struct {
	pools                        rzlisters.IPPoolLister
	view                         ipam.View
	poolUsed, poolFree, poolUtil *prometheus.Desc
	nodeBlocks, nodeAllocated    *prometheus.Desc
}

func newIPAMUsage(pools rzlisters.IPPoolLister, view ipam.View) *ipamUsage {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("rhizome_ipam_"+name, help, labels, nil)
	}
	return &ipamUsage{pools: pools, view: view,
		poolUsed:      d("pool_addresses_in_use", "Allocated addresses of the pool (pool status).", "pool"),
		poolFree:      d("pool_addresses_free", "Addresses of the pool that can still be allocated (pool status).", "pool"),
		poolUtil:      d("pool_utilization_ratio", "Allocated share of the pool's addresses, 0-1.", "pool"),
		nodeBlocks:    d("node_blocks", "Blocks this node holds by affinity."),
		nodeAllocated: d("node_block_addresses_allocated", "Allocated addresses in this node's blocks."),
	}
}

func (u *ipamUsage) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{u.poolUsed, u.poolFree, u.poolUtil, u.nodeBlocks, u.nodeAllocated} {
		ch <- d
	}
}

func (u *ipamUsage) Collect(ch chan<- prometheus.Metric) {
	if u.pools != nil {
		pools, err := u.pools.List(labels.Everything())
		if err == nil {
			for _, p := range pools {
				used, free := float64(p.Status.AddressesInUse), float64(p.Status.AddressesFree)
				ch <- prometheus.MustNewConstMetric(u.poolUsed, prometheus.GaugeValue, used, p.Name)
				ch <- prometheus.MustNewConstMetric(u.poolFree, prometheus.GaugeValue, free, p.Name)
				if used+free > 0 {
					ch <- prometheus.MustNewConstMetric(u.poolUtil, prometheus.GaugeValue, used/(used+free), p.Name)
				}
			}
		}
	}
	if u.view != nil {
		snap := u.view.Snapshot()
		allocated := 0
		for _, b := range snap.Affine {
			allocated += b.Allocated
		}
		ch <- prometheus.MustNewConstMetric(u.nodeBlocks, prometheus.GaugeValue, float64(len(snap.Affine)))
		ch <- prometheus.MustNewConstMetric(u.nodeAllocated, prometheus.GaugeValue, float64(allocated))
	}
}
