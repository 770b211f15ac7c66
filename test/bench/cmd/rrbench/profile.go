package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/rhizome-net/rhizome/test/netns"
)

// pprofAddr is where a profiled Rhizome reflector serves its profiles,
// inside the reflector's namespace (rrbench -profile).
const pprofAddr = "127.0.0.1:6060"

// healthAddr is where the Rhizome reflector serves /metrics, inside its
// namespace.
const healthAddr = "127.0.0.1:9099"

// profiler fetches the agent's profiles from inside its namespace: a
// socket keeps the namespace it was made in, so each connection is dialled
// on a thread switched into it.
type profiler struct {
	ns  *netns.NS
	dir string
	c   *http.Client
}

func newProfiler(ns *netns.NS, dir string) *profiler {
	c := nsClient(ns)
	// Each fetch has its own deadline: a CPU profile takes as long as it
	// profiles, longer than nsClient's overall timeout allows.
	c.Timeout = 0
	return &profiler{ns: ns, dir: dir, c: c}
}

// nsClient is an HTTP client whose connections are made inside ns.
func nsClient(ns *netns.NS) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := ns.Do(func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &http.Client{Transport: &http.Transport{DialContext: dial}, Timeout: 30 * time.Second}
}

// cpu starts a CPU profile of d in the background, written to name.pprof;
// wait blocks until it is written.
func (p *profiler) cpu(name string, d time.Duration) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.fetch(name+".pprof", fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(d.Seconds())), d+time.Minute)
	}()
	return func() { <-done }
}

// heap writes the agent's heap profile (after a GC) to name.pprof, and
// the runtime's memory statistics (where the resident set goes besides
// the heap: goroutine stacks, GC headroom) and goroutine counts as text
// to name.txt and name-goroutines.txt.
func (p *profiler) heap(name string) {
	p.fetch(name+".pprof", "/debug/pprof/heap?gc=1", time.Minute)
	p.fetch(name+".txt", "/debug/pprof/heap?debug=1", time.Minute)
	p.fetch(name+"-goroutines.txt", "/debug/pprof/goroutine?debug=1", time.Minute)
}

// fetch writes what the agent serves at path to the file name.
func (p *profiler) fetch(name, path string, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+pprofAddr+path, nil)
	resp, err := p.c.Do(req)
	if err != nil {
		fmt.Fprintf(os.Stderr, "rrbench: profile %s: %v\n", name, err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(filepath.Join(p.dir, name))
	if err != nil {
		fmt.Fprintf(os.Stderr, "rrbench: profile %s: %v\n", name, err)
		return
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		fmt.Fprintf(os.Stderr, "rrbench: profile %s: %v\n", name, err)
	}
}
