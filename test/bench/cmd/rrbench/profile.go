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

// profiler fetches the agent's profiles from inside its namespace: a
// socket keeps the namespace it was made in, so each connection is dialled
// on a thread switched into it.
type profiler struct {
	ns  *netns.NS
	dir string
	c   *http.Client
}

func newProfiler(ns *netns.NS, dir string) *profiler {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := ns.Do(func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &profiler{ns: ns, dir: dir, c: &http.Client{Transport: &http.Transport{DialContext: dial}}}
}

// cpu starts a CPU profile of d in the background, written to name.pprof;
// wait blocks until it is written.
func (p *profiler) cpu(name string, d time.Duration) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.fetch(name, fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(d.Seconds())), d+time.Minute)
	}()
	return func() { <-done }
}

// heap writes the agent's heap profile (after a GC) to name.pprof.
func (p *profiler) heap(name string) { p.fetch(name, "/debug/pprof/heap?gc=1", time.Minute) }

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
	f, err := os.Create(filepath.Join(p.dir, name+".pprof"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "rrbench: profile %s: %v\n", name, err)
		return
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		fmt.Fprintf(os.Stderr, "rrbench: profile %s: %v\n", name, err)
	}
}
