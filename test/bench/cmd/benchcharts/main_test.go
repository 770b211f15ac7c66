package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// The charts in docs/bench are what their JSON renders to: a chart edited
// by hand, or left behind after its results changed, fails here (fix:
// make bench-charts).
func TestChartsMatchTheirResults(t *testing.T) {
	docs := "../../../../docs/bench"
	tmp := t.TempDir()
	jsons, _ := filepath.Glob(filepath.Join(docs, "*.json"))
	if len(jsons) < 4 {
		t.Fatalf("only %d results in %s", len(jsons), docs)
	}
	for _, j := range jsons {
		b, err := os.ReadFile(j)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tmp, filepath.Base(j)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := render(tmp); err != nil {
		t.Fatal(err)
	}
	for _, j := range jsons {
		name := filepath.Base(j[:len(j)-len(".json")]) + ".svg"
		want, _ := os.ReadFile(filepath.Join(tmp, name))
		got, err := os.ReadFile(filepath.Join(docs, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("docs/bench/%s is not what its JSON renders (%v); run make bench-charts", name, err)
		}
	}
}
