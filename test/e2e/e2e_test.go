//go:build e2e

// Package e2e runs whole Rhizome clusters (the lab: real control plane,
// namespaces as nodes, BIRD/FRR ToRs, agent processes, CNI pods) and checks
// each scenario's stated expectation. `make e2e` runs it as root after
// `make build`.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rhizome-net/rhizome/test/lab"
)

// binDir holds the binaries under test: $RHIZOME_BIN or the repository's bin/.
func binDir(t testing.TB) string {
	if d := os.Getenv("RHIZOME_BIN"); d != "" {
		return d
	}
	d, err := filepath.Abs("../../bin")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"rhizome-agent", "rhizome-cni", "rhizomectl", "rhizome-lab"} {
		if _, err := os.Stat(filepath.Join(d, b)); err != nil {
			t.Fatalf("%s missing in %s: run make build first (make e2e does)", b, d)
		}
	}
	return d
}

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// up starts a lab for the test and removes it when the test ends. The
// lab's namespaces carry their own prefix, so a lab started by hand keeps
// running undisturbed.
func up(t testing.TB, o lab.Options) *lab.Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the end-to-end tests need root (network namespaces); make e2e runs them as root")
	}
	dir := filepath.Join(os.TempDir(), "rhizome-e2e", strings.ReplaceAll(t.Name(), "/", "_"))
	l := lab.New(dir, binDir(t), "rze-", logWriter{t})
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, l)
		}
		if err := l.Down(); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := l.Up(ctx, o); err != nil {
		t.Fatalf("lab up: %v", err)
	}
	return l
}

// dumpLogs prints the tail of each agent's log of a failed test.
func dumpLogs(t testing.TB, l *lab.Lab) {
	if l.Plan == nil {
		return
	}
	for _, n := range l.Plan.Nodes {
		b, err := os.ReadFile(filepath.Join(l.Dir, "nodes", n.Name, "agent.log"))
		if err != nil {
			continue
		}
		if len(b) > 4000 {
			b = b[len(b)-4000:]
		}
		t.Logf("--- agent log of %s (tail)\n%s", n.Name, b)
	}
}

// eventually polls cond until it holds or the timeout passes, then fails
// with cond's last explanation.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var why string
	for {
		var ok bool
		if ok, why = cond(); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %s", what, timeout, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// requireMatrix pings every pod from every pod and fails on any miss.
func requireMatrix(t *testing.T, l *lab.Lab) {
	t.Helper()
	m := lab.PingMatrix(ctxFor(t, 2*time.Minute), l.State.Pods)
	if f := m.Failures(); len(f) > 0 {
		var b strings.Builder
		m.Print(&b)
		t.Fatalf("%d of %d pairs failed:\n%s", len(f), len(l.State.Pods)*len(l.State.Pods), b.String())
	}
}

// blockOf returns the block (a /26 of the pool) holding a pod's address.
func blockOf(t *testing.T, l *lab.Lab, node string) string {
	t.Helper()
	for _, p := range l.State.Pods {
		if p.Node == node {
			parts := strings.Split(p.Addresses[0], ".")
			var last int
			fmt.Sscanf(parts[3], "%d", &last)
			return fmt.Sprintf("%s.%s.%s.%d/26", parts[0], parts[1], parts[2], last&^63)
		}
	}
	t.Fatalf("no pod on %s", node)
	return ""
}

// routeTo returns node's kernel route (ours) for prefix, or "".
func routeTo(t *testing.T, l *lab.Lab, node, prefix string) string {
	t.Helper()
	r, err := l.KernelRoutes(ctxFor(t, 30*time.Second), node)
	if err != nil {
		t.Fatal(err)
	}
	return r[prefix]
}

// requireDoctorClean runs rhizomectl doctor on every node, as an operator
// would, and expects it to find nothing.
func requireDoctorClean(t *testing.T, l *lab.Lab) {
	t.Helper()
	// Through rhizome-lab exec, as a user runs it: that sets the node's
	// agent socket and CNI directory (a lab node's is not the host's
	// /etc/cni/net.d, which may hold anything or nothing).
	for _, n := range l.Plan.Nodes {
		out, err := ctl(t, l, "lab", "exec", n.Name, "--", "rhizomectl", "doctor")
		if err != nil || !strings.Contains(string(out), "no problems found") {
			t.Errorf("doctor on %s: %v\n%s", n.Name, err, out)
		}
	}
}
