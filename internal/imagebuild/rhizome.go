package imagebuild

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

const (
	// DefaultRepository is where deploy/base/kustomization.yaml points.
	DefaultRepository = "ghcr.io/rhizome-net/rhizome"
	// SourceURL is org.opencontainers.image.source.
	SourceURL = "https://github.com/rhizome-net/rhizome"
	// BinDir is where the binaries are in the image; the DaemonSet's
	// commands name them there.
	BinDir = "/usr/local/bin"
	// GoBGPCLIModule is the tools module that pins the stock gobgp CLI.
	GoBGPCLIModule = "hack/gobgp-cli"
	// GoBGPCLIPackage is the CLI's main package in the upstream module.
	GoBGPCLIPackage = "github.com/osrg/gobgp/v3/cmd/gobgp"
)

// RhizomeCommands are the binaries of cmd/ that the image carries: the
// agent, the CNI plugin (its init container installs it on the host) and
// rhizomectl (for kubectl exec). rhizome-lab is a test tool and stays out.
var RhizomeCommands = []string{"rhizome-agent", "rhizome-cni", "rhizomectl"}

// DefaultPlatforms are the platforms of the image index.
var DefaultPlatforms = []v1.Platform{
	{OS: "linux", Architecture: "amd64"},
	{OS: "linux", Architecture: "arm64"},
}

// RhizomeOptions configure BuildRhizome.
type RhizomeOptions struct {
	// RepoDir is the repository's root.
	RepoDir string
	// Version says which build this is (ReadVersion).
	Version BuildVersion
	// Ref is the image reference; empty means DefaultRepository:<version>.
	Ref string
	// Platforms default to DefaultPlatforms.
	Platforms []v1.Platform
	// WorkDir holds the compiled binaries; empty means a temporary
	// directory, removed afterwards.
	WorkDir string
	// Log receives one line per step; nil discards.
	Log io.Writer
}

// StableLayerTime is the file time in the layers whose content does not
// follow Rhizome's commits (the base files, the gobgp CLI): with the
// commit's time there, every commit would change their digests and an
// upgrade would download them again for nothing.
var StableLayerTime = time.Unix(0, 0).UTC()

// BuildRhizome compiles the image's binaries for every platform and
// assembles the image index. Each platform's image has three layers, from
// the least to the most often changed, so that an upgrade pulls only what
// changed: the base files (StableLayerTime), the gobgp CLI (changes with
// the GoBGP pin or the Go toolchain; StableLayerTime), and Rhizome's
// binaries (the commit's time; change with every commit).
func BuildRhizome(ctx context.Context, o RhizomeOptions) (v1.ImageIndex, name.Tag, error) {
	if o.Ref == "" {
		o.Ref = DefaultRepository + ":" + o.Version.Version
	}
	ref, err := ParseRef(o.Ref)
	if err != nil {
		return nil, ref, err
	}
	if len(o.Platforms) == 0 {
		o.Platforms = DefaultPlatforms
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.WorkDir == "" {
		tmp, err := os.MkdirTemp("", "rhizome-image-")
		if err != nil {
			return nil, ref, err
		}
		defer os.RemoveAll(tmp)
		o.WorkDir = tmp
	}
	ann := map[string]string{
		AnnotationTitle:       "rhizome",
		AnnotationDescription: "Rhizome: pure-L3 pod networking for Kubernetes (rhizome-agent, rhizome-cni, rhizomectl, gobgp)",
		AnnotationVersion:     o.Version.Version,
		AnnotationRevision:    o.Version.Revision,
		AnnotationSource:      SourceURL,
		AnnotationCreated:     o.Version.Epoch.UTC().Format(time.RFC3339),
		AnnotationLicenses:    "Apache-2.0",
	}
	base, err := Layer(baseFiles(), StableLayerTime)
	if err != nil {
		return nil, ref, fmt.Errorf("base layer: %w", err)
	}
	var imgs []v1.Image
	for _, p := range o.Platforms {
		start := time.Now()
		out := filepath.Join(o.WorkDir, p.OS+"-"+p.Architecture)
		pkgs := make([]string, len(RhizomeCommands))
		for i, c := range RhizomeCommands {
			pkgs[i] = "./cmd/" + c
		}
		if err := (GoBuild{Dir: o.RepoDir, Packages: pkgs, Platform: p, LDFlags: o.Version.LDFlags, OutDir: out}).Run(ctx); err != nil {
			return nil, ref, err
		}
		if err := (GoBuild{Dir: filepath.Join(o.RepoDir, GoBGPCLIModule), Packages: []string{GoBGPCLIPackage}, Platform: p, OutDir: out}).Run(ctx); err != nil {
			return nil, ref, err
		}
		fmt.Fprintf(o.Log, "compiled %s binaries in %.1fs\n", p.String(), time.Since(start).Seconds())
		gobgp, err := binaryLayer(out, []string{"gobgp"}, p.Architecture, StableLayerTime)
		if err != nil {
			return nil, ref, err
		}
		rz, err := binaryLayer(out, RhizomeCommands, p.Architecture, o.Version.Epoch)
		if err != nil {
			return nil, ref, err
		}
		img, err := NewImage(ImageSpec{
			Platform: p,
			Layers: []LayerSpec{
				{Layer: base, CreatedBy: "rhizome base files: /etc/passwd, /etc/group, /tmp, /run"},
				{Layer: gobgp, CreatedBy: "gobgp CLI: " + GoBGPCLIPackage + " from " + GoBGPCLIModule + "/go.mod"},
				{Layer: rz, CreatedBy: "rhizome " + o.Version.Version + ": " + strings.Join(RhizomeCommands, ", ")},
			},
			Config: v1.Config{
				Entrypoint: []string{BinDir + "/rhizome-agent"},
				Env:        []string{"PATH=" + BinDir + ":/usr/bin:/bin"},
				WorkingDir: "/",
				Labels:     ann,
			},
			Created:     o.Version.Epoch,
			Annotations: ann,
		})
		if err != nil {
			return nil, ref, fmt.Errorf("%s image: %w", p.String(), err)
		}
		imgs = append(imgs, img)
	}
	idx, err := NewIndex(imgs, ann)
	return idx, ref, err
}

// baseFiles are what the binaries need besides themselves: a writable
// /tmp, the /run and /var/run mount points the DaemonSet uses, and a passwd
// and group naming root and nobody (for tools that look up the user; the
// agent needs neither). No shell, no libc, no CA certificates: the agent
// talks only to the API server (its CA comes from the ServiceAccount
// mount) and to BGP peers.
func baseFiles() []Entry {
	return []Entry{
		File("/etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n")),
		File("/etc/group", 0o644, []byte("root:x:0:\nnobody:x:65534:\n")),
		Dir("/root", 0o700),
		Dir("/run", 0o755),
		Dir("/tmp", os.ModeSticky|0o777),
		Dir(BinDir, 0o755),
		Dir("/var/run", 0o755),
	}
}

// binaryLayer puts dir's named binaries into BinDir, each checked to be a
// static ELF executable for arch.
func binaryLayer(dir string, names []string, arch string, mtime time.Time) (v1.Layer, error) {
	var es []Entry
	for _, n := range names {
		e, err := FileFrom(BinDir+"/"+n, 0o755, filepath.Join(dir, n))
		if err != nil {
			return nil, err
		}
		if err := CheckStatic(e.Data, arch); err != nil {
			return nil, fmt.Errorf("%s for %s: %w", n, arch, err)
		}
		es = append(es, e)
	}
	return Layer(es, mtime)
}
