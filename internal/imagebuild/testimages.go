package imagebuild

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The kubelet lab needs two more images that nothing here can pull: the
// pod sandbox ("pause") image that containerd starts for every pod, and a
// workload image with ping, sleep and ip for test Deployments. Both are for
// this machine's architecture only (amd64 here), built from what is already
// on it, as reproducibly as Rhizome's own image.

// ControlPlaneToolsModule pins k8s.io/kubernetes for the lab's control plane;
// the pause program's source comes from that module.
const ControlPlaneToolsModule = "test/controlplane/tools"

// PauseOptions configure BuildPause.
type PauseOptions struct {
	// RepoDir is the repository's root: the k8s.io/kubernetes version
	// pinned in ControlPlaneToolsModule gives the source.
	RepoDir string
	// CC is the C compiler; default "gcc". Its target decides the
	// platform (gcc -dumpmachine).
	CC string
	// Ref defaults to registry.k8s.io/pause:<TAG of build/pause/Makefile>,
	// the name containerd's sandbox image setting uses.
	Ref string
	// Epoch is every time in the image.
	Epoch time.Time
	// WorkDir receives the compiled program; empty means a temporary one.
	WorkDir string
}

// BuildPause compiles Kubernetes' pause.c (k8s.io/kubernetes's
// build/pause/linux/pause.c, from the Go module cache) statically with the
// flags of its own Makefile and wraps it as upstream's Dockerfile does:
// /pause as the entrypoint, user 65535:65535.
func BuildPause(ctx context.Context, o PauseOptions) (v1.ImageIndex, name.Tag, error) {
	if o.CC == "" {
		o.CC = "gcc"
	}
	k8s, err := moduleDir(ctx, filepath.Join(o.RepoDir, ControlPlaneToolsModule), "k8s.io/kubernetes")
	if err != nil {
		return nil, name.Tag{}, err
	}
	mk, err := os.ReadFile(filepath.Join(k8s.Dir, "build", "pause", "Makefile"))
	if err != nil {
		return nil, name.Tag{}, fmt.Errorf("pause's Makefile: %w", err)
	}
	m := regexp.MustCompile(`(?m)^TAG \?= (\S+)$`).FindSubmatch(mk)
	if m == nil {
		return nil, name.Tag{}, fmt.Errorf("no TAG in %s/build/pause/Makefile", k8s.Dir)
	}
	tag := string(m[1])
	if o.Ref == "" {
		o.Ref = "registry.k8s.io/pause:" + tag
	}
	ref, err := ParseRef(o.Ref)
	if err != nil {
		return nil, ref, err
	}
	arch, err := ccArch(ctx, o.CC)
	if err != nil {
		return nil, ref, err
	}
	if o.WorkDir == "" {
		tmp, err := os.MkdirTemp("", "rhizome-pause-")
		if err != nil {
			return nil, ref, err
		}
		defer os.RemoveAll(tmp)
		o.WorkDir = tmp
	}
	bin := filepath.Join(o.WorkDir, "pause")
	version := "v" + tag + "-" + k8s.Version
	// The Makefile's CFLAGS; the source by its relative name, so no path of
	// this machine ends up in the binary.
	cc := exec.CommandContext(ctx, o.CC, "-Os", "-Wall", "-Werror", "-static", "-DVERSION="+version, "-o", bin, "pause.c")
	cc.Dir = filepath.Join(k8s.Dir, "build", "pause", "linux")
	if out, err := cc.CombinedOutput(); err != nil {
		return nil, ref, fmt.Errorf("compiling pause.c: %w\n%s", err, out)
	}
	e, err := FileFrom("/pause", 0o755, bin)
	if err != nil {
		return nil, ref, err
	}
	if err := CheckStatic(e.Data, arch); err != nil {
		return nil, ref, fmt.Errorf("pause: %w", err)
	}
	l, err := Layer([]Entry{e}, o.Epoch)
	if err != nil {
		return nil, ref, err
	}
	ann := map[string]string{
		AnnotationTitle:    "pause",
		AnnotationVersion:  version,
		AnnotationSource:   "https://github.com/kubernetes/kubernetes/tree/" + k8s.Version + "/build/pause",
		AnnotationCreated:  o.Epoch.UTC().Format(time.RFC3339),
		AnnotationLicenses: "Apache-2.0",
	}
	img, err := NewImage(ImageSpec{
		Platform: v1.Platform{OS: "linux", Architecture: arch},
		Layers:   []LayerSpec{{Layer: l, CreatedBy: "pause.c " + version + " (" + o.CC + " -Os -static)"}},
		Config:   v1.Config{Entrypoint: []string{"/pause"}, User: "65535:65535", Labels: ann},
		Created:  o.Epoch, Annotations: ann,
	})
	if err != nil {
		return nil, ref, err
	}
	idx, err := NewIndex([]v1.Image{img}, ann)
	return idx, ref, err
}

// BusyboxOptions configure BuildBusybox.
type BusyboxOptions struct {
	// Binary is a static busybox; default /bin/busybox, from Debian's
	// busybox-static (hack/install-deps.sh installs it).
	Binary string
	// Ref defaults to localhost/rhizome-test/busybox:<busybox version>.
	Ref string
	// Epoch is every time in the image.
	Epoch time.Time
}

// BuildBusybox wraps a static busybox as a small workload image: the binary
// at /bin/busybox and a symbolic link for each of its applets where
// `busybox --list-full` puts it (sh, sleep, ping, ip, nc, wget, httpd, ...),
// the command "sh". The binary runs on this machine to list its applets, so
// it must be for this machine's architecture.
func BuildBusybox(ctx context.Context, o BusyboxOptions) (v1.ImageIndex, name.Tag, error) {
	if o.Binary == "" {
		o.Binary = "/bin/busybox"
	}
	bb, err := FileFrom("/bin/busybox", 0o755, o.Binary)
	if err != nil {
		return nil, name.Tag{}, err
	}
	arch := ""
	for a := range elfMachines {
		if CheckStatic(bb.Data, a) == nil {
			arch = a
		}
	}
	if arch == "" {
		return nil, name.Tag{}, fmt.Errorf("%s: not a static amd64 or arm64 executable (install Debian's busybox-static)", o.Binary)
	}
	banner, _ := exec.CommandContext(ctx, o.Binary).CombinedOutput() // exits 1 after the help
	m := regexp.MustCompile(`^BusyBox v([0-9][0-9.]*)(.*) multi-call binary`).FindSubmatch(banner)
	if m == nil {
		return nil, name.Tag{}, fmt.Errorf("%s does not say which BusyBox it is: %q", o.Binary, firstLine(banner))
	}
	if o.Ref == "" {
		o.Ref = "localhost/rhizome-test/busybox:" + string(m[1])
	}
	ref, err := ParseRef(o.Ref)
	if err != nil {
		return nil, ref, err
	}
	list, err := exec.CommandContext(ctx, o.Binary, "--list-full").Output()
	if err != nil {
		return nil, ref, fmt.Errorf("%s --list-full: %w", o.Binary, err)
	}
	entries := []Entry{bb,
		File("/etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")),
		File("/etc/group", 0o644, []byte("root:x:0:\nnobody:x:65534:\n")),
		Dir("/root", 0o700),
		Dir("/tmp", os.ModeSticky|0o777),
	}
	sc := bufio.NewScanner(bytes.NewReader(list))
	for sc.Scan() {
		p := "/" + strings.TrimSpace(sc.Text())
		if p == "/" || p == "/bin/busybox" || path.Clean(p) != p {
			continue
		}
		entries = append(entries, Symlink(p, "/bin/busybox"))
	}
	l, err := Layer(entries, o.Epoch)
	if err != nil {
		return nil, ref, err
	}
	ann := map[string]string{
		AnnotationTitle:       "busybox",
		AnnotationDescription: "Rhizome's test workload: a static BusyBox" + string(m[2]),
		AnnotationVersion:     string(m[1]),
		AnnotationCreated:     o.Epoch.UTC().Format(time.RFC3339),
		AnnotationLicenses:    "GPL-2.0-only",
	}
	img, err := NewImage(ImageSpec{
		Platform: v1.Platform{OS: "linux", Architecture: arch},
		Layers:   []LayerSpec{{Layer: l, CreatedBy: "BusyBox v" + string(m[1]) + string(m[2]) + " and its applet links"}},
		Config: v1.Config{
			Cmd:    []string{"sh"},
			Env:    []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
			Labels: ann,
		},
		Created: o.Epoch, Annotations: ann,
	})
	if err != nil {
		return nil, ref, err
	}
	idx, err := NewIndex([]v1.Image{img}, ann)
	return idx, ref, err
}

type module struct{ Dir, Version string }

// moduleDir finds (downloading through the module proxy if need be) the
// directory of module mod as required by the module in dir.
func moduleDir(ctx context.Context, dir, mod string) (module, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", mod)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=readonly", "GOTOOLCHAIN=local")
	out, err := cmd.Output()
	var m struct{ Dir, Version, Error string }
	if jerr := json.Unmarshal(out, &m); jerr != nil || err != nil || m.Error != "" || m.Dir == "" {
		return module{}, fmt.Errorf("finding %s for %s: %v %s", mod, dir, err, m.Error)
	}
	return module{Dir: m.Dir, Version: m.Version}, nil
}

// ccArch is the architecture a C compiler builds for.
func ccArch(ctx context.Context, cc string) (string, error) {
	out, err := exec.CommandContext(ctx, cc, "-dumpmachine").Output()
	if err != nil {
		return "", fmt.Errorf("%s -dumpmachine: %w", cc, err)
	}
	switch triple := strings.TrimSpace(string(out)); {
	case strings.HasPrefix(triple, "x86_64-"):
		return "amd64", nil
	case strings.HasPrefix(triple, "aarch64-"):
		return "arm64", nil
	default:
		return "", fmt.Errorf("%s builds for %s: want x86_64 or aarch64", cc, triple)
	}
}

func firstLine(b []byte) string {
	l, _, _ := bytes.Cut(b, []byte("\n"))
	return string(l)
}
