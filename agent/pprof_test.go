package agent

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestServePprof: the profiles come as pprof's gzipped protobuf, and with
// ?debug=1 as text (the heap's with the runtime's memory statistics,
// which rrbench -profile saves).
func TestServePprof(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- servePprof(ctx, addr, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() { cancel(); <-done })
	get := func(path string) []byte {
		t.Helper()
		var resp *http.Response
		for end := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			resp, err = http.Get("http://" + addr + path)
			if err == nil || time.Now().After(end) {
				break
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %v", path, resp.StatusCode, err)
		}
		return b
	}
	for _, tc := range []struct {
		path, want string
		gzip       bool
	}{
		{path: "/debug/pprof/heap?gc=1", gzip: true},
		{path: "/debug/pprof/goroutine", gzip: true},
		{path: "/debug/pprof/heap?debug=1", want: "# Stack = "},
		{path: "/debug/pprof/goroutine?debug=1", want: "goroutine profile: total "},
	} {
		b := get(tc.path)
		if tc.gzip != bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
			t.Errorf("%s: gzip %v, want %v", tc.path, !tc.gzip, tc.gzip)
		}
		if !strings.Contains(string(b), tc.want) {
			t.Errorf("%s: no %q in %.200s", tc.path, tc.want, b)
		}
	}
}
