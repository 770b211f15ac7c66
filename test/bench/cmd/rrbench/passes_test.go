package main

import (
	"math"
	"reflect"
	"strings"
	"testing"
)

const histHead = `# HELP rhizome_agent_reconcile_duration_seconds Duration of the agent's reconcile passes.
# TYPE rhizome_agent_reconcile_duration_seconds histogram
rhizome_agent_reconcile_duration_seconds_bucket{le="0.0005"} 0
rhizome_agent_reconcile_duration_seconds_bucket{le="0.001"} 4
rhizome_agent_reconcile_duration_seconds_bucket{le="0.002"} 9
rhizome_agent_reconcile_duration_seconds_bucket{le="0.004"} 9
`

const histTail = `rhizome_agent_reconcile_duration_seconds_sum 0.375
rhizome_agent_reconcile_duration_seconds_count 12
rhizome_agent_reconcile_duration_seconds_sum_other 9
rhizome_routes_programmed 1050
`

func TestParsePassStats(t *testing.T) {
	four := []bucket{{0.0005, 0}, {0.001, 4}, {0.002, 9}, {0.004, 9}}
	for _, tc := range []struct {
		name, text string
		want       passStats
		fails      bool
	}{
		{name: "slowest in a finite bucket", text: histHead + `rhizome_agent_reconcile_duration_seconds_bucket{le="0.008"} 12
rhizome_agent_reconcile_duration_seconds_bucket{le="+Inf"} 12
` + histTail, want: passStats{PassSum: 0.375, Passes: 12, PassMaxLE: 0.008, Buckets: append(four[:4:4], bucket{0.008, 12}, bucket{math.Inf(1), 12})}},
		{name: "slowest above every bucket", text: histHead + `rhizome_agent_reconcile_duration_seconds_bucket{le="+Inf"} 12
` + histTail, want: passStats{PassSum: 0.375, Passes: 12, PassMaxLE: math.Inf(1), Buckets: append(four[:4:4], bucket{math.Inf(1), 12})}},
		{name: "no passes yet", text: `rhizome_agent_reconcile_duration_seconds_bucket{le="+Inf"} 0
rhizome_agent_reconcile_duration_seconds_sum 0
rhizome_agent_reconcile_duration_seconds_count 0
`, want: passStats{Buckets: []bucket{{math.Inf(1), 0}}}},
		{name: "empty", text: "", fails: true},
		{name: "no sum", text: strings.Replace(histHead+histTail, "rhizome_agent_reconcile_duration_seconds_sum 0.375\n", "", 1), fails: true},
		{name: "no buckets", text: histTail, fails: true},
		{name: "bad count", text: strings.Replace(histHead+histTail, "_count 12", "_count x", 1), fails: true},
		{name: "bad bucket bound", text: strings.Replace(histHead+histTail, `le="0.002"`, `le="two"`, 1), fails: true},
	} {
		got, err := parsePassStats(tc.text)
		if tc.fails {
			if err == nil {
				t.Errorf("%s: parsePassStats = %+v, want an error", tc.name, got)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: parsePassStats = %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
}

// The passes after the start are told apart from the start-up's: one
// long first pass before, short ones after.
func TestPassStatsSince(t *testing.T) {
	hist := func(sum float64, count int64, ns ...int64) passStats {
		s := passStats{PassSum: sum, Passes: count}
		for i, n := range ns {
			le := 0.0005 * float64(int(1)<<i)
			if i == len(ns)-1 {
				le = math.Inf(1)
			}
			s.Buckets = append(s.Buckets, bucket{le, n})
		}
		s.PassMaxLE = maxLE(s.Buckets)
		return s
	}
	start := hist(7.5, 400, 398, 399, 399, 399, 400, 400) // one pass in the last finite bucket (up to 8 ms)
	end := hist(7.53, 410, 405, 408, 409, 409, 410, 410)
	d, err := end.since(start)
	if err != nil {
		t.Fatal(err)
	}
	if n, mean, max := d.figures(); n != 10 || math.Abs(mean-3) > 1e-9 || max != 2 {
		t.Errorf("after the start: %d passes, mean %v ms, slowest ≤ %v ms; want 10, 3, 2", n, mean, max)
	}
	if n, _, max := end.figures(); n != 410 || max != 8 {
		t.Errorf("whole run: %d passes, slowest ≤ %v ms; want 410, 8", n, max)
	}
	if _, err := end.since(passStats{}); err == nil {
		t.Errorf("since a histogram never read: no error")
	}
	if _, err := start.since(end); err == nil {
		t.Errorf("since a later histogram: no error")
	}
	slow := hist(0.3, 1, 0, 0, 0, 0, 0, 1)
	if _, _, max := slow.figures(); max != -1 {
		t.Errorf("slowest above every bucket: %v ms, want -1", max)
	}
}
