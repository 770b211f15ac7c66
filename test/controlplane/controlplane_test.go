package controlplane

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCacheKeyFollowsToolsModule(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, toolsDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(mod, sum string) {
		os.WriteFile(filepath.Join(dir, "go.mod"), []byte(mod), 0o644)
		os.WriteFile(filepath.Join(dir, "go.sum"), []byte(sum), 0o644)
	}
	write("module x\nrequire k8s.io/kubernetes v1.37.2\n", "a h1:1\n")
	k1, err := CacheKey(root)
	if err != nil {
		t.Fatal(err)
	}
	k1again, _ := CacheKey(root)
	write("module x\nrequire k8s.io/kubernetes v1.37.3\n", "a h1:1\n")
	k2, _ := CacheKey(root)
	write("module x\nrequire k8s.io/kubernetes v1.37.3\n", "a h1:2\n")
	k3, _ := CacheKey(root)
	if k1 != k1again {
		t.Errorf("key not stable: %s vs %s", k1, k1again)
	}
	if k1 == k2 || k2 == k3 {
		t.Errorf("key did not change with go.mod or go.sum: %s %s %s", k1, k2, k3)
	}
	if len(k1) != 16 {
		t.Errorf("key %q: want 16 hex digits", k1)
	}
}

func TestKubeassetsOverride(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"kube-apiserver", "etcd", "kubectl"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("KUBEBUILDER_ASSETS", dir)
	b, err := EnsureBinaries(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.APIServer != filepath.Join(dir, "kube-apiserver") || b.Etcd != filepath.Join(dir, "etcd") {
		t.Fatalf("KUBEBUILDER_ASSETS not used: %+v", b)
	}
}

func TestProcessChecks(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	sleepBin, _ := exec.LookPath("sleep")
	if !processAlive(pid) {
		t.Fatal("running process reported dead")
	}
	if !pidRuns(pid, sleepBin) {
		t.Fatalf("pidRuns(%d, %s) = false", pid, sleepBin)
	}
	if pidRuns(pid, "/usr/bin/true") {
		t.Fatal("pidRuns matched the wrong binary: a reused PID would be killed")
	}
	stopPID(pid, 5e9)
	<-done
	if processAlive(pid) {
		t.Fatal("process survived stopPID")
	}
}

func TestKubeconfigBytes(t *testing.T) {
	withCert := string(KubeconfigBytes("https://127.0.0.1:6443", []byte("CA"), []byte("CERT"), []byte("KEY"), ""))
	for _, want := range []string{"server: https://127.0.0.1:6443", "client-certificate-data: Q0VSVA==", "client-key-data: S0VZ", "certificate-authority-data: Q0E="} {
		if !strings.Contains(withCert, want) {
			t.Errorf("kubeconfig lacks %q:\n%s", want, withCert)
		}
	}
	withToken := string(KubeconfigBytes("https://127.0.0.1:6443", []byte("CA"), nil, nil, "tok"))
	if !strings.Contains(withToken, "token: tok") || strings.Contains(withToken, "client-certificate") {
		t.Errorf("token kubeconfig must hold only the token:\n%s", withToken)
	}
}

// TestCleanupLeftoversOfCrashedRun simulates a test binary that died with
// its control plane still recorded: the next Start stops the recorded
// process (verified by its binary) and removes the directory, and leaves the
// directories of live owners alone.
func TestCleanupLeftoversOfCrashedRun(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { sleeper.Wait(); close(exited) }()
	sleepBin, _ := exec.LookPath("sleep")

	crashed := filepath.Join(tmp, tempPrefix+"crashed")
	live := filepath.Join(tmp, tempPrefix+"live")
	for _, d := range []string{crashed, live} {
		os.MkdirAll(d, 0o700)
	}
	writeJSON := func(path string, st state) {
		b, _ := json.Marshal(st)
		os.WriteFile(path, b, 0o600)
	}
	writeJSON(filepath.Join(crashed, stateFileName), state{OwnerPID: dead.Process.Pid, APIServerPID: sleeper.Process.Pid, APIServerBin: sleepBin})
	writeJSON(filepath.Join(live, stateFileName), state{OwnerPID: os.Getpid()})

	cleanupLeftovers(io.Discard)

	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the crashed run's process was not stopped")
	}
	if _, err := os.Stat(crashed); !os.IsNotExist(err) {
		t.Errorf("crashed run's directory still exists")
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("live run's directory was removed: %v", err)
	}
}
