package chart

import (
	"encoding/xml"
	"io"
	"strings"
	"testing"
)

// wellFormed parses the SVG as XML and counts its elements by name.
func wellFormed(t *testing.T, svg string) map[string]int {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(svg))
	n := map[string]int{}
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return n
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, svg)
		}
		if s, ok := tok.(xml.StartElement); ok {
			n[s.Name.Local]++
		}
	}
}

func TestRoutesChart(t *testing.T) {
	rs := []RouteResult{
		{Receiver: "bird", Routes: 10000, Install: Stat{0.093, 0.067, 0.097}, Withdraw: Stat{0.072, 0.059, 0.081}},
		{Receiver: "rhizome", Routes: 10000, Install: Stat{0.077, 0.067, 0.080}, Withdraw: Stat{0.051, 0.047, 0.058}},
		{Receiver: "bird", Routes: 100000, Install: Stat{0.736, 0.705, 0.768}, Withdraw: Stat{0.664, 0.661, 0.678}},
		{Receiver: "rhizome", Routes: 100000, Install: Stat{0.575, 0.526, 0.637}, Withdraw: Stat{0.446, 0.419, 0.554}},
	}
	svg := RoutesSVG(rs)
	n := wellFormed(t, svg)
	// 2 panels x 4 bars, 2 legend swatches and the background.
	if n["rect"] != 2*4+2+1 || n["title"] != 8 {
		t.Errorf("elements %v", n)
	}
	for _, want := range []string{"rhizome: 77 ms", "bird: 736 ms", "10000 routes", "100000 routes", `stroke="black" stroke-width="2"`, ">10 ms<", ">1000 ms<"} {
		if !strings.Contains(svg, want) {
			t.Errorf("chart lacks %q", want)
		}
	}
	if RoutesSVG(rs) != svg {
		t.Error("the same results rendered differently")
	}
}

func TestOtherCharts(t *testing.T) {
	for name, svg := range map[string]string{
		"propagation": PropagationSVG([]PropagationResult{{Label: "10-node mesh", P50ms: 3.2, P99ms: 14, MaxMs: 20.4}}),
		"cni":         CNISVG([]CNIResult{{Label: "run 1", AddP50ms: 17.9, AddP99ms: 29.3, DelP50ms: 51.8, DelP99ms: 70.6, PodsPerSec: 54}}),
		"scale":       ScaleSVG([]ScaleResult{{Nodes: 30, Mode: "mesh", ConvergenceSec: 24.1, RSSMedianMiB: 41, RSSMaxMiB: 42.2}}),
		"rr": RRSVG([]RRResult{{Reflector: "bird", Clients: 500, Runs: 3, Converge: Stat{0.5, 0.4, 0.7}, Churn: Stat{0.05, 0.04, 0.06}, RSSMiB: Stat{16, 16, 16}, CPUSeconds: Stat{0.9, 0.8, 1}},
			{Reflector: "rhizome", Clients: 500, Runs: 3, Converge: Stat{0.3, 0.2, 0.4}, Churn: Stat{0.04, 0.03, 0.05}, RSSMiB: Stat{90, 80, 95}, CPUSeconds: Stat{3, 2, 4}}}),
		"empty": SVG([]Panel{{Title: "nothing"}}),
	} {
		if n := wellFormed(t, svg); n["svg"] != 1 {
			t.Errorf("%s: %v", name, n)
		}
	}
}
