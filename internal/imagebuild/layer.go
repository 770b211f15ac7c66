// Package imagebuild builds OCI images from files on this machine, with no
// base image and no container engine, reproducibly: the same inputs give
// the same layer, manifest and index digests, byte for byte. It is what
// `make image` (Rhizome's own image, hack/image) and the kubelet lab (the
// pause image and a test workload image) use; docs/design/0012 says why.
//
// go-containerregistry does the image work: layer digests and compression,
// configs, manifests, the image index, the OCI layout and the docker-load
// tarball. This package only decides what goes in and pins everything that
// would otherwise vary between two builds: file order, owners, modes, times
// and the compression level.
package imagebuild

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Entry is one file, directory or symbolic link of a layer.
type Entry struct {
	// Path is absolute and clean, as seen inside the container
	// ("/usr/local/bin/rhizome-agent").
	Path string
	// Mode holds the permission bits (with setuid, setgid, sticky) and, for
	// a directory or a link, fs.ModeDir or fs.ModeSymlink.
	Mode fs.FileMode
	// Data is a regular file's content.
	Data []byte
	// Target is a symbolic link's target.
	Target string
}

// File is a regular file with the given permissions.
func File(p string, perm fs.FileMode, data []byte) Entry {
	return Entry{Path: p, Mode: perm, Data: data}
}

// Dir is a directory with the given permissions.
func Dir(p string, perm fs.FileMode) Entry { return Entry{Path: p, Mode: fs.ModeDir | perm} }

// Symlink is a symbolic link to target.
func Symlink(p, target string) Entry {
	return Entry{Path: p, Mode: fs.ModeSymlink | 0o777, Target: target}
}

// FileFrom is a regular file with the content of src on this machine and
// the given permissions (never the host file's own mode, owner or time).
func FileFrom(p string, perm fs.FileMode, src string) (Entry, error) {
	b, err := os.ReadFile(src)
	if err != nil {
		return Entry{}, fmt.Errorf("reading %s for %s: %w", src, p, err)
	}
	return File(p, perm, b), nil
}

// Layer returns a gzip-compressed OCI layer holding entries.
//
// What could vary between two builds is fixed: entries are sorted by path,
// every owner is 0:0 with no user or group names, every time is mtime (the
// commit's, SOURCE_DATE_EPOCH), and the compression is gzip at a fixed level
// from the Go toolchain's own compress/flate. A parent directory that no
// entry names is added with mode 0755. Two entries with the same path, a
// relative or unclean path, or a file below a non-directory are errors: a
// layer that silently kept one of two files would hide a packaging mistake.
func Layer(entries []Entry, mtime time.Time) (v1.Layer, error) {
	all, err := normalize(entries)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime = mtime.UTC().Truncate(time.Second)
	for _, e := range all {
		h := &tar.Header{
			Name:    strings.TrimPrefix(e.Path, "/"),
			Mode:    int64(e.Mode.Perm()),
			ModTime: mtime,
			// USTAR when it fits (it always does for our names); pinned so a
			// future default cannot change the bytes.
			Format: tar.FormatUSTAR,
		}
		if e.Mode&fs.ModeSetuid != 0 {
			h.Mode |= 0o4000
		}
		if e.Mode&fs.ModeSetgid != 0 {
			h.Mode |= 0o2000
		}
		if e.Mode&fs.ModeSticky != 0 {
			h.Mode |= 0o1000
		}
		switch {
		case e.Mode.IsDir():
			h.Typeflag = tar.TypeDir
			h.Name += "/"
		case e.Mode&fs.ModeSymlink != 0:
			h.Typeflag = tar.TypeSymlink
			h.Linkname = e.Target
		default:
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("layer entry %s: %w", e.Path, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(e.Data); err != nil {
				return nil, fmt.Errorf("layer entry %s: %w", e.Path, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	raw := buf.Bytes()
	return tarball.LayerFromOpener(
		func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil },
		tarball.WithMediaType(types.OCILayer),
		tarball.WithCompressionLevel(gzip.DefaultCompression),
		// Compress once: the digest, the layout and each tarball reuse it.
		tarball.WithCompressedCaching,
	)
}

// normalize validates entries, adds missing parent directories and sorts.
func normalize(entries []Entry) ([]Entry, error) {
	byPath := make(map[string]Entry, len(entries))
	for _, e := range entries {
		if !path.IsAbs(e.Path) || path.Clean(e.Path) != e.Path || e.Path == "/" {
			return nil, fmt.Errorf("layer entry %q: want an absolute, clean path below /", e.Path)
		}
		if _, dup := byPath[e.Path]; dup {
			return nil, fmt.Errorf("layer entry %s appears twice", e.Path)
		}
		switch t := e.Mode.Type(); {
		case t == fs.ModeDir, t == 0:
		case t == fs.ModeSymlink:
			if e.Target == "" {
				return nil, fmt.Errorf("layer entry %s: a symbolic link without a target", e.Path)
			}
		default:
			return nil, fmt.Errorf("layer entry %s: mode %v is not a file, directory or symbolic link", e.Path, e.Mode)
		}
		if e.Mode.Type() != 0 && len(e.Data) > 0 {
			return nil, fmt.Errorf("layer entry %s: only a regular file has data", e.Path)
		}
		byPath[e.Path] = e
	}
	for p := range byPath {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			parent, ok := byPath[d]
			if !ok {
				byPath[d] = Dir(d, 0o755)
				continue
			}
			if !parent.Mode.IsDir() {
				return nil, fmt.Errorf("layer entry %s: its parent %s is not a directory", p, d)
			}
		}
	}
	all := make([]Entry, 0, len(byPath))
	for _, e := range byPath {
		all = append(all, e)
	}
	// By path: a parent is a prefix of its children, so it comes first.
	sort.Slice(all, func(i, j int) bool { return all[i].Path < all[j].Path })
	return all, nil
}
