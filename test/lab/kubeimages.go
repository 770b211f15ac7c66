package lab

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/rhizome-net/rhizome/internal/imagebuild"
	"github.com/rhizome-net/rhizome/test/controlplane"
)

// prepareImages builds the pause and workload images (nothing can be pulled
// here) with the image builder of `make image`, and finds the reference of
// the Rhizome image archive the lab was given. The archives are imported into
// every node's containerd by startKubeNode.
func (l *Lab) prepareImages(ctx context.Context) error {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return err
	}
	epoch := time.Unix(0, 0)
	if v, err := imagebuild.ReadVersion(ctx, root); err == nil {
		epoch = v.Epoch
	}
	imgs := &KubeImages{}
	dir := filepath.Join(l.Dir, "images")
	if err := os.MkdirAll(filepath.Join(dir, "pause-build"), 0o755); err != nil {
		return err
	}
	pause, pauseRef, err := imagebuild.BuildPause(ctx, imagebuild.PauseOptions{RepoDir: root, Epoch: epoch, WorkDir: filepath.Join(dir, "pause-build")})
	if err != nil {
		return fmt.Errorf("building the pause image: %w", err)
	}
	res, err := imagebuild.Write(filepath.Join(dir, "pause"), pauseRef, pause, epoch)
	if err != nil {
		return err
	}
	imgs.Pause = pauseRef.String()
	imgs.Tarballs = append(imgs.Tarballs, res.Archive)
	bb, bbRef, err := imagebuild.BuildBusybox(ctx, imagebuild.BusyboxOptions{Epoch: epoch})
	if err != nil {
		return fmt.Errorf("building the workload image: %w", err)
	}
	if res, err = imagebuild.Write(filepath.Join(dir, "workload"), bbRef, bb, epoch); err != nil {
		return err
	}
	imgs.Workload = bbRef.String()
	imgs.Tarballs = append(imgs.Tarballs, res.Archive)
	image, err := filepath.Abs(l.State.Options.Image)
	if err != nil {
		return err
	}
	if imgs.Rhizome, err = ArchiveRef(image); err != nil {
		return err
	}
	imgs.Tarballs = append(imgs.Tarballs, image)
	l.State.Images = imgs
	return l.save()
}

// ArchiveRef returns the image reference an OCI archive (an image layout in
// a tar file, as `make image` writes NAME.oci.tar) gives to
// `ctr images import`: its index.json's io.containerd.image.name annotation.
func ArchiveRef(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("the Rhizome image (run make image): %w", err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return "", fmt.Errorf("%s: no index.json (not an OCI archive)", path)
		}
		if err != nil {
			return "", fmt.Errorf("reading %s: %w", path, err)
		}
		if filepath.Clean(h.Name) != "index.json" {
			continue
		}
		var idx v1.IndexManifest
		if err := json.NewDecoder(tr).Decode(&idx); err != nil {
			return "", fmt.Errorf("%s: index.json: %w", path, err)
		}
		for _, m := range idx.Manifests {
			if ref := m.Annotations[imagebuild.AnnotationContainerdName]; ref != "" {
				return ref, nil
			}
		}
		return "", fmt.Errorf("%s: index.json names no image (%s)", path, imagebuild.AnnotationContainerdName)
	}
}
