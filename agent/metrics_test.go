package agent

import (
	"runtime"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rhizome-net/rhizome/internal/version"
)

// The agent's registry carries rhizome_build_info with the linker-set
// version, so a scrape of :9099 tells which build runs on the node.
func TestBuildInfoMetric(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	newAgentMetrics(reg, newReadiness("caches"))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"version": version.Version, "revision": version.Revision, "goversion": runtime.Version()}
	for _, mf := range mfs {
		if mf.GetName() != "rhizome_build_info" {
			continue
		}
		if len(mf.GetMetric()) != 1 {
			t.Fatalf("rhizome_build_info has %d series, want 1", len(mf.GetMetric()))
		}
		m := mf.GetMetric()[0]
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		if len(got) != len(want) || got["version"] != want["version"] || got["revision"] != want["revision"] || got["goversion"] != want["goversion"] {
			t.Errorf("rhizome_build_info labels %v, want %v", got, want)
		}
		if m.GetGauge().GetValue() != 1 {
			t.Errorf("rhizome_build_info = %v, want 1", m.GetGauge().GetValue())
		}
		return
	}
	t.Fatal("the agent's registry has no rhizome_build_info")
}
