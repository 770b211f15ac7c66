//go:build privileged

package bgp_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestGoBGPAPIOnlyRoot plays a local process that is not root (any
// hostNetwork pod, any user on the node) trying to inject a route through
// GoBGP's read-write, unauthenticated gRPC API with the stock gobgp CLI. On
// the API's default transport, a unix socket in a directory of its own, it
// must be refused, while root's `gobgp --target unix://...` keeps working.
// (On the old default, TCP 127.0.0.1:50051, the same command succeeded.)
func TestGoBGPAPIOnlyRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: drops to user nobody with setpriv")
	}
	if _, err := exec.LookPath("gobgp"); err != nil {
		t.Fatalf("the stock gobgp CLI is missing (Debian package gobgpd): %v", err)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil { // as /var/run/rhizome is
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "gobgp", "gobgp.sock")
	target := "unix://" + sock
	// A stale socket file and a too-open directory from an earlier run.
	if err := os.MkdirAll(filepath.Dir(sock), 0o777); err != nil {
		t.Fatal(err)
	}
	n := startNode(t, "api", "127.0.0.71", 64512, target)
	if err := n.sp.APIError(); err != nil {
		t.Fatalf("API not served: %v", err)
	}
	fi, err := os.Stat(filepath.Dir(sock))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("socket directory mode %v (%v), want 0700", fi.Mode().Perm(), err)
	}
	gobgp := func(asNobody bool, args ...string) (string, error) {
		argv := append([]string{"gobgp", "--target", target}, args...)
		if asNobody {
			argv = append([]string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}, argv...)
		}
		out, err := exec.CommandContext(context.Background(), argv[0], argv[1:]...).CombinedOutput()
		return string(out), err
	}
	if out, err := gobgp(false, "global"); err != nil || !strings.Contains(out, "64512") {
		t.Fatalf("root's gobgp global: %v\n%s", err, out)
	}
	out, err := gobgp(true, "global", "rib", "add", "10.99.0.0/24")
	if err == nil {
		t.Errorf("user nobody injected a route through the API:\n%s", out)
	}
	t.Logf("nobody's gobgp global rib add: %v: %s", err, strings.TrimSpace(out))
	if out, err := gobgp(false, "global", "rib"); err != nil || strings.Contains(out, "10.99.0.0/24") {
		t.Fatalf("root's gobgp global rib: %v\n%s", err, out)
	}
}
