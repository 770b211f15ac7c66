package imagebuild

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// tagPattern is the distribution spec's tag grammar.
var tagPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// ParseRef parses an image reference with an explicit registry and tag
// ("ghcr.io/rhizome-net/rhizome:v0.1.0", "localhost/rhizome-test/busybox:1.35.0").
// A bare "rhizome:v1" is refused: Docker and containerd would each expand
// it to docker.io/library/..., and the name a runtime looks up must be the
// name the import created.
func ParseRef(s string) (name.Tag, error) {
	t, err := name.NewTag(s, name.StrictValidation)
	if err != nil {
		return name.Tag{}, fmt.Errorf("image reference %q: %w", s, err)
	}
	if !tagPattern.MatchString(t.TagStr()) {
		return name.Tag{}, fmt.Errorf("image reference %q: the tag must match %s", s, tagPattern)
	}
	first, _, _ := strings.Cut(s, "/")
	if !strings.ContainsAny(first, ".:") && first != "localhost" || !strings.Contains(s, "/") {
		return name.Tag{}, fmt.Errorf("image reference %q: name the registry (ghcr.io/..., localhost/...)", s)
	}
	return t, nil
}

// Result is where one build's image went.
type Result struct {
	Ref name.Tag
	// Digest is the image index's: what a registry would report after a
	// push, and what two builds of one commit must agree on.
	Digest v1.Hash
	// Layout is an OCI image layout directory; index.json names the index
	// with Ref (io.containerd.image.name) and its tag (ref.name).
	Layout string
	// Archive is the layout as one tar file: `ctr images import` takes it
	// (all platforms, the index digest kept), as does `docker load` (25+).
	Archive string
	// Tarballs are docker-save tarballs, one per platform ("linux/amd64"),
	// for `docker load` of any version and `ctr images import`.
	Tarballs map[string]string
}

// String is "REF@sha256:...", the last line `make image` prints.
func (r Result) String() string { return r.Ref.String() + "@" + r.Digest.String() }

// Write puts idx into dir as an OCI layout (dir/oci), an OCI archive
// (dir/NAME.oci.tar) and one docker tarball per platform
// (dir/NAME-OS-ARCH.docker.tar), NAME being the reference's last path
// element. It replaces what an earlier Write left in dir; the archive's
// file times are mtime, so it is as reproducible as the image.
func Write(dir string, ref name.Tag, idx v1.ImageIndex, mtime time.Time) (Result, error) {
	res := Result{Ref: ref, Tarballs: map[string]string{}}
	var err error
	if res.Digest, err = idx.Digest(); err != nil {
		return res, err
	}
	base := filepath.Base(ref.RepositoryStr())
	res.Layout = filepath.Join(dir, "oci")
	res.Archive = filepath.Join(dir, base+".oci.tar")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	// Only what this function writes is removed, never dir itself.
	if err := os.RemoveAll(res.Layout); err != nil {
		return res, err
	}
	lp, err := layout.Write(res.Layout, empty.Index)
	if err != nil {
		return res, fmt.Errorf("writing the OCI layout: %w", err)
	}
	if err := lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		AnnotationContainerdName: ref.String(),
		AnnotationRefName:        ref.TagStr(),
	})); err != nil {
		return res, fmt.Errorf("writing the OCI layout: %w", err)
	}
	if err := tarDir(res.Layout, res.Archive, mtime); err != nil {
		return res, fmt.Errorf("writing the OCI archive: %w", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return res, err
	}
	for _, d := range im.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			return res, err
		}
		p := d.Platform.String()
		path := filepath.Join(dir, fmt.Sprintf("%s-%s.docker.tar", base, strings.ReplaceAll(p, "/", "-")))
		if err := tarball.WriteToFile(path, ref, img); err != nil {
			return res, fmt.Errorf("writing the %s docker tarball: %w", p, err)
		}
		res.Tarballs[p] = path
	}
	return res, nil
}

// tarDir writes the files below dir into the tar file dst, sorted, owned by
// 0:0, directories 0755 and files 0644, every time mtime.
func tarDir(dir, dst string, mtime time.Time) (err error) {
	f, err := os.Create(dst + ".tmp")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	tw := tar.NewWriter(f)
	mtime = mtime.UTC().Truncate(time.Second)
	// WalkDir visits in lexical order, so the archive's order is fixed.
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: mtime, Format: tar.FormatUSTAR}
		switch {
		case d.IsDir():
			h.Typeflag, h.Mode, h.Name = tar.TypeDir, 0o755, h.Name+"/"
			return tw.WriteHeader(h)
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o644, info.Size()
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			src, err := os.Open(p)
			if err != nil {
				return err
			}
			defer src.Close()
			_, err = io.Copy(tw, src)
			return err
		default:
			return fmt.Errorf("%s: not a file or directory", p)
		}
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), dst)
}
