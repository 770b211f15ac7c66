package controlplane

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// K8sVersion is the Kubernetes release the tools module pins. It is stamped
// into the binaries so that they report it (a plain build says v0.0.0-master).
const K8sVersion = "v1.37.2"

// recipe changes whenever the way the binaries are built changes, so that a
// cache entry built the old way is not reused.
const recipe = "2"

// Binaries are the paths of the control-plane programs. The directory that
// holds them is laid out like controller-runtime's envtest assets, so it can
// be passed as KUBEBUILDER_ASSETS.
type Binaries struct {
	Dir       string
	APIServer string
	Etcd      string
	Kubectl   string
}

func binariesIn(dir string) Binaries {
	return Binaries{
		Dir:       dir,
		APIServer: filepath.Join(dir, "kube-apiserver"),
		Etcd:      filepath.Join(dir, "etcd"),
		Kubectl:   filepath.Join(dir, "kubectl"),
	}
}

func (b Binaries) complete() bool {
	for _, p := range []string{b.APIServer, b.Etcd, b.Kubectl} {
		if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// CacheDir is where built binaries are kept between runs: $RHIZOME_CACHE, or
// rhizome/ under the user cache directory (~/.cache on Linux).
func CacheDir() (string, error) {
	if d := os.Getenv("RHIZOME_CACHE"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("finding a cache directory (set RHIZOME_CACHE): %w", err)
	}
	return filepath.Join(d, "rhizome"), nil
}

// RepoRoot finds the Rhizome checkout: $RHIZOME_ROOT, or the nearest parent
// of the working directory that holds the control-plane tools module.
func RepoRoot() (string, error) {
	if d := os.Getenv("RHIZOME_ROOT"); d != "" {
		return d, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, toolsDir, "go.mod")); err == nil {
			return d, nil
		}
		if d == filepath.Dir(d) {
			return "", fmt.Errorf("no Rhizome checkout above %s (set RHIZOME_ROOT)", wd)
		}
	}
}

const toolsDir = "test/controlplane/tools"

// CacheKey hashes the tools module's go.mod and go.sum and the build recipe:
// the binaries are rebuilt exactly when one of them changes.
func CacheKey(root string) (string, error) {
	h := sha256.New()
	io.WriteString(h, recipe+"\n")
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(root, toolsDir, f))
		if err != nil {
			return "", fmt.Errorf("hashing the control-plane tools module: %w", err)
		}
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// EnsureBinaries returns kube-apiserver, etcd and kubectl, building them from
// the tools module when the cache has no entry for its current go.mod/go.sum.
// A cold build takes several minutes; progress goes to log. Concurrent callers
// (parallel test packages) wait for one build through a file lock.
//
// If KUBEBUILDER_ASSETS names a directory holding all three programs, that
// directory is used as is.
func EnsureBinaries(ctx context.Context, log io.Writer) (Binaries, error) {
	if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
		if b := binariesIn(d); b.complete() {
			return b, nil
		}
	}
	root, err := RepoRoot()
	if err != nil {
		return Binaries{}, err
	}
	key, err := CacheKey(root)
	if err != nil {
		return Binaries{}, err
	}
	cache, err := CacheDir()
	if err != nil {
		return Binaries{}, err
	}
	base := filepath.Join(cache, "controlplane")
	bins := binariesIn(filepath.Join(base, key))
	if bins.complete() {
		return bins, nil
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return Binaries{}, err
	}
	unlock, err := lockFile(ctx, filepath.Join(base, ".lock"))
	if err != nil {
		return Binaries{}, err
	}
	defer unlock()
	if bins.complete() { // another process built it while we waited
		return bins, nil
	}
	tmp, err := os.MkdirTemp(base, key+".building-")
	if err != nil {
		return Binaries{}, err
	}
	defer os.RemoveAll(tmp)
	if err := build(ctx, filepath.Join(root, toolsDir), tmp, log); err != nil {
		return Binaries{}, err
	}
	os.RemoveAll(bins.Dir)
	if err := os.Rename(tmp, bins.Dir); err != nil {
		return Binaries{}, fmt.Errorf("moving built binaries into the cache: %w", err)
	}
	return bins, nil
}

func build(ctx context.Context, modDir, out string, log io.Writer) error {
	versionFlags := func(pkgs ...string) string {
		major, minor, _ := strings.Cut(strings.TrimPrefix(K8sVersion, "v"), ".")
		minor, _, _ = strings.Cut(minor, ".")
		var f []string
		for _, p := range pkgs {
			f = append(f, "-X "+p+".gitVersion="+K8sVersion, "-X "+p+".gitMajor="+major, "-X "+p+".gitMinor="+minor)
		}
		return "-s -w " + strings.Join(f, " ")
	}
	targets := []struct{ name, pkg, ldflags string }{
		{"kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver", versionFlags("k8s.io/component-base/version")},
		{"etcd", "go.etcd.io/etcd/server/v3", "-s -w"},
		{"kubectl", "k8s.io/kubernetes/cmd/kubectl", versionFlags("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")},
	}
	for _, t := range targets {
		start := time.Now()
		fmt.Fprintf(log, "controlplane: building %s (a cold build takes minutes; cached afterwards)\n", t.name)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(out, t.name), "-ldflags", t.ldflags, t.pkg)
		cmd.Dir = modDir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOTOOLCHAIN=local", "GOFLAGS=-mod=readonly -buildvcs=false -trimpath", "GOWORK=off")
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building %s from %s: %w", t.name, modDir, err)
		}
		fmt.Fprintf(log, "controlplane: built %s in %s\n", t.name, time.Since(start).Round(time.Second))
	}
	return nil
}

// lockFile takes an exclusive flock on path, polling so that ctx can cancel.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
