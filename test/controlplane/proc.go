package controlplane

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may
	// itself contain spaces or parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}

// pidRuns reports whether pid is alive and executes bin, so that a recorded
// PID that was reused by an unrelated process is never signalled.
func pidRuns(pid int, bin string) bool {
	if !processAlive(pid) {
		return false
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return false
	}
	want, err := filepath.EvalSymlinks(bin)
	if err != nil {
		want = bin
	}
	return strings.TrimSuffix(exe, " (deleted)") == want
}

// stopPID sends SIGTERM, waits up to grace for the process to exit, then
// sends SIGKILL and waits a little more.
func stopPID(pid int, grace time.Duration) {
	if !processAlive(pid) {
		return
	}
	syscall.Kill(pid, syscall.SIGTERM)
	if waitGone(pid, grace) {
		return
	}
	syscall.Kill(pid, syscall.SIGKILL)
	waitGone(pid, 5*time.Second)
}

func waitGone(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !processAlive(pid) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return !processAlive(pid)
}

func randomToken() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// KubeconfigBytes renders a kubeconfig for server with either a client
// certificate (certPEM, keyPEM) or a bearer token.
func KubeconfigBytes(server string, caPEM, certPEM, keyPEM []byte, token string) []byte {
	enc := base64.StdEncoding.EncodeToString
	var user string
	if token != "" {
		user = "    token: " + token + "\n"
	} else {
		user = "    client-certificate-data: " + enc(certPEM) + "\n    client-key-data: " + enc(keyPEM) + "\n"
	}
	return []byte("apiVersion: v1\nkind: Config\n" +
		"clusters:\n- name: rhizome\n  cluster:\n    server: " + server + "\n    certificate-authority-data: " + enc(caPEM) + "\n" +
		"users:\n- name: rhizome\n  user:\n" + user +
		"contexts:\n- name: rhizome\n  context:\n    cluster: rhizome\n    user: rhizome\n" +
		"current-context: rhizome\n")
}

// KubeconfigForToken renders a kubeconfig for this control plane that holds
// only the given bearer token.
func (cp *ControlPlane) KubeconfigForToken(token string) []byte {
	return KubeconfigBytes(cp.URL, cp.pki.caPEM, nil, nil, token)
}
