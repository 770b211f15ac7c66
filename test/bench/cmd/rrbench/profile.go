package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
	return &profiler{ns: ns, dir: dir, c: nsClient(ns)}
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

// passTimes reads the agent's reconcile passes from its metrics (the
// health address in its namespace): their total seconds and count.
func passTimes(ns *netns.NS) (sum float64, count int64, err error) {
	resp, err := nsClient(ns).Get("http://" + healthAddr + "/metrics")
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, 0, err
	}
	return parsePassTimes(string(b))
}

// parsePassTimes finds the sum and count of the agent's pass-duration
// histogram in a Prometheus text exposition.
func parsePassTimes(text string) (sum float64, count int64, err error) {
	const metric = "rhizome_agent_reconcile_duration_seconds"
	var haveSum, haveCount bool
	for _, line := range strings.Split(text, "\n") {
		name, v, ok := strings.Cut(line, " ")
		switch {
		case !ok:
		case name == metric+"_sum":
			sum, err = strconv.ParseFloat(v, 64)
			haveSum = err == nil
		case name == metric+"_count":
			count, err = strconv.ParseInt(v, 10, 64)
			haveCount = err == nil
		}
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", line, err)
		}
	}
	if !haveSum || !haveCount {
		return 0, 0, fmt.Errorf("no %s in the metrics", metric)
	}
	return sum, count, nil
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
