package main

import (
	"strings"
	"testing"
)

// A result line reads back as the result that wrote it; lines of an older
// version (without the idle figures) still read; broken ones fail.
func TestParseResult(t *testing.T) {
	want := result{Reflector: "rhizome", Clients: 1000, Converge: 1.5, Churn: 0.25, RSS: 120.5, CPU: 33.25,
		Establish: 2, Withdraw: 0.125, Readvertise: 0.125, CPUConverge: 3.5, Updates: 1069340, OtherCPU: 4,
		RSSIdle: 99.5, Passes: 12, PassMean: 7.5, PassMax: 8192, PassesAfterStart: 3, PassAfterStartMean: 96.5, PassAfterStartMax: 256}
	got, err := parseResult(want.String())
	if err != nil || got != want {
		t.Errorf("parseResult(%q) = %+v, %v", want.String(), got, err)
	}
	// With the client agent's figures (-client).
	want.ClientRSSIdle, want.ClientRSS, want.ClientPasses, want.ClientPassMean, want.ClientPassMax, want.ClientRoutes = 60.5, 80.5, 40, 3.5, 64, 1050
	want.ClientPassesAfterStart, want.ClientPassAfterStartMean, want.ClientPassAfterStartMax = 9, 20.5, -1
	if !strings.Contains(want.String(), " client_routes=1050") {
		t.Errorf("no client figures in %q", want.String())
	}
	got, err = parseResult(want.String())
	if err != nil || got != want {
		t.Errorf("parseResult(%q) = %+v, %v", want.String(), got, err)
	}
	if _, err := parseResult(strings.Replace(want.String(), " client_passes=40", "", 1)); err == nil {
		t.Errorf("a line with client_routes but no client_passes did not fail")
	}
	old := "reflector=bird clients=500 t_converge_s=0.576 t_churn_s=0.054 rss_mb=20.1 cpu_s=1.50 t_establish_s=1.2 t_withdraw_s=0.01 t_readvertise_s=0.04 cpu_converge_s=0.5 updates=262000 other_cpu_pct=3"
	if r, err := parseResult(old); err != nil || r.Clients != 500 || r.Converge != 0.576 || r.RSSIdle != 0 {
		t.Errorf("older line: %+v, %v", r, err)
	}
	for _, bad := range []string{
		"",
		"clients=5",
		strings.Replace(old, "t_churn_s=0.054", "t_churn_s=x", 1),
		strings.Replace(old, " rss_mb=20.1", "", 1),
		old + " stray",
	} {
		if _, err := parseResult(bad); err == nil {
			t.Errorf("parseResult(%q) did not fail", bad)
		}
	}
}
