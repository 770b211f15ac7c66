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

// containerdDir is the module that pins containerd for the kubelet lab.
const containerdDir = "test/controlplane/containerd"

// ContainerdVersion is the containerd release its module pins.
const ContainerdVersion = "v2.4.2"

// target is one program of a toolset.
type target struct{ name, pkg, ldflags string }

// toolset is a set of programs built from one pinned module and cached
// together in CacheDir()/name/<key>.
type toolset struct {
	name    string
	module  string // relative to the repository root
	targets func() []target
}

var (
	controlPlaneTools = toolset{name: "controlplane", module: toolsDir, targets: func() []target {
		return []target{
			{"kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver", versionFlags("k8s.io/component-base/version")},
			{"etcd", "go.etcd.io/etcd/server/v3", "-s -w"},
			{"kubectl", "k8s.io/kubernetes/cmd/kubectl", versionFlags("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")},
		}
	}}
	// nodeTools are what a cluster with real nodes adds: the controllers
	// that run DaemonSets and Deployments, and the kubelet.
	nodeTools = toolset{name: "kube", module: toolsDir, targets: func() []target {
		v := versionFlags("k8s.io/component-base/version")
		return []target{
			{"kube-controller-manager", "k8s.io/kubernetes/cmd/kube-controller-manager", v},
			{"kube-scheduler", "k8s.io/kubernetes/cmd/kube-scheduler", v},
			{"kubelet", "k8s.io/kubernetes/cmd/kubelet", v},
		}
	}}
	containerdTools = toolset{name: "containerd", module: containerdDir, targets: func() []target {
		v := "-s -w -X github.com/containerd/containerd/v2/version.Version=" + ContainerdVersion
		return []target{
			{"containerd", "github.com/containerd/containerd/v2/cmd/containerd", v},
			{"containerd-shim-runc-v2", "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2", v},
			{"ctr", "github.com/containerd/containerd/v2/cmd/ctr", v},
		}
	}}
)

// versionFlags stamps K8sVersion into the given version packages (a plain
// build reports v0.0.0-master).
func versionFlags(pkgs ...string) string {
	major, minor, _ := strings.Cut(strings.TrimPrefix(K8sVersion, "v"), ".")
	minor, _, _ = strings.Cut(minor, ".")
	var f []string
	for _, p := range pkgs {
		f = append(f, "-X "+p+".gitVersion="+K8sVersion, "-X "+p+".gitMajor="+major, "-X "+p+".gitMinor="+minor)
	}
	return "-s -w " + strings.Join(f, " ")
}

// CacheKey hashes the tools module's go.mod and go.sum and the build recipe:
// the binaries are rebuilt exactly when one of them changes.
func CacheKey(root string) (string, error) { return controlPlaneTools.key(root) }

func (ts toolset) key(root string) (string, error) {
	h := sha256.New()
	io.WriteString(h, recipe+"\n")
	for _, t := range ts.targets() {
		if ts.name != controlPlaneTools.name { // the control plane's key predates this line
			fmt.Fprintf(h, "%s %s %s\n", t.name, t.pkg, t.ldflags)
		}
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(root, ts.module, f))
		if err != nil {
			return "", fmt.Errorf("hashing the %s tools module: %w", ts.name, err)
		}
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func complete(dir string, ts toolset) bool {
	for _, t := range ts.targets() {
		if fi, err := os.Stat(filepath.Join(dir, t.name)); err != nil || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
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
	dir, err := controlPlaneTools.ensure(ctx, log)
	if err != nil {
		return Binaries{}, err
	}
	return binariesIn(dir), nil
}

// NodeBinaries are the programs of a cluster with real nodes, beyond the
// API server and etcd: the controllers, the kubelet and containerd.
type NodeBinaries struct {
	ControllerManager string
	Scheduler         string
	Kubelet           string
	// ContainerdDir holds containerd, containerd-shim-runc-v2 and ctr;
	// containerd finds the shim on its PATH, so put this directory there.
	ContainerdDir string
	Containerd    string
	Ctr           string
}

// EnsureNodeBinaries returns kube-controller-manager, kube-scheduler and the
// kubelet (built from the control plane's tools module, pinned at
// K8sVersion) and containerd, its runc shim and ctr (built from their own
// module, pinned at ContainerdVersion), building what the cache lacks. A
// cold build takes several minutes.
func EnsureNodeBinaries(ctx context.Context, log io.Writer) (NodeBinaries, error) {
	kube, err := nodeTools.ensure(ctx, log)
	if err != nil {
		return NodeBinaries{}, err
	}
	ctd, err := containerdTools.ensure(ctx, log)
	if err != nil {
		return NodeBinaries{}, err
	}
	return NodeBinaries{
		ControllerManager: filepath.Join(kube, "kube-controller-manager"),
		Scheduler:         filepath.Join(kube, "kube-scheduler"),
		Kubelet:           filepath.Join(kube, "kubelet"),
		ContainerdDir:     ctd,
		Containerd:        filepath.Join(ctd, "containerd"),
		Ctr:               filepath.Join(ctd, "ctr"),
	}, nil
}

// ensure returns the cache directory holding the toolset's programs,
// building them first if needed.
func (ts toolset) ensure(ctx context.Context, log io.Writer) (string, error) {
	if log == nil {
		log = io.Discard
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	key, err := ts.key(root)
	if err != nil {
		return "", err
	}
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	base := filepath.Join(cache, ts.name)
	dir := filepath.Join(base, key)
	if complete(dir, ts) {
		return dir, nil
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", err
	}
	unlock, err := lockFile(ctx, filepath.Join(base, ".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if complete(dir, ts) { // another process built it while we waited
		return dir, nil
	}
	tmp, err := os.MkdirTemp(base, key+".building-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if err := build(ctx, filepath.Join(root, ts.module), tmp, ts.targets(), log); err != nil {
		return "", err
	}
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return "", fmt.Errorf("moving built binaries into the cache: %w", err)
	}
	return dir, nil
}

func build(ctx context.Context, modDir, out string, targets []target, log io.Writer) error {
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
