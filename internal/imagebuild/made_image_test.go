//go:build image

// The images as `make image`, `make image-pause` and `make image-busybox`
// build them, each built twice: the same last line, the same bytes, and
// contents that fit the DaemonSet and the kubelet lab. `make test-image`
// runs these (tag image); they compile the real binaries for both
// architectures, which takes minutes with a cold Go build cache.
package imagebuild

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

const repoRoot = "../.."

// makeImage runs `make -s TARGET IMAGE_OUT=out VARS...` and returns its
// last line.
func makeImage(t *testing.T, target, out string, vars ...string) string {
	t.Helper()
	cmd := exec.Command("make", append([]string{"-s", "-C", repoRoot, target, "IMAGE_OUT=" + out}, vars...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("make %s: %v\n%s%s", target, err, stdout.String(), stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	t.Logf("make %s:\n%s", target, stderr.String())
	return lines[len(lines)-1]
}

// twice builds target into two directories and checks that the last lines
// and every output file agree; it returns the first directory and the line.
func twice(t *testing.T, target, name string) (string, string) {
	t.Helper()
	a, b := t.TempDir(), t.TempDir()
	la, lb := makeImage(t, target, a), makeImage(t, target, b)
	if la != lb {
		t.Fatalf("make %s twice from one commit:\n%s\n%s", target, la, lb)
	}
	t.Logf("make %s twice: %s", target, la)
	err := filepath.WalkDir(filepath.Join(a, name), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(a, p)
		x, _ := os.ReadFile(p)
		y, err := os.ReadFile(filepath.Join(b, rel))
		if err != nil || !bytes.Equal(x, y) {
			t.Errorf("%s differs between the two builds (%v)", rel, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(a, name), la
}

// checkLine parses REF@sha256:... and checks it against the layout.
func checkLine(t *testing.T, line, wantRef, dir string) v1.ImageIndex {
	t.Helper()
	m := regexp.MustCompile(`^(\S+)@(sha256:[0-9a-f]{64})$`).FindStringSubmatch(line)
	if m == nil || m[1] != wantRef {
		t.Fatalf("last line %q, want %s@sha256:<64 hex>", line, wantRef)
	}
	lidx, err := layout.ImageIndexFromPath(filepath.Join(dir, "oci"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := v1.NewHash(m[2])
	if err != nil {
		t.Fatal(err)
	}
	idx, err := lidx.ImageIndex(h)
	if err != nil {
		t.Fatalf("the layout has no index %s: %v", h, err)
	}
	if d, _ := idx.Digest(); d != h {
		t.Fatalf("index digest %s, printed %s", d, h)
	}
	return idx
}

type file struct {
	mode fs.FileMode
	link string
	data []byte
}

// files flattens an image into its files, as a runtime unpacks it.
func files(t *testing.T, img v1.Image) map[string]file {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	out := map[string]file{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out["/"+strings.TrimSuffix(h.Name, "/")] = file{mode: h.FileInfo().Mode(), link: h.Linkname, data: b}
	}
}

// run writes b to a file named name and runs it with args and env.
func run(t *testing.T, name string, b []byte, env []string, args ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(p, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	return string(out)
}

func TestMakeImage(t *testing.T) {
	ver, err := ReadVersion(context.Background(), repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	dir, line := twice(t, "image", "rhizome")
	idx := checkLine(t, line, DefaultRepository+":"+ver.Version, dir)
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	wantAnn := map[string]string{
		AnnotationVersion: ver.Version, AnnotationRevision: ver.Revision,
		AnnotationSource: SourceURL, AnnotationCreated: ver.Epoch.Format("2006-01-02T15:04:05Z"),
	}
	if !mapHas(im.Annotations, wantAnn) {
		t.Errorf("index annotations %v, want %v", im.Annotations, wantAnn)
	}
	var platforms []string
	for _, d := range im.Manifests {
		platforms = append(platforms, d.Platform.String())
	}
	sort.Strings(platforms)
	if strings.Join(platforms, ",") != "linux/amd64,linux/arm64" {
		t.Fatalf("index platforms %v", platforms)
	}

	for _, d := range im.Manifests {
		p, arch := d.Platform.String(), d.Platform.Architecture
		// The docker tarball holds the same image as the layout.
		img, err := tarball.ImageFromPath(filepath.Join(dir, "rhizome-linux-"+arch+".docker.tar"), nil)
		if err != nil {
			t.Fatalf("%s docker tarball: %v", p, err)
		}
		fromIdx, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		c1, _ := img.ConfigName()
		c2, _ := fromIdx.ConfigName()
		if c1 != c2 {
			t.Errorf("%s: the docker tarball's config %s is not the index's %s", p, c1, c2)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Architecture != arch || !mapHas(cf.Config.Labels, wantAnn) || !cf.Created.Time.Equal(ver.Epoch) {
			t.Errorf("%s config: arch %s, labels %v, created %v", p, cf.Architecture, cf.Config.Labels, cf.Created)
		}
		if strings.Join(cf.Config.Entrypoint, " ") != "/usr/local/bin/rhizome-agent" || !strings.HasPrefix(strings.Join(cf.Config.Env, " "), "PATH=/usr/local/bin:") {
			t.Errorf("%s config: entrypoint %v, env %v", p, cf.Config.Entrypoint, cf.Config.Env)
		}
		got := files(t, img)
		// What the DaemonSet runs and mounts (deploy/base/daemonset.yaml).
		for _, want := range []struct {
			path string
			mode fs.FileMode
		}{
			{"/usr/local/bin/rhizome-agent", 0o755}, {"/usr/local/bin/rhizome-cni", 0o755},
			{"/usr/local/bin/rhizomectl", 0o755}, {"/usr/local/bin/gobgp", 0o755},
			{"/tmp", fs.ModeDir | fs.ModeSticky | 0o777}, {"/run", fs.ModeDir | 0o755}, {"/var/run", fs.ModeDir | 0o755},
			{"/etc/passwd", 0o644},
		} {
			f, ok := got[want.path]
			if !ok || f.mode != want.mode {
				t.Errorf("%s: %s mode %v (present %v), want %v", p, want.path, f.mode, ok, want.mode)
			}
		}
		for _, bin := range []string{"rhizome-agent", "rhizome-cni", "rhizomectl", "gobgp"} {
			if err := CheckStatic(got["/usr/local/bin/"+bin].data, arch); err != nil {
				t.Errorf("%s %s: %v", p, bin, err)
			}
		}
		if arch != "amd64" {
			continue // this machine runs only the amd64 binaries
		}
		for _, c := range []struct{ bin, arg, want string }{
			{"rhizome-agent", "--version", "rhizome-agent " + ver.Version + " (revision " + ver.Revision},
			{"rhizome-cni", "--version", "rhizome-cni " + ver.Version + " "},
			{"rhizomectl", "version", "Client: " + ver.Version + " "},
			{"gobgp", "--version", "gobgp version 3.37.0"},
		} {
			if out := run(t, c.bin, got["/usr/local/bin/"+c.bin].data, nil, c.arg); !strings.HasPrefix(out, c.want) {
				t.Errorf("%s %s printed %q, want %q...", c.bin, c.arg, out, c.want)
			}
		}
		if out := run(t, "rhizome-cni", got["/usr/local/bin/rhizome-cni"].data, []string{"CNI_COMMAND=VERSION"}); !strings.HasPrefix(out, `{"cniVersion":`) {
			t.Errorf("rhizome-cni CNI_COMMAND=VERSION printed %q", out)
		}
	}

	// Another commit (another version and time): only Rhizome's own layer
	// changes, so an upgrade downloads only that.
	other := t.TempDir()
	t.Setenv("VERSION", "v0.0.0-layer-test")
	t.Setenv("SOURCE_DATE_EPOCH", "1000000000")
	line2 := makeImage(t, "image", other, "PLATFORMS=linux/amd64")
	if !strings.HasPrefix(line2, DefaultRepository+":v0.0.0-layer-test@") {
		t.Fatalf("a build with VERSION set: %s", line2)
	}
	layers := func(p string) []v1.Hash {
		t.Helper()
		img, err := tarball.ImageFromPath(p, nil)
		if err != nil {
			t.Fatal(err)
		}
		m, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		var hs []v1.Hash
		for _, l := range m.Layers {
			hs = append(hs, l.Digest)
		}
		return hs
	}
	a, b := layers(filepath.Join(dir, "rhizome-linux-amd64.docker.tar")), layers(filepath.Join(other, "rhizome", "rhizome-linux-amd64.docker.tar"))
	if len(a) != 3 || len(b) != 3 || a[0] != b[0] || a[1] != b[1] || a[2] == b[2] {
		t.Errorf("layers of two versions:\n%v\n%v\nwant the base and gobgp layers equal, Rhizome's different", a, b)
	}
}

func TestMakeImagePause(t *testing.T) {
	dir, line := twice(t, "image-pause", "pause")
	idx := checkLine(t, line, strings.SplitN(line, "@", 2)[0], dir)
	if !strings.HasPrefix(line, "registry.k8s.io/pause:3.") {
		t.Errorf("pause reference %s, want registry.k8s.io/pause:<k8s's TAG>", line)
	}
	img, err := tarball.ImageFromPath(filepath.Join(dir, "pause-linux-amd64.docker.tar"), nil)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "65535:65535" || strings.Join(cf.Config.Entrypoint, " ") != "/pause" {
		t.Errorf("pause config: user %q, entrypoint %v", cf.Config.User, cf.Config.Entrypoint)
	}
	pause := files(t, img)["/pause"]
	if err := CheckStatic(pause.data, "amd64"); err != nil || pause.mode != 0o755 {
		t.Fatalf("/pause: mode %v, %v", pause.mode, err)
	}
	if out := run(t, "pause", pause.data, nil, "-v"); !strings.HasPrefix(out, "pause.c v3.") {
		t.Errorf("pause -v printed %q", out)
	}
	if im, _ := idx.IndexManifest(); len(im.Manifests) != 1 || im.Manifests[0].Platform.String() != "linux/amd64" {
		t.Errorf("pause index: %+v", im.Manifests)
	}
}

func TestMakeImageBusybox(t *testing.T) {
	dir, line := twice(t, "image-busybox", "busybox")
	checkLine(t, line, strings.SplitN(line, "@", 2)[0], dir)
	img, err := tarball.ImageFromPath(filepath.Join(dir, "busybox-linux-amd64.docker.tar"), nil)
	if err != nil {
		t.Fatal(err)
	}
	got := files(t, img)
	bb := got["/bin/busybox"]
	if err := CheckStatic(bb.data, "amd64"); err != nil {
		t.Fatalf("/bin/busybox: %v", err)
	}
	// What the lab's workloads run.
	for _, applet := range []string{"/bin/sh", "/bin/sleep", "/bin/ping", "/sbin/ip", "/usr/bin/nc", "/usr/bin/wget"} {
		if f := got[applet]; f.link != "/bin/busybox" {
			t.Errorf("%s -> %q, want /bin/busybox", applet, f.link)
		}
	}
	if out := run(t, "busybox", bb.data, nil, "sh", "-c", "echo $((6*7))"); out != "42\n" {
		t.Errorf("busybox sh printed %q", out)
	}
	sc := bufio.NewScanner(strings.NewReader(string(got["/etc/passwd"].data)))
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), "root:x:0:0:") {
		t.Errorf("/etc/passwd: %q", got["/etc/passwd"].data)
	}
}
