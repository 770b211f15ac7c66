package main

import "testing"

func TestParsePassTimes(t *testing.T) {
	const text = `# HELP rhizome_agent_reconcile_duration_seconds Duration of the agent's reconcile passes.
# TYPE rhizome_agent_reconcile_duration_seconds histogram
rhizome_agent_reconcile_duration_seconds_bucket{le="0.0005"} 0
rhizome_agent_reconcile_duration_seconds_bucket{le="+Inf"} 12
rhizome_agent_reconcile_duration_seconds_sum 0.375
rhizome_agent_reconcile_duration_seconds_count 12
rhizome_agent_reconcile_duration_seconds_sum_other 9
`
	sum, count, err := parsePassTimes(text)
	if err != nil || sum != 0.375 || count != 12 {
		t.Errorf("parsePassTimes = %v, %v, %v; want 0.375, 12", sum, count, err)
	}
	for _, bad := range []string{"", "rhizome_agent_reconcile_duration_seconds_sum 1\n", "rhizome_agent_reconcile_duration_seconds_sum x\nrhizome_agent_reconcile_duration_seconds_count 1\n"} {
		if _, _, err := parsePassTimes(bad); err == nil {
			t.Errorf("parsePassTimes(%q) did not fail", bad)
		}
	}
}
