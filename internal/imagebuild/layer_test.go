package imagebuild

import (
	"archive/tar"
	"errors"
	"io"
	"io/fs"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

var epoch = time.Unix(1796425401, 0).UTC()

type tarEntry struct {
	name, link string
	typ        byte
	mode       int64
	uid, gid   int
	uname      string
	mtime      time.Time
	data       string
}

// readLayer lists a layer's uncompressed tar in order.
func readLayer(t *testing.T, l v1.Layer) []tarEntry {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var out []tarEntry
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
		out = append(out, tarEntry{name: h.Name, link: h.Linkname, typ: h.Typeflag, mode: h.Mode,
			uid: h.Uid, gid: h.Gid, uname: h.Uname + h.Gname, mtime: h.ModTime.UTC(), data: string(b)})
	}
}

func testEntries() []Entry {
	return []Entry{
		File("/usr/local/bin/tool", 0o755, []byte("\x7fELF pretend")),
		Dir("/tmp", fs.ModeSticky|0o777),
		Symlink("/bin/sh", "/usr/local/bin/tool"),
		File("/etc/passwd", 0o644, []byte("root:x:0:0::/:/bin/sh\n")),
	}
}

// The layer's bytes depend only on the entries and the time: not on the
// order they are given in, not on the host's owners, umask or clock.
func TestLayerIsReproducible(t *testing.T) {
	a, err := Layer(testEntries(), epoch)
	if err != nil {
		t.Fatal(err)
	}
	rev := testEntries()
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	b, err := Layer(rev, epoch)
	if err != nil {
		t.Fatal(err)
	}
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Fatalf("same entries in another order: digest %s, then %s", da, db)
	}
	if mt, _ := a.MediaType(); mt != types.OCILayer {
		t.Fatalf("media type %s, want %s", mt, types.OCILayer)
	}
	c, err := Layer(testEntries(), epoch.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if dc, _ := c.Digest(); dc == da {
		t.Fatalf("another time gave the same digest %s: the time is not in the layer", dc)
	}

	got := readLayer(t, a)
	want := []tarEntry{
		{name: "bin/", typ: tar.TypeDir, mode: 0o755},
		{name: "bin/sh", typ: tar.TypeSymlink, mode: 0o777, link: "/usr/local/bin/tool"},
		{name: "etc/", typ: tar.TypeDir, mode: 0o755},
		{name: "etc/passwd", typ: tar.TypeReg, mode: 0o644, data: "root:x:0:0::/:/bin/sh\n"},
		{name: "tmp/", typ: tar.TypeDir, mode: 0o1777},
		{name: "usr/", typ: tar.TypeDir, mode: 0o755},
		{name: "usr/local/", typ: tar.TypeDir, mode: 0o755},
		{name: "usr/local/bin/", typ: tar.TypeDir, mode: 0o755},
		{name: "usr/local/bin/tool", typ: tar.TypeReg, mode: 0o755, data: "\x7fELF pretend"},
	}
	if len(got) != len(want) {
		t.Fatalf("layer has %d entries, want %d:\n%+v", len(got), len(want), got)
	}
	for i := range want {
		want[i].mtime = epoch
		if got[i] != want[i] {
			t.Errorf("entry %d = %+v\nwant %+v", i, got[i], want[i])
		}
	}
}

// A packaging mistake is an error, never a layer that quietly keeps one of
// two files or writes outside the image's root.
func TestLayerRefusesBadEntries(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []Entry
		want    string
	}{
		{"same path twice", []Entry{File("/a", 0o644, []byte("1")), File("/a", 0o755, []byte("2"))}, "appears twice"},
		{"relative path", []Entry{File("etc/passwd", 0o644, nil)}, "absolute, clean"},
		{"escapes through ..", []Entry{File("/usr/../../etc/shadow", 0o644, nil)}, "absolute, clean"},
		{"trailing slash", []Entry{Dir("/tmp/", 0o755)}, "absolute, clean"},
		{"the root itself", []Entry{Dir("/", 0o755)}, "absolute, clean"},
		{"file below a file", []Entry{File("/a", 0o644, nil), File("/a/b", 0o644, nil)}, "not a directory"},
		{"file below a link", []Entry{Symlink("/lib", "/usr/lib"), File("/lib/x", 0o644, nil)}, "not a directory"},
		{"link without target", []Entry{{Path: "/l", Mode: fs.ModeSymlink}}, "without a target"},
		{"device", []Entry{{Path: "/dev/null", Mode: fs.ModeDevice | 0o666}}, "not a file, directory"},
		{"directory with data", []Entry{{Path: "/d", Mode: fs.ModeDir | 0o755, Data: []byte("x")}}, "only a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Layer(tc.entries, epoch)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Layer: err %v, want one containing %q", err, tc.want)
			}
		})
	}
}
