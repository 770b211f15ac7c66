package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"k8s.io/klog/v2"
)

// client-go's klog lines come out as the agent's JSON, with its keys.
func TestKlogGoesThroughTheJSONLogger(t *testing.T) {
	var buf bytes.Buffer
	newLogger(&buf, slog.LevelInfo, "node-1")
	klog.InfoS("Watch close", "reflector", "pkg/mod/k8s.io/client-go/tools/cache/reflector.go:251", "type", "*v1.Node")
	klog.ErrorS(errors.New("connection refused"), "Failed to watch", "type", "*v1alpha1.IPPool")
	klog.Warningf("throttled for %s", "1.2s")
	klog.Flush()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3:\n%s", len(lines), buf.String())
	}
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", i, err, l)
		}
		if m["component"] != "client-go" || m["node"] != "node-1" {
			t.Errorf("line %d lacks the agent's keys: %s", i, l)
		}
	}
	if !strings.Contains(lines[1], `"level":"ERROR"`) || !strings.Contains(lines[1], `"err":"connection refused"`) {
		t.Errorf("error line: %s", lines[1])
	}
	if !strings.Contains(lines[2], "throttled for 1.2s") {
		t.Errorf("warning line: %s", lines[2])
	}
}
