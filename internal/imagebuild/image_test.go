package imagebuild

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

var testAnnotations = map[string]string{
	AnnotationVersion:  "v9.8.7",
	AnnotationRevision: "0123456789abcdef0123456789abcdef01234567",
	AnnotationSource:   SourceURL,
	AnnotationCreated:  epoch.Format(time.RFC3339),
}

// testIndex assembles a two-platform index from fixed inputs, as
// BuildRhizome does from compiled binaries.
func testIndex(t *testing.T) v1.ImageIndex {
	t.Helper()
	base, err := Layer([]Entry{Dir("/tmp", 0o777), File("/etc/passwd", 0o644, []byte("root:x:0:0::/:/sbin/nologin\n"))}, epoch)
	if err != nil {
		t.Fatal(err)
	}
	var imgs []v1.Image
	for _, arch := range []string{"amd64", "arm64"} {
		bin, err := Layer([]Entry{File("/usr/local/bin/tool", 0o755, []byte("tool for "+arch))}, epoch)
		if err != nil {
			t.Fatal(err)
		}
		img, err := NewImage(ImageSpec{
			Platform: v1.Platform{OS: "linux", Architecture: arch},
			Layers:   []LayerSpec{{Layer: base, CreatedBy: "base"}, {Layer: bin, CreatedBy: "tool"}},
			Config: v1.Config{
				Entrypoint: []string{"/usr/local/bin/tool"},
				Env:        []string{"PATH=/usr/local/bin"},
				Labels:     testAnnotations,
			},
			Created:     epoch,
			Annotations: testAnnotations,
		})
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, img)
	}
	idx, err := NewIndex(imgs, testAnnotations)
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

func TestIndexIsReproducibleAndComplete(t *testing.T) {
	idx := testIndex(t)
	d1, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if d2, _ := testIndex(t).Digest(); d1 != d2 {
		t.Fatalf("two assemblies of the same inputs: %s, then %s", d1, d2)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.MediaType != types.OCIImageIndex {
		t.Errorf("index media type %q, want %q", im.MediaType, types.OCIImageIndex)
	}
	if !mapHas(im.Annotations, testAnnotations) {
		t.Errorf("index annotations %v, want %v", im.Annotations, testAnnotations)
	}
	var platforms []string
	for _, d := range im.Manifests {
		platforms = append(platforms, d.Platform.String())
		if d.MediaType != types.OCIManifestSchema1 {
			t.Errorf("%s: manifest media type %q", d.Platform, d.MediaType)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		m, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		if m.Config.MediaType != types.OCIConfigJSON || !mapHas(m.Annotations, testAnnotations) {
			t.Errorf("%s: config media type %q, manifest annotations %v", d.Platform, m.Config.MediaType, m.Annotations)
		}
		for _, l := range m.Layers {
			if l.MediaType != types.OCILayer {
				t.Errorf("%s: layer media type %q", d.Platform, l.MediaType)
			}
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Architecture != d.Platform.Architecture || cf.OS != "linux" {
			t.Errorf("%s: config says %s/%s", d.Platform, cf.OS, cf.Architecture)
		}
		if !cf.Created.Time.Equal(epoch) || !mapHas(cf.Config.Labels, testAnnotations) {
			t.Errorf("%s: created %v, labels %v", d.Platform, cf.Created, cf.Config.Labels)
		}
		if len(cf.History) != 2 || len(cf.RootFS.DiffIDs) != 2 {
			t.Fatalf("%s: %d history entries, %d layers; want 2 and 2", d.Platform, len(cf.History), len(cf.RootFS.DiffIDs))
		}
		for _, h := range cf.History {
			if !h.Created.Time.Equal(epoch) {
				t.Errorf("%s: history %q created %v, want %v", d.Platform, h.CreatedBy, h.Created, epoch)
			}
		}
	}
	sort.Strings(platforms)
	if strings.Join(platforms, " ") != "linux/amd64 linux/arm64" {
		t.Errorf("index platforms %v, want linux/amd64 and linux/arm64", platforms)
	}
}

func TestIndexRefusesAmbiguousPlatforms(t *testing.T) {
	l, err := Layer([]Entry{File("/x", 0o644, nil)}, epoch)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewImage(ImageSpec{Layers: []LayerSpec{{Layer: l}}}); err == nil {
		t.Error("NewImage without a platform: no error")
	}
	img, err := NewImage(ImageSpec{Platform: v1.Platform{OS: "linux", Architecture: "amd64"}, Layers: []LayerSpec{{Layer: l}}, Created: epoch})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewIndex([]v1.Image{img, img}, nil); err == nil || !strings.Contains(err.Error(), "two images for platform linux/amd64") {
		t.Errorf("NewIndex with one platform twice: err %v", err)
	}
}

// Write's three outputs read back, with go-containerregistry's readers, as
// the image that was written; a second Write gives the same bytes.
func TestWriteReadsBack(t *testing.T) {
	idx := testIndex(t)
	want, _ := idx.Digest()
	ref, err := ParseRef("ghcr.io/rhizome-net/rhizome:v9.8.7")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	res, err := Write(dir, ref, idx, epoch)
	if err != nil {
		t.Fatal(err)
	}
	if res.Digest != want || res.String() != "ghcr.io/rhizome-net/rhizome:v9.8.7@"+want.String() {
		t.Fatalf("result %s, want digest %s", res, want)
	}

	// The layout: index.json names the index with the reference.
	lidx, err := layout.ImageIndexFromPath(res.Layout)
	if err != nil {
		t.Fatal(err)
	}
	lim, err := lidx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(lim.Manifests) != 1 || lim.Manifests[0].Digest != want ||
		lim.Manifests[0].Annotations[AnnotationContainerdName] != ref.String() ||
		lim.Manifests[0].Annotations[AnnotationRefName] != "v9.8.7" {
		t.Fatalf("layout index.json = %+v, want the index %s named %s", lim.Manifests, want, ref)
	}
	if _, err := lidx.ImageIndex(want); err != nil {
		t.Fatalf("the index is not in the layout: %v", err)
	}

	// The docker tarballs: one per platform, the tagged image with its files.
	for _, p := range []string{"linux/amd64", "linux/arm64"} {
		img, err := tarball.ImageFromPath(res.Tarballs[p], &ref)
		if err != nil {
			t.Fatalf("%s tarball: %v", p, err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Platform().String() != p || cf.Config.Entrypoint[0] != "/usr/local/bin/tool" {
			t.Errorf("%s tarball: platform %s, entrypoint %v", p, cf.Platform(), cf.Config.Entrypoint)
		}
		files := extract(t, img)
		if got, want := files["usr/local/bin/tool"], "tool for "+strings.TrimPrefix(p, "linux/"); got != want {
			t.Errorf("%s tarball: /usr/local/bin/tool = %q, want %q", p, got, want)
		}
		if _, ok := files["etc/passwd"]; !ok {
			t.Errorf("%s tarball: no /etc/passwd; files %v", p, keys(files))
		}
	}

	// The OCI archive: what `ctr images import` reads, with the layout's
	// index.json and blobs.
	arch := tarFiles(t, res.Archive)
	for _, f := range []string{"oci-layout", "index.json", "blobs/sha256/" + want.Hex} {
		if _, ok := arch[f]; !ok {
			t.Errorf("OCI archive lacks %s; has %v", f, keys(arch))
		}
	}
	var ij v1.IndexManifest
	if err := json.Unmarshal([]byte(arch["index.json"]), &ij); err != nil || ij.Manifests[0].Digest != want {
		t.Errorf("OCI archive index.json: %v %+v", err, ij)
	}

	// Again, into another directory, and over the first: the same bytes.
	for _, again := range []string{t.TempDir(), dir} {
		res2, err := Write(again, ref, testIndex(t), epoch)
		if err != nil {
			t.Fatal(err)
		}
		for _, pair := range [][2]string{{res.Archive, res2.Archive}, {res.Tarballs["linux/amd64"], res2.Tarballs["linux/amd64"]}} {
			a, _ := os.ReadFile(pair[0])
			b, _ := os.ReadFile(pair[1])
			if len(a) == 0 || !bytes.Equal(a, b) {
				t.Errorf("%s and %s differ (%d, %d bytes)", pair[0], pair[1], len(a), len(b))
			}
		}
	}
	if blobs, _ := filepath.Glob(filepath.Join(res.Layout, "blobs", "sha256", "*")); len(blobs) != 8 {
		// index, 2 manifests, 2 configs, the shared base layer, 2 tool layers
		t.Errorf("layout holds %d blobs after a rewrite, want 8: a rewrite must not pile up", len(blobs))
	}
}

func TestParseRef(t *testing.T) {
	for _, tc := range []struct {
		ref string
		ok  bool
	}{
		{"ghcr.io/rhizome-net/rhizome:v0.1.0", true},
		{"localhost/rhizome-test/busybox:1.35.0", true},
		{"registry.k8s.io/pause:3.10.2", true},
		{"127.0.0.1:5000/rhizome:v1", true},
		{"rhizome:v1", false},                                                    // no registry: docker.io/library/ to one, something else to another
		{"rhizome-net/rhizome:v1", false},                                        // the same
		{"ghcr.io/rhizome-net/rhizome", false},                                   // no tag: "latest" pulls always
		{"ghcr.io/rhizome-net/rhizome:-bad", false},                              // not a tag
		{"ghcr.io/Rhizome-Net/rhizome:v1", false},                                // upper case repository
		{"ghcr.io/rhizome-net/rhizome@sha256:" + strings.Repeat("a", 64), false}, // a digest is an output
	} {
		_, err := ParseRef(tc.ref)
		if (err == nil) != tc.ok {
			t.Errorf("ParseRef(%q): err %v, want ok=%v", tc.ref, err, tc.ok)
		}
	}
}

func mapHas(got, want map[string]string) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// extract returns an image's flattened regular files by path.
func extract(t *testing.T, img v1.Image) map[string]string {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	return readTar(t, rc)
}

func tarFiles(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return readTar(t, f)
}

func readTar(t *testing.T, r io.Reader) map[string]string {
	t.Helper()
	files := map[string]string{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[strings.TrimPrefix(h.Name, "./")] = string(b)
		}
	}
}

func keys(m map[string]string) []string {
	var k []string
	for x := range m {
		k = append(k, x)
	}
	sort.Strings(k)
	return k
}
