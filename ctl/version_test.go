package ctl

import (
	"encoding/json"
	"runtime"
	"strings"
	"testing"

	"github.com/rhizome-net/rhizome/internal/version"
)

// `rhizomectl version` answers without an agent and without a cluster (no
// socket is served here), as text, JSON and YAML, and refuses an output
// format it does not have.
func TestVersion(t *testing.T) {
	noCluster := "--kubeconfig=" + t.TempDir() + "/none"
	out, err := run(t, "version", "--socket", "/nonexistent/agent.sock", noCluster)
	if err != nil {
		t.Fatalf("version: %v\n%s", err, out)
	}
	if want := "Client: " + version.Get().String() + "\n"; out != want {
		t.Fatalf("version printed %q, want %q", out, want)
	}

	out, err = run(t, "version", "-o", "json", "--socket", "/nonexistent/agent.sock", noCluster)
	if err != nil {
		t.Fatalf("version -o json: %v\n%s", err, out)
	}
	var got struct {
		Client version.Info
		Agents []agentVersion
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("version -o json is not JSON: %v\n%s", err, out)
	}
	if got.Client.Version != version.Version || got.Client.GoVersion != runtime.Version() || got.Client.Revision != version.Revision {
		t.Fatalf("version -o json = %+v, want version %s, revision %s, %s", got.Client, version.Version, version.Revision, runtime.Version())
	}

	if got.Agents == nil || len(got.Agents) != 0 {
		t.Fatalf("version -o json: agents %v, want an empty list", got.Agents)
	}
	if out, err := run(t, "version", "-o", "yaml", "--client"); err != nil || !strings.Contains(out, "client:\n  buildDate:") {
		t.Fatalf("version -o yaml: err %v, output %q", err, out)
	}
	if out, err := run(t, "version", "-o", "toml"); err == nil || !strings.Contains(err.Error(), "want json") {
		t.Fatalf("version -o toml: err %v, output %q; want a refusal naming json", err, out)
	}

	out, err = run(t, "--version")
	if err != nil || out != "rhizomectl "+version.Get().String()+"\n" {
		t.Fatalf("--version: %v, %q", err, out)
	}
}
