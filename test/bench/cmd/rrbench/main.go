// Command rrbench measures route reflectors at data-center scale: one
// reflector under test (a real rhizome-agent in reflector role, reading a
// real API server that holds every client's Node, RhizomeNode and
// IPAMBlock; or BIRD 2 configured as a route reflector) and N client
// sessions, all spoken by one process (`rrbench clients`) from N source
// addresses in a namespace of its own. See test/bench/README.md.
//
//	rrbench [-n 500,1000,2000,5000] [-reps 3] [-reflectors bird,rhizome] [-json rr.json -svg rr.svg]
//	rrbench report [-json rr.json -svg rr.svg] results.txt...
//
// It prints one line per run,
//
//	reflector=NAME clients=N t_converge_s=S t_churn_s=S rss_mb=M cpu_s=S ...
//
// then the medians and Rhizome's ratios to the others; with -json and -svg
// it writes the medians and ranges as JSON and renders their chart
// (package chart; make bench-charts renders it again from the JSON).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rhizome-net/rhizome/test/bench/benchproc"
	"github.com/rhizome-net/rhizome/test/bench/chart"
	"github.com/rhizome-net/rhizome/test/netns"
)

func main() {
	var err error
	switch {
	case len(os.Args) > 1 && os.Args[1] == "clients":
		err = clientsTool(os.Args[2:])
	case len(os.Args) > 1 && os.Args[1] == "report":
		err = reportTool(os.Args[2:])
	default:
		err = matrix(os.Args[1:])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "rrbench:", err)
		os.Exit(1)
	}
}

func matrix(args []string) error {
	fs := flag.NewFlagSet("rrbench", flag.ExitOnError)
	ns := fs.String("n", "500,1000,2000,5000", "client counts, comma-separated (run in increasing order)")
	reps := fs.Int("reps", 3, "runs per reflector and count")
	refl := fs.String("reflectors", "bird,rhizome", "reflectors, comma-separated: bird, rhizome, rhizome-b")
	timeout := fs.Duration("timeout", 30*time.Minute, "per wait")
	quiet := fs.Duration("quiet-max", 30*time.Second, "before each measured phase, wait up to this long for the machine to be quiet")
	flap := fs.Float64("flap-pct", 1, "percent of the clients that flap in the churn phase (at least one)")
	keep := fs.Bool("keep", false, "keep the logs of successful runs")
	jsonOut := fs.String("json", "", "write the medians and ranges per reflector and client count to this JSON file")
	svgOut := fs.String("svg", "", "render them as an SVG chart into this file (docs/benchmarks.md)")
	results := fs.String("o", "", "also append result lines to this file")
	rhizome := fs.String("rhizome-bin", "", "the rhizome-agent binary (default: rhizome-agent next to this binary)")
	rhizomeArgs := fs.String("rhizome-args", "", "extra flags for the rhizome reflector, space-separated")
	bBin := fs.String("rhizome-b-bin", "", "binary of reflector rhizome-b (default: -rhizome-bin), to compare two builds")
	bArgs := fs.String("rhizome-b-args", "", "flags of reflector rhizome-b")
	profile := fs.String("profile", "", "directory for CPU profiles of the Rhizome reflector's convergence and churn, and its heap at the end (runs it with --pprof-address)")
	profileFor := fs.Duration("profile-for", 30*time.Second, "length of each CPU profile")
	client := fs.Bool("client", false, "also run one rhizome-agent as an ordinary client of the reflector (node \"ag\", its own namespace) and report its idle RSS, passes and routes (client_* fields)")
	_ = fs.Parse(args)
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (network namespaces)")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	rn := &runner{self: self, rhizomeBin: *rhizome, rhizomeArgs: strings.Fields(*rhizomeArgs),
		bBin: *bBin, bArgs: strings.Fields(*bArgs), timeout: *timeout, quiet: *quiet, flapPct: *flap,
		profile: *profile, profileFor: *profileFor, client: *client}
	if rn.rhizomeBin == "" {
		rn.rhizomeBin = filepath.Join(filepath.Dir(self), "rhizome-agent")
	}
	if rn.bBin == "" {
		rn.bBin = rn.rhizomeBin
	}
	if rn.profile != "" {
		if err := os.MkdirAll(rn.profile, 0o755); err != nil {
			return err
		}
	}
	var counts []int
	for _, s := range strings.Split(*ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 2 || n > maxClients {
			return fmt.Errorf("bad -n %q: 2 to %d clients", s, maxClients)
		}
		counts = append(counts, n)
	}
	slices.Sort(counts)
	counts = slices.Compact(counts)
	reflectors := strings.Split(*refl, ",")
	needsCluster := *client
	for _, r := range reflectors {
		switch r {
		case "bird":
		case "rhizome", "rhizome-b":
			needsCluster = true
		default:
			return fmt.Errorf("unknown reflector %q", r)
		}
	}
	netns.Sweep("rzr")
	if rn.dir, err = os.MkdirTemp("", "rrbench-"); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if needsCluster {
		for _, b := range []string{rn.rhizomeBin, rn.bBin} {
			if _, err := os.Stat(b); err != nil {
				return fmt.Errorf("rhizome reflector: %w (make bench-rr builds it)", err)
			}
		}
		if rn.cluster, err = startCluster(ctx, filepath.Join(rn.dir, "controlplane")); err != nil {
			return fmt.Errorf("starting the control plane: %w", err)
		}
		defer rn.cluster.stop()
		if *client {
			if err := rn.cluster.addClientAgent(ctx); err != nil {
				return fmt.Errorf("writing the client agent's node: %w", err)
			}
		}
	}
	var resf *os.File
	if *results != "" {
		if resf, err = os.OpenFile(*results, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err != nil {
			return err
		}
		defer resf.Close()
	}
	fmt.Fprintf(os.Stderr, "rrbench: %d runs, logs in %s\n", len(counts)**reps*len(reflectors), rn.dir)
	var all []result
	failed := 0
	for _, n := range counts {
		if rn.cluster != nil {
			if err := rn.cluster.grow(ctx, n); err != nil {
				return fmt.Errorf("writing %d clients into the API server: %w", n, err)
			}
		}
		for rep := 1; rep <= *reps; rep++ {
			for _, r := range reflectors {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				res, err := rn.run(ctx, r, n)
				res.Rep = rep
				if err != nil {
					failed++
					fmt.Fprintf(os.Stderr, "rrbench: run failed: %v\n", err)
					continue
				}
				fmt.Println(res)
				if resf != nil {
					fmt.Fprintln(resf, res)
				}
				all = append(all, res)
			}
		}
	}
	summarize(os.Stdout, all, reflectors, counts)
	if err := writeCharts(*jsonOut, *svgOut, all, reflectors, counts); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d run(s) failed; logs in %s", failed, rn.dir)
	}
	if !*keep {
		os.RemoveAll(rn.dir)
	}
	return nil
}

// figures are the columns of the summary and the plot.
var figures = []struct {
	name, unit string
	of         func(result) float64
}{
	{"t_converge", "s", func(r result) float64 { return r.Converge }},
	{"t_churn", "s", func(r result) float64 { return r.Churn }},
	{"rss", "MiB", func(r result) float64 { return r.RSS }},
	{"cpu", "s", func(r result) float64 { return r.CPU }},
}

type key struct {
	r string
	n int
}

func group(rs []result) map[key][]result {
	by := map[key][]result{}
	for _, r := range rs {
		by[key{r.Reflector, r.Clients}] = append(by[key{r.Reflector, r.Clients}], r)
	}
	return by
}

func medianOf(rs []result, f func(result) float64) (med, lo, hi float64) {
	var v []float64
	for _, r := range rs {
		v = append(v, f(r))
	}
	if len(v) == 0 {
		return 0, 0, 0
	}
	return benchproc.Median(v), slices.Min(v), slices.Max(v)
}

// summarize prints the medians (min-max) and Rhizome's ratios to each
// other reflector (median over median) as Markdown.
func summarize(w io.Writer, rs []result, reflectors []string, counts []int) {
	by := group(rs)
	fmt.Fprintln(w, "\n| reflector | clients | runs | t_converge s | t_churn s | RSS MiB | CPU s |")
	fmt.Fprintln(w, "|---|---:|---:|---|---|---|---|")
	for _, n := range counts {
		for _, r := range reflectors {
			g := by[key{r, n}]
			if len(g) == 0 {
				continue
			}
			fmt.Fprintf(w, "| %s | %d | %d |", r, n, len(g))
			for _, f := range figures {
				m, lo, hi := medianOf(g, f.of)
				fmt.Fprintf(w, " %.3g (%.3g-%.3g) |", m, lo, hi)
			}
			fmt.Fprintln(w)
		}
	}
	for _, n := range counts {
		rz := by[key{"rhizome", n}]
		if len(rz) == 0 {
			continue
		}
		for _, other := range reflectors {
			o := by[key{other, n}]
			if other == "rhizome" || len(o) == 0 {
				continue
			}
			fmt.Fprintf(w, "ratio clients=%d rhizome/%s", n, other)
			for _, f := range figures {
				a, _, _ := medianOf(rz, f.of)
				b, _, _ := medianOf(o, f.of)
				fmt.Fprintf(w, " %s=%.2f", f.name, a/b)
			}
			fmt.Fprintln(w)
		}
	}
}

// writeCharts writes the medians and ranges as JSON and renders their
// chart.
func writeCharts(jsonPath, svgPath string, rs []result, reflectors []string, counts []int) error {
	if jsonPath == "" && svgPath == "" || len(rs) == 0 {
		return nil
	}
	by := group(rs)
	stat := func(g []result, f func(result) float64) chart.Stat {
		m, lo, hi := medianOf(g, f)
		return chart.Stat{Median: m, Min: lo, Max: hi}
	}
	var out []chart.RRResult
	for _, n := range counts {
		for _, r := range reflectors {
			g := by[key{r, n}]
			if len(g) == 0 {
				continue
			}
			out = append(out, chart.RRResult{Reflector: r, Clients: n, Runs: len(g),
				Converge: stat(g, figures[0].of), Churn: stat(g, figures[1].of),
				RSSMiB: stat(g, figures[2].of), CPUSeconds: stat(g, figures[3].of)})
		}
	}
	if jsonPath != "" {
		if err := chart.WriteJSON(jsonPath, out); err != nil {
			return err
		}
	}
	if svgPath != "" {
		return os.WriteFile(svgPath, []byte(chart.RRSVG(out)), 0o644)
	}
	return nil
}
