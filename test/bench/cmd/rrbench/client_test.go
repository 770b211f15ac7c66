package main

import (
	"math"
	"strings"
	"testing"
)

func TestParseClientStats(t *testing.T) {
	const head = `# HELP rhizome_agent_reconcile_duration_seconds Duration of the agent's reconcile passes.
# TYPE rhizome_agent_reconcile_duration_seconds histogram
rhizome_agent_reconcile_duration_seconds_bucket{le="0.0005"} 0
rhizome_agent_reconcile_duration_seconds_bucket{le="0.001"} 4
rhizome_agent_reconcile_duration_seconds_bucket{le="0.002"} 9
rhizome_agent_reconcile_duration_seconds_bucket{le="0.004"} 9
`
	const tail = `rhizome_agent_reconcile_duration_seconds_sum 0.375
rhizome_agent_reconcile_duration_seconds_count 12
rhizome_agent_reconcile_duration_seconds_sum_other 9
rhizome_routes_programmed 1050
`
	for _, tc := range []struct {
		name, text string
		want       clientStats
		fails      bool
	}{
		{name: "slowest in a finite bucket", text: head + `rhizome_agent_reconcile_duration_seconds_bucket{le="0.008"} 12
rhizome_agent_reconcile_duration_seconds_bucket{le="+Inf"} 12
` + tail, want: clientStats{PassSum: 0.375, Passes: 12, PassMaxLE: 0.008}},
		{name: "slowest above every bucket", text: head + `rhizome_agent_reconcile_duration_seconds_bucket{le="+Inf"} 12
` + tail, want: clientStats{PassSum: 0.375, Passes: 12, PassMaxLE: math.Inf(1)}},
		{name: "no passes yet", text: `rhizome_agent_reconcile_duration_seconds_bucket{le="+Inf"} 0
rhizome_agent_reconcile_duration_seconds_sum 0
rhizome_agent_reconcile_duration_seconds_count 0
`, want: clientStats{}},
		{name: "empty", text: "", fails: true},
		{name: "no sum", text: strings.Replace(head+tail, "rhizome_agent_reconcile_duration_seconds_sum 0.375\n", "", 1), fails: true},
		{name: "no buckets", text: tail, fails: true},
		{name: "bad count", text: strings.Replace(head+tail, "_count 12", "_count x", 1), fails: true},
		{name: "bad bucket bound", text: strings.Replace(head+tail, `le="0.002"`, `le="two"`, 1), fails: true},
	} {
		got, err := parseClientStats(tc.text)
		if tc.fails {
			if err == nil {
				t.Errorf("%s: parseClientStats = %+v, want an error", tc.name, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: parseClientStats = %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
}

// The client agent waits for every feeder's block and borrowed /32.
func TestWantRoutes(t *testing.T) {
	for _, tc := range []struct{ n, want int }{{2, 3}, {20, 21}, {21, 23}, {1000, 1050}, {5000, 5250}} {
		if got := wantRoutes(tc.n); got != tc.want {
			t.Errorf("wantRoutes(%d) = %d, want %d", tc.n, got, tc.want)
		}
	}
	// The client agent's block is nobody's among the feeders'.
	if b := block(agentBlock); b.String() != "10.15.255.192/26" || block(maxClients-1).Overlaps(b) {
		t.Errorf("client agent's block %s", b)
	}
}

// Only routes through a gateway count: not the agent's own block's
// blackhole, nor a link route.
func TestLearned(t *testing.T) {
	const out = `blackhole 10.15.255.192/26 proto 80
10.0.0.0/26 via 172.20.0.1 dev ag0 proto 80
10.0.0.64/26 via 172.20.0.2 dev ag0 proto 80
10.0.0.127 via 172.20.0.1 dev ag0 proto 80
10.1.0.0/24 dev ag0 proto kernel scope link src 10.1.0.1
`
	for _, tc := range []struct {
		out  string
		want int
	}{{out, 3}, {"", 0}, {"blackhole 10.15.255.192/26 proto 80\n", 0}} {
		if got := learned(tc.out); got != tc.want {
			t.Errorf("learned(%q) = %d, want %d", tc.out, got, tc.want)
		}
	}
}
