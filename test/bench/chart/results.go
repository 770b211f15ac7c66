package chart

import "fmt"

// The results each bench writes (their JSON), and their charts.

// Stat is a median with the range over the runs.
type Stat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

func (s Stat) bar(series string, k float64) Bar {
	return Bar{Series: series, Value: s.Median * k, Min: s.Min * k, Max: s.Max * k}
}

// RouteResult is one receiver at one table size (make bench-routes:
// routebench -json).
type RouteResult struct {
	Receiver   string  `json:"receiver"`
	Routes     int     `json:"routes"`
	Runs       int     `json:"runs"`
	Install    Stat    `json:"installSeconds"`
	Withdraw   Stat    `json:"withdrawSeconds"`
	RSSMiB     float64 `json:"rssMiB"`
	CPUSeconds float64 `json:"cpuSeconds"`
}

// RoutesSVG: install and withdrawal time by receiver, for each table size.
func RoutesSVG(rs []RouteResult) string {
	var sizes []int
	seen := map[int]bool{}
	for _, r := range rs {
		if !seen[r.Routes] {
			seen[r.Routes] = true
			sizes = append(sizes, r.Routes)
		}
	}
	groups := func(stat func(RouteResult) Stat) []Group {
		var gs []Group
		for _, n := range sizes {
			g := Group{Label: fmt.Sprintf("%d routes", n)}
			for _, r := range rs {
				if r.Routes == n {
					g.Bars = append(g.Bars, stat(r).bar(r.Receiver, 1000))
				}
			}
			gs = append(gs, g)
		}
		return gs
	}
	return SVG([]Panel{
		{Title: "Route installation: Established to all N routes in the kernel (median, range)", Unit: "ms", Log: true, Highlight: "rhizome",
			Groups: groups(func(r RouteResult) Stat { return r.Install })},
		{Title: "Route withdrawal: first withdraw to none left (median, range)", Unit: "ms", Log: true, Highlight: "rhizome",
			Groups: groups(func(r RouteResult) Stat { return r.Withdraw })},
	})
}

// PropagationResult is one run of make bench-bgp.
type PropagationResult struct {
	Label  string  `json:"label"`
	Nodes  int     `json:"nodes"`
	Trials int     `json:"trials"`
	P50ms  float64 `json:"p50Ms"`
	P99ms  float64 `json:"p99Ms"`
	MaxMs  float64 `json:"maxMs"`
}

// PropagationSVG: block propagation latency per run.
func PropagationSVG(rs []PropagationResult) string {
	var gs []Group
	for _, r := range rs {
		gs = append(gs, Group{Label: r.Label, Bars: []Bar{{Series: "p50", Value: r.P50ms}, {Series: "p99", Value: r.P99ms}, {Series: "max", Value: r.MaxMs}}})
	}
	return SVG([]Panel{{Title: "Block propagation: new block to the route in every other node's kernel (goal: p99 < 300 ms)", Unit: "ms", Groups: gs}})
}

// CNIResult is one run of make bench-cni.
type CNIResult struct {
	Label      string  `json:"label"`
	Pods       int     `json:"pods"`
	AddP50ms   float64 `json:"addP50Ms"`
	AddP99ms   float64 `json:"addP99Ms"`
	DelP50ms   float64 `json:"delP50Ms"`
	DelP99ms   float64 `json:"delP99Ms"`
	PodsPerSec float64 `json:"podsPerSecond"`
}

// CNISVG: ADD and DEL latency, and sequential pods per second, per run.
func CNISVG(rs []CNIResult) string {
	var lat, rate []Group
	for _, r := range rs {
		lat = append(lat, Group{Label: r.Label, Bars: []Bar{{Series: "ADD p50", Value: r.AddP50ms}, {Series: "ADD p99", Value: r.AddP99ms},
			{Series: "DEL p50", Value: r.DelP50ms}, {Series: "DEL p99", Value: r.DelP99ms}}})
		rate = append(rate, Group{Label: r.Label, Bars: []Bar{{Series: "pods/s", Value: r.PodsPerSec}}})
	}
	return SVG([]Panel{
		{Title: "CNI ADD and DEL latency (goal: ADD p99 < 50 ms)", Unit: "ms", Groups: lat},
		{Title: "Pods per second, sequential ADDs (goal: 50)", Groups: rate},
	})
}

// ScaleResult is one lab of make bench-scale.
type ScaleResult struct {
	Nodes          int     `json:"nodes"`
	Mode           string  `json:"mode"`
	ConvergenceSec float64 `json:"convergenceSeconds"`
	RSSMedianMiB   float64 `json:"rssMedianMiB"`
	RSSMaxMiB      float64 `json:"rssMaxMiB"`
	Blocks         int     `json:"blocks"`
}

// ScaleSVG: convergence time and agent memory per lab size.
func ScaleSVG(rs []ScaleResult) string {
	var conv, rss []Group
	for _, r := range rs {
		label := fmt.Sprintf("%d nodes, %s", r.Nodes, r.Mode)
		conv = append(conv, Group{Label: label, Bars: []Bar{{Series: "convergence", Value: r.ConvergenceSec}}})
		rss = append(rss, Group{Label: label, Bars: []Bar{{Series: "RSS median", Value: r.RSSMedianMiB}, {Series: "RSS max", Value: r.RSSMaxMiB}}})
	}
	return SVG([]Panel{
		{Title: "Convergence: agents start to every route in every kernel", Unit: "s", Groups: conv},
		{Title: "Agent memory (RSS)", Unit: "MiB", Groups: rss},
	})
}

// RRResult is one route reflector at one client count (make bench-rr:
// rrbench -json).
type RRResult struct {
	Reflector  string `json:"reflector"`
	Clients    int    `json:"clients"`
	Runs       int    `json:"runs"`
	Converge   Stat   `json:"tConvergeSeconds"`
	Churn      Stat   `json:"tChurnSeconds"`
	RSSMiB     Stat   `json:"rssMiB"`
	CPUSeconds Stat   `json:"cpuSeconds"`
}

// RRSVG: the four figures of the reflector benchmark by reflector, for each
// client count.
func RRSVG(rs []RRResult) string {
	var sizes []int
	seen := map[int]bool{}
	for _, r := range rs {
		if !seen[r.Clients] {
			seen[r.Clients] = true
			sizes = append(sizes, r.Clients)
		}
	}
	groups := func(stat func(RRResult) Stat) []Group {
		var gs []Group
		for _, n := range sizes {
			g := Group{Label: fmt.Sprintf("%d clients", n)}
			for _, r := range rs {
				if r.Clients == n {
					g.Bars = append(g.Bars, stat(r).bar(r.Reflector, 1))
				}
			}
			gs = append(gs, g)
		}
		return gs
	}
	return SVG([]Panel{
		{Title: "Convergence: every client announces at once, until every client has every other's routes (median, range)", Unit: "s", Log: true, Highlight: "rhizome",
			Groups: groups(func(r RRResult) Stat { return r.Converge })},
		{Title: "Churn: 1% of the clients flap, until the change has reached every client (median, range)", Unit: "s", Log: true, Highlight: "rhizome",
			Groups: groups(func(r RRResult) Stat { return r.Churn })},
		{Title: "Reflector peak RSS", Unit: "MiB", Log: true, Highlight: "rhizome",
			Groups: groups(func(r RRResult) Stat { return r.RSSMiB })},
		{Title: "Reflector CPU over the whole run", Unit: "s", Log: true, Highlight: "rhizome",
			Groups: groups(func(r RRResult) Stat { return r.CPUSeconds })},
	})
}
