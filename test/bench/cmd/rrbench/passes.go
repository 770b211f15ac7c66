package main

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/rhizome-net/rhizome/test/netns"
)

// passStats is what the harness reads of an agent's reconcile passes from
// its metrics (the reflector's and the client agent's): their count, total
// seconds and histogram. The agent keeps no maximum; the histogram's
// buckets double from 0.5 ms, so the slowest pass is known to its
// bucket's upper bound.
//
// A run reads it twice, when the measured phases begin and at the end:
// the mean over the whole run mixes the start-up's one long pass (it
// configures every session: seconds at 5,000 clients) with however many
// cheap passes the start-up happened to make, and said little about the
// passes after it (design 0018, item 3).
type passStats struct {
	PassSum   float64
	Passes    int64
	PassMaxLE float64 // seconds; +Inf if the slowest pass was above every bucket
	// Buckets are the cumulative counts by upper bound, in the
	// exposition's (increasing) order.
	Buckets []bucket
}

type bucket struct {
	LE float64
	N  int64
}

const passMetric = "rhizome_agent_reconcile_duration_seconds"

// readPassStats reads an agent's passStats from its metrics, served at
// healthAddr in ns.
func readPassStats(ns *netns.NS) (passStats, error) {
	resp, err := nsClient(ns).Get("http://" + healthAddr + "/metrics")
	if err != nil {
		return passStats{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return passStats{}, err
	}
	return parsePassStats(string(b))
}

// parsePassStats reads passStats from a Prometheus text exposition.
func parsePassStats(text string) (passStats, error) {
	var s passStats
	var err error
	have := map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		name, v, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		switch {
		case name == passMetric+"_sum":
			s.PassSum, err = strconv.ParseFloat(v, 64)
		case name == passMetric+"_count":
			s.Passes, err = strconv.ParseInt(v, 10, 64)
		case strings.HasPrefix(name, passMetric+`_bucket{le="`) && strings.HasSuffix(name, `"}`):
			le := strings.TrimSuffix(strings.TrimPrefix(name, passMetric+`_bucket{le="`), `"}`)
			var b bucket
			if b.LE, err = strconv.ParseFloat(le, 64); err == nil {
				b.N, err = strconv.ParseInt(v, 10, 64)
			}
			s.Buckets = append(s.Buckets, b)
		default:
			continue
		}
		if err != nil {
			return passStats{}, fmt.Errorf("%s: %w", line, err)
		}
		name, _, _ = strings.Cut(name, "{")
		have[name] = true
	}
	for _, m := range []string{passMetric + "_sum", passMetric + "_count", passMetric + "_bucket"} {
		if !have[m] {
			return passStats{}, fmt.Errorf("no %s in the metrics", m)
		}
	}
	s.PassMaxLE = maxLE(s.Buckets)
	return s, nil
}

// maxLE is the upper bound of the bucket that holds the slowest pass:
// buckets are cumulative, so the last one whose count grows. 0 without
// passes.
func maxLE(bs []bucket) float64 {
	le, prev := 0.0, int64(0)
	for _, b := range bs {
		if b.N > prev {
			le, prev = b.LE, b.N
		}
	}
	return le
}

// since is what happened after before, read from the same agent earlier.
func (s passStats) since(before passStats) (passStats, error) {
	if len(before.Buckets) != len(s.Buckets) {
		return passStats{}, fmt.Errorf("pass histograms of %d and %d buckets", len(before.Buckets), len(s.Buckets))
	}
	d := passStats{PassSum: s.PassSum - before.PassSum, Passes: s.Passes - before.Passes}
	for i, b := range s.Buckets {
		if b.LE != before.Buckets[i].LE || b.N < before.Buckets[i].N {
			return passStats{}, fmt.Errorf("pass histogram bucket %d: le=%g count %d, earlier le=%g count %d", i, b.LE, b.N, before.Buckets[i].LE, before.Buckets[i].N)
		}
		d.Buckets = append(d.Buckets, bucket{LE: b.LE, N: b.N - before.Buckets[i].N})
	}
	d.PassMaxLE = maxLE(d.Buckets)
	return d, nil
}

// figures are a result's: the count, the mean (ms) and the slowest
// pass's bucket bound (ms; -1 above every bucket).
func (s passStats) figures() (passes int64, meanMs, maxMs float64) {
	if s.Passes > 0 {
		meanMs = 1000 * s.PassSum / float64(s.Passes)
	}
	maxMs = 1000 * s.PassMaxLE
	if math.IsInf(s.PassMaxLE, 1) {
		maxMs = -1
	}
	return s.Passes, meanMs, maxMs
}
