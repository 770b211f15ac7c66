//go:build bench && privileged

package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rhizome-net/rhizome/test/netns"
)

// TestMain lets the test binary stand in for rrbench: the harness runs
// itself as the clients tool inside the clients' namespace.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "clients" {
		if err := clientsTool(os.Args[2:]); err != nil {
			os.Stderr.WriteString("clients: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestSmoke runs the whole benchmark at a size that takes seconds (20
// clients, one run of each reflector) so that the harness cannot rot: the
// real agent against the real API server, BIRD, the clients tool, every
// phase, and the result lines with every figure.
func TestSmoke(t *testing.T) {
	netns.RequireRoot(t)
	dir := t.TempDir()
	agent := filepath.Join(dir, "rhizome-agent")
	build := exec.Command("go", "build", "-o", agent, "github.com/rhizome-net/rhizome/cmd/rhizome-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the agent: %v\n%s", err, out)
	}
	results := filepath.Join(dir, "results.txt")
	err := matrix([]string{"-n", "20", "-reps", "1", "-reflectors", "bird,rhizome", "-rhizome-bin", agent,
		"-o", results, "-json", filepath.Join(dir, "rr.json"), "-svg", filepath.Join(dir, "rr.svg"), "-quiet-max", "2s", "-timeout", "2m", "-client"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(results)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := map[string]string{}
		for _, kv := range strings.Fields(sc.Text()) {
			k, v, _ := strings.Cut(kv, "=")
			fields[k] = v
		}
		seen[fields["reflector"]] = true
		if fields["clients"] != "20" {
			t.Errorf("clients=%s in %q", fields["clients"], sc.Text())
		}
		for _, k := range []string{"t_converge_s", "t_churn_s", "rss_mb", "cpu_s"} {
			v, err := strconv.ParseFloat(fields[k], 64)
			// BIRD can reflect 20 clients' routes in under one clock
			// tick of CPU: cpu_s=0.00 is a measurement, not a failure.
			if err != nil || v < 0 || v == 0 && k != "cpu_s" {
				t.Errorf("%s=%q in %q", k, fields[k], sc.Text())
			}
		}
		// 20 clients, one borrower: each receives the other 19 blocks
		// and the borrowed /32 (or not, for the borrower itself), and the
		// churn phase sends more.
		if u, _ := strconv.Atoi(fields["updates"]); u < 19*20 {
			t.Errorf("updates=%d in %q", u, sc.Text())
		}
		// The client agent (-client) holds the 20 blocks and the /32 in
		// its kernel.
		if fields["client_routes"] != "21" {
			t.Errorf("client_routes=%q in %q", fields["client_routes"], sc.Text())
		}
		for _, k := range []string{"client_rss_idle_mb", "client_passes", "client_pass_max_ms"} {
			if v, err := strconv.ParseFloat(fields[k], 64); err != nil || v <= 0 {
				t.Errorf("%s=%q in %q", k, fields[k], sc.Text())
			}
		}
	}
	if !seen["bird"] || !seen["rhizome"] {
		t.Fatalf("results for %v only", seen)
	}
	for _, f := range []string{"rr.json", "rr.svg"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s not written: %v", f, err)
		}
	}
}
