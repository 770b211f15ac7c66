// Package chart renders the benchmarks' JSON results as the SVG bar charts
// of docs/benchmarks.md. Every bench command that writes results renders
// its chart with it (routebench -json/-svg, make bench-bgp, bench-cni and
// bench-scale with RHIZOME_BENCH_OUT), and cmd/benchcharts re-renders all
// of them from the JSON files alone. Output is deterministic: the same
// results give the same bytes.
package chart

import (
	"encoding/json"
	"fmt"
	"html"
	"math"
	"os"
	"strings"
)

// Bar is one bar; Min and Max (both zero: none) draw a whisker, the range
// over the runs.
type Bar struct {
	Series   string
	Value    float64
	Min, Max float64
}

// Group is bars side by side under one label (a route count, a run).
type Group struct {
	Label string
	Bars  []Bar
}

// Panel is one chart: groups of bars on one axis.
type Panel struct {
	Title string
	Unit  string
	// Groups share the axis; Log scales it (values over decades).
	Groups []Group
	Log    bool
	// Highlight draws this series' bars outlined (Rhizome among others).
	Highlight string
}

var palette = []string{"#4a7ab5", "#c2703d", "#5b9a5b", "#8c6bb1", "#c94f4f", "#3d9a9a", "#b5a33d", "#777777"}

// SVG renders panels one above the other, with one legend of series.
func SVG(panels []Panel) string {
	const w, ph, left, right, top = 720, 260, 70, 20, 40
	var series []string
	seen := map[string]bool{}
	for _, p := range panels {
		for _, g := range p.Groups {
			for _, b := range g.Bars {
				if !seen[b.Series] {
					seen[b.Series] = true
					series = append(series, b.Series)
				}
			}
		}
	}
	color := map[string]string{}
	for i, s := range series {
		color[s] = palette[i%len(palette)]
	}
	legendH := 24
	h := len(panels)*ph + legendH + 10
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n", w, h, w, h)
	fmt.Fprintf(&sb, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	// Legend.
	x := left
	for _, s := range series {
		fmt.Fprintf(&sb, `<rect x="%d" y="8" width="12" height="12" fill="%s"/><text x="%d" y="18">%s</text>`+"\n", x, color[s], x+16, esc(s))
		x += 22 + 7*len(s)
	}
	for i, p := range panels {
		y0 := legendH + i*ph
		panelSVG(&sb, p, color, left, y0+top, w-left-right, ph-top-40)
	}
	sb.WriteString("</svg>\n")
	return sb.String()
}

func panelSVG(sb *strings.Builder, p Panel, color map[string]string, x0, y0, pw, ph int) {
	fmt.Fprintf(sb, `<text x="%d" y="%d" font-size="13" font-weight="bold">%s</text>`+"\n", x0, y0-12, esc(p.Title))
	top := 0.0
	lowest := math.Inf(1)
	for _, g := range p.Groups {
		for _, b := range g.Bars {
			top = math.Max(top, math.Max(b.Value, b.Max))
			if b.Value > 0 {
				lowest = math.Min(lowest, b.Value)
			}
		}
	}
	if top <= 0 {
		top = 1
	}
	scale := func(v float64) float64 { return v / top }
	var ticks []float64
	if p.Log && lowest < top {
		lo := math.Pow(10, math.Floor(math.Log10(lowest)))
		hi := math.Pow(10, math.Ceil(math.Log10(top)))
		scale = func(v float64) float64 {
			if v <= lo {
				return 0
			}
			return math.Log10(v/lo) / math.Log10(hi/lo)
		}
		for t := lo; t <= hi*1.0001; t *= 10 {
			ticks = append(ticks, t)
		}
	} else {
		step := niceStep(top / 4)
		for t := 0.0; t <= top*1.0001; t += step {
			ticks = append(ticks, t)
		}
		if last := ticks[len(ticks)-1]; last < top {
			ticks = append(ticks, last+step)
		}
		top = ticks[len(ticks)-1]
		scale = func(v float64) float64 { return v / top }
	}
	yOf := func(v float64) float64 { return float64(y0+ph) - scale(v)*float64(ph) }
	for _, t := range ticks {
		y := yOf(t)
		fmt.Fprintf(sb, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#dddddd"/>`+"\n", x0, y, x0+pw, y)
		fmt.Fprintf(sb, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", x0-6, y+4, num(t, p.Unit))
	}
	fmt.Fprintf(sb, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", x0, y0+ph, x0+pw, y0+ph)
	if len(p.Groups) == 0 {
		return
	}
	gw := float64(pw) / float64(len(p.Groups))
	for gi, g := range p.Groups {
		gx := float64(x0) + float64(gi)*gw
		bw := math.Min(40, (gw-20)/float64(max(1, len(g.Bars))))
		start := gx + (gw-bw*float64(len(g.Bars)))/2
		for bi, b := range g.Bars {
			bx := start + float64(bi)*bw
			y := yOf(b.Value)
			stroke := ""
			if b.Series == p.Highlight {
				stroke = ` stroke="black" stroke-width="2"`
			}
			fmt.Fprintf(sb, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"%s><title>%s: %s</title></rect>`+"\n",
				bx+1, y, bw-2, float64(y0+ph)-y, color[b.Series], stroke, esc(b.Series), num(b.Value, p.Unit))
			if b.Max > 0 {
				cx := bx + bw/2
				fmt.Fprintf(sb, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", cx, yOf(b.Min), cx, yOf(b.Max))
			}
			if len(g.Bars) <= 6 {
				fmt.Fprintf(sb, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9">%s</text>`+"\n", bx+bw/2, math.Min(y, yOf(b.Max))-3, num(b.Value, ""))
			}
		}
		fmt.Fprintf(sb, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", gx+gw/2, y0+ph+16, esc(g.Label))
	}
}

// niceStep rounds a tick step to 1, 2 or 5 times a power of ten.
func niceStep(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// num prints a value with three significant digits and no exponent.
func num(v float64, unit string) string {
	var s string
	switch a := math.Abs(v); {
	case a >= 100 || a == 0:
		s = fmt.Sprintf("%.0f", v)
	case a >= 10:
		s = fmt.Sprintf("%.1f", v)
	case a >= 1:
		s = fmt.Sprintf("%.2f", v)
	default:
		s = fmt.Sprintf("%.3g", v)
	}
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	if unit != "" {
		s += " " + unit
	}
	return s
}

func esc(s string) string { return html.EscapeString(s) }

// WriteJSON writes v as indented JSON; WriteSVG writes a rendered chart.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// ReadJSON reads a results file.
func ReadJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
