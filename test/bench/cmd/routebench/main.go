// Command routebench measures how fast route receivers get N BGP-learned
// IPv4 routes into the Linux kernel and out again: BIRD, FRR, `ip -batch`,
// the batched-netlink limit and Rhizome, interleaved in one invocation so
// that they share the machine's conditions. See test/bench/README.md.
//
//	routebench [-n 10000,100000] [-reps 3] [-receivers bird,frr,ipbatch,netlink-batched,rhizome]
//
// It prints one line per run,
//
//	receiver=NAME n=N t_install_s=S t_withdraw_s=S rss_mb=M ...
//
// and, at the end, the medians and Rhizome's ratios to the others. The
// subcommands `feeder`, `count` and `nlbatch` are the tools it runs inside
// the lab's namespaces (this same binary).
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
	if len(os.Args) > 1 {
		var err error
		switch os.Args[1] {
		case "feeder":
			err = feeder(os.Args[2:])
		case "count":
			err = count(os.Args[2:])
		case "nlbatch":
			err = nlbatch(os.Args[2:])
		default:
			err = matrix(os.Args[1:])
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "routebench:", err)
			os.Exit(1)
		}
		return
	}
	if err := matrix(nil); err != nil {
		fmt.Fprintln(os.Stderr, "routebench:", err)
		os.Exit(1)
	}
}

func matrix(args []string) error {
	fs := flag.NewFlagSet("routebench", flag.ExitOnError)
	ns := fs.String("n", "10000,100000", "route counts, comma-separated")
	reps := fs.Int("reps", 3, "runs per receiver and count")
	recvs := fs.String("receivers", "bird,frr,ipbatch,netlink-batched,rhizome", "receivers, comma-separated")
	settle := fs.Duration("settle", 2*time.Second, "how long a BGP receiver runs before the feeder connects")
	timeout := fs.Duration("timeout", 5*time.Minute, "per wait")
	quiet := fs.Duration("quiet-max", time.Minute, "before each run, wait up to this long for the machine to be quiet")
	keep := fs.Bool("keep", false, "keep the logs of successful runs")
	out := fs.String("o", "", "also append result lines to this file")
	jsonOut := fs.String("json", "", "write the medians and ranges per receiver and size to this JSON file")
	svgOut := fs.String("svg", "", "render them as an SVG chart into this file (docs/benchmarks.md)")
	rhizome := fs.String("rhizome-bin", "", "the rhizome receiver (default: rhizome-bench-receiver next to this binary)")
	rhizomeArgs := fs.String("rhizome-args", "", "extra flags for the rhizome receiver, space-separated (e.g. -gc 400)")
	rhizomeBArgs := fs.String("rhizome-b-args", "", "flags of receiver rhizome-b: the rhizome receiver again, for an A/B comparison in one invocation (add rhizome-b to -receivers)")
	rhizomeBBin := fs.String("rhizome-b-bin", "", "binary of receiver rhizome-b (default: -rhizome-bin), to compare two builds")
	_ = fs.Parse(args)
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (network namespaces)")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	rn := &runner{self: self, rhizomeBin: *rhizome, rhizomeArgs: strings.Fields(*rhizomeArgs), rhizomeBArgs: strings.Fields(*rhizomeBArgs), rhizomeBBin: *rhizomeBBin, settle: *settle, timeout: *timeout}
	if rn.rhizomeBin == "" {
		rn.rhizomeBin = filepath.Join(filepath.Dir(self), "rhizome-bench-receiver")
	}
	if rn.rhizomeBBin == "" {
		rn.rhizomeBBin = rn.rhizomeBin
	}
	var counts []int
	for _, s := range strings.Split(*ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("bad -n %q", s)
		}
		counts = append(counts, n)
	}
	receivers := strings.Split(*recvs, ",")
	for _, r := range receivers {
		if _, ok := protoOf[r]; !ok {
			return fmt.Errorf("unknown receiver %q", r)
		}
	}
	if slices.Contains(receivers, "rhizome") || slices.Contains(receivers, "rhizome-b") {
		if _, err := os.Stat(rn.rhizomeBin); err != nil {
			return fmt.Errorf("rhizome receiver: %w (make bench-routes builds it)", err)
		}
	}
	netns.Sweep("rzb")
	if rn.dir, err = os.MkdirTemp("", "routebench-"); err != nil {
		return err
	}
	// FRR's daemons run as user frr and must reach their run directory.
	if err := os.Chmod(rn.dir, 0o711); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var resf *os.File
	if *out != "" {
		if resf, err = os.OpenFile(*out, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err != nil {
			return err
		}
		defer resf.Close()
	}
	fmt.Fprintf(os.Stderr, "routebench: %d runs, logs in %s\n", len(counts)**reps*len(receivers), rn.dir)
	var results []result
	failed := 0
	for _, n := range counts {
		for rep := 1; rep <= *reps; rep++ {
			for _, r := range receivers {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				benchproc.WaitQuiet(*quiet)
				res, err := rn.run(ctx, r, n)
				res.rep = rep
				if err != nil {
					failed++
					fmt.Fprintf(os.Stderr, "routebench: run failed: %v\n", err)
					continue
				}
				fmt.Println(res)
				if resf != nil {
					fmt.Fprintln(resf, res)
				}
				results = append(results, res)
			}
		}
	}
	summarize(os.Stdout, results, receivers, counts)
	if err := writeCharts(*jsonOut, *svgOut, results, receivers, counts); err != nil {
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

// writeCharts writes the summary as JSON and renders its chart.
func writeCharts(jsonPath, svgPath string, results []result, receivers []string, counts []int) error {
	if jsonPath == "" && svgPath == "" {
		return nil
	}
	var rs []chart.RouteResult
	for _, n := range counts {
		for _, r := range receivers {
			var ins, wd, rss, cpu []float64
			for _, x := range results {
				if x.receiver == r && x.n == n {
					ins, wd = append(ins, x.install.Seconds()), append(wd, x.withdraw.Seconds())
					rss, cpu = append(rss, float64(x.rssKB)/1024), append(cpu, x.cpu)
				}
			}
			if len(ins) == 0 {
				continue
			}
			rs = append(rs, chart.RouteResult{Receiver: r, Routes: n, Runs: len(ins),
				Install:  chart.Stat{Median: benchproc.Median(ins), Min: slices.Min(ins), Max: slices.Max(ins)},
				Withdraw: chart.Stat{Median: benchproc.Median(wd), Min: slices.Min(wd), Max: slices.Max(wd)},
				RSSMiB:   benchproc.Median(rss), CPUSeconds: benchproc.Median(cpu)})
		}
	}
	if jsonPath != "" {
		if err := chart.WriteJSON(jsonPath, rs); err != nil {
			return err
		}
	}
	if svgPath != "" {
		return os.WriteFile(svgPath, []byte(chart.RoutesSVG(rs)), 0o644)
	}
	return nil
}

// summarize prints the medians and Rhizome's ratios as Markdown.
func summarize(w io.Writer, results []result, receivers []string, counts []int) {
	type key struct {
		r string
		n int
	}
	type agg struct {
		install, withdraw, rss, cpu []float64
		byRep                       map[int]result
	}
	by := map[key]*agg{}
	for _, r := range results {
		k := key{r.receiver, r.n}
		if by[k] == nil {
			by[k] = &agg{byRep: map[int]result{}}
		}
		a := by[k]
		a.byRep[r.rep] = r
		a.install = append(a.install, r.install.Seconds())
		a.withdraw = append(a.withdraw, r.withdraw.Seconds())
		a.rss = append(a.rss, float64(r.rssKB)/1024)
		a.cpu = append(a.cpu, r.cpu)
	}
	fmt.Fprintln(w, "\n| receiver | N | runs | t_install median s (min-max) | t_withdraw median s (min-max) | RSS MiB | CPU s |")
	fmt.Fprintln(w, "|---|---:|---:|---|---|---:|---:|")
	for _, n := range counts {
		for _, r := range receivers {
			a := by[key{r, n}]
			if a == nil {
				continue
			}
			fmt.Fprintf(w, "| %s | %d | %d | %.3f (%.3f-%.3f) | %.3f (%.3f-%.3f) | %.1f | %.2f |\n", r, n, len(a.install),
				benchproc.Median(a.install), slices.Min(a.install), slices.Max(a.install),
				benchproc.Median(a.withdraw), slices.Min(a.withdraw), slices.Max(a.withdraw), benchproc.Median(a.rss), benchproc.Median(a.cpu))
		}
	}
	for _, n := range counts {
		rz := by[key{"rhizome", n}]
		if rz == nil {
			continue
		}
		for _, other := range receivers {
			o := by[key{other, n}]
			if other == "rhizome" || o == nil {
				continue
			}
			// Paired ratios: each round runs every receiver back to back,
			// so a round's ratio cancels the machine's slower drifts.
			var pi, pw []float64
			for rep, a := range rz.byRep {
				if b, ok := o.byRep[rep]; ok {
					pi = append(pi, a.install.Seconds()/b.install.Seconds())
					pw = append(pw, a.withdraw.Seconds()/b.withdraw.Seconds())
				}
			}
			fmt.Fprintf(w, "ratio n=%d rhizome/%s install=%.2f withdraw=%.2f", n, other,
				benchproc.Median(rz.install)/benchproc.Median(o.install), benchproc.Median(rz.withdraw)/benchproc.Median(o.withdraw))
			if len(pi) > 0 {
				fmt.Fprintf(w, " paired_install=%.2f (%.2f-%.2f) paired_withdraw=%.2f (%.2f-%.2f) rounds=%d",
					benchproc.Median(pi), slices.Min(pi), slices.Max(pi), benchproc.Median(pw), slices.Min(pw), slices.Max(pw), len(pi))
			}
			fmt.Fprintln(w)
		}
	}
}
