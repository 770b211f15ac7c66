package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// plot renders the results as four small line charts (one per figure):
// clients on the x axis (evenly spaced, labelled), the median of each
// reflector's runs as a line, their range as a bar. The output depends only
// on the results, so re-rendering unchanged results changes nothing.
func plot(rs []result, reflectors []string) string {
	const pw, ph, padL, padB, padT = 330, 230, 56, 36, 28
	colors := []string{"#c2703d", "#4a7ab5", "#5a9e5a", "#8a5fb0"}
	by := group(rs)
	var counts []int
	for _, r := range rs {
		if !slices.Contains(counts, r.Clients) {
			counts = append(counts, r.Clients)
		}
	}
	slices.Sort(counts)
	var sb strings.Builder
	w, h := 2*pw+20, 2*ph+40
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", w, h)
	fmt.Fprintf(&sb, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	for i, r := range reflectors {
		fmt.Fprintf(&sb, `<rect x="%d" y="%d" width="12" height="4" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			10+i*110, h-14, colors[i%len(colors)], 26+i*110, h-9, r)
	}
	titles := map[string]string{
		"t_converge": "Convergence: all announce → all have all (s)",
		"t_churn":    "Churn: 1% of clients flap → spread (s)",
		"rss":        "Reflector peak RSS (MiB)",
		"cpu":        "Reflector CPU, whole run (s)",
	}
	for fi, f := range figures {
		x0, y0 := 10+(fi%2)*(pw+10), (fi/2)*(ph+10)
		top := 0.0
		for _, g := range by {
			for _, r := range g {
				top = max(top, f.of(r))
			}
		}
		top = niceCeil(top)
		fmt.Fprintf(&sb, `<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", x0, y0+16, titles[f.name])
		ax, ay, aw, ah := x0+padL, y0+padT, pw-padL-10, ph-padT-padB
		fmt.Fprintf(&sb, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", ax, ay+ah, ax+aw, ay+ah)
		fmt.Fprintf(&sb, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", ax, ay, ax, ay+ah)
		for t := 0; t <= 4; t++ {
			v := top * float64(t) / 4
			y := ay + ah - int(float64(ah)*float64(t)/4)
			fmt.Fprintf(&sb, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#ddd"/><text x="%d" y="%d" text-anchor="end">%s</text>`+"\n",
				ax+1, y, ax+aw, y, ax-4, y+4, short(v))
		}
		xOf := func(i int) int {
			if len(counts) == 1 {
				return ax + aw/2
			}
			return ax + 14 + i*(aw-28)/(len(counts)-1)
		}
		yOf := func(v float64) int {
			if top == 0 {
				return ay + ah
			}
			return ay + ah - int(math.Round(float64(ah)*v/top))
		}
		for i, n := range counts {
			fmt.Fprintf(&sb, `<text x="%d" y="%d" text-anchor="middle">%d</text>`+"\n", xOf(i), ay+ah+14, n)
		}
		fmt.Fprintf(&sb, `<text x="%d" y="%d" text-anchor="middle">clients</text>`+"\n", ax+aw/2, ay+ah+28)
		for ri, r := range reflectors {
			c := colors[ri%len(colors)]
			var pts []string
			for i, n := range counts {
				g := by[key{r, n}]
				if len(g) == 0 {
					continue
				}
				m, lo, hi := medianOf(g, f.of)
				x := xOf(i) + (ri-len(reflectors)/2)*4
				fmt.Fprintf(&sb, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>`+"\n", x, yOf(lo), x, yOf(hi), c)
				fmt.Fprintf(&sb, `<circle cx="%d" cy="%d" r="3" fill="%s"/>`+"\n", x, yOf(m), c)
				pts = append(pts, fmt.Sprintf("%d,%d", x, yOf(m)))
			}
			if len(pts) > 1 {
				fmt.Fprintf(&sb, `<polyline points="%s" fill="none" stroke="%s" stroke-width="1.5"/>`+"\n", strings.Join(pts, " "), c)
			}
		}
	}
	sb.WriteString("</svg>\n")
	return sb.String()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
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

func short(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}
