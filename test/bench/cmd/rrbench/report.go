package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// reportTool is subcommand `report`: the summary, ratios, JSON and chart
// of result lines that earlier invocations wrote (-o), so that runs made
// in several invocations (the largest N alone, say) are reported together.
//
//	rrbench report [-json rr.json -svg rr.svg] results.txt...
func reportTool(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	jsonOut := fs.String("json", "", "write the medians and ranges as JSON here")
	svgOut := fs.String("svg", "", "render them as an SVG chart here")
	_ = fs.Parse(args)
	var all []result
	for _, path := range fs.Args() {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(f)
		for ln := 1; sc.Scan(); ln++ {
			if strings.TrimSpace(sc.Text()) == "" {
				continue
			}
			r, err := parseResult(sc.Text())
			if err != nil {
				f.Close()
				return fmt.Errorf("%s:%d: %w", path, ln, err)
			}
			all = append(all, r)
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return err
		}
	}
	if len(all) == 0 {
		return fmt.Errorf("no results in %v", fs.Args())
	}
	var reflectors []string
	var counts []int
	for _, r := range all {
		if !slices.Contains(reflectors, r.Reflector) {
			reflectors = append(reflectors, r.Reflector)
		}
		counts = append(counts, r.Clients)
	}
	slices.Sort(counts)
	counts = slices.Compact(counts)
	summarize(os.Stdout, all, reflectors, counts)
	return writeCharts(*jsonOut, *svgOut, all, reflectors, counts)
}

// parseResult reads a line that result.String wrote.
func parseResult(line string) (result, error) {
	var r result
	f := map[string]string{}
	for _, kv := range strings.Fields(line) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return r, fmt.Errorf("%q is not key=value", kv)
		}
		f[k] = v
	}
	r.Reflector = f["reflector"]
	if r.Reflector == "" {
		return r, fmt.Errorf("no reflector in %q", line)
	}
	var err error
	num := func(k string, dst *float64) {
		if err != nil {
			return
		}
		v, ok := f[k]
		if !ok {
			err = fmt.Errorf("no %s in %q", k, line)
			return
		}
		*dst, err = strconv.ParseFloat(v, 64)
	}
	var clients, updates, passes float64
	num("clients", &clients)
	num("t_converge_s", &r.Converge)
	num("t_churn_s", &r.Churn)
	num("rss_mb", &r.RSS)
	num("cpu_s", &r.CPU)
	num("t_establish_s", &r.Establish)
	num("t_withdraw_s", &r.Withdraw)
	num("t_readvertise_s", &r.Readvertise)
	num("cpu_converge_s", &r.CPUConverge)
	num("updates", &updates)
	num("other_cpu_pct", &r.OtherCPU)
	if err != nil {
		return r, err
	}
	// Written by later versions only.
	if _, ok := f["rss_idle_mb"]; ok {
		num("rss_idle_mb", &r.RSSIdle)
		num("passes", &passes)
		num("pass_mean_ms", &r.PassMean)
	}
	var passesAfter float64
	if _, ok := f["passes_after_start"]; ok {
		num("pass_max_ms", &r.PassMax)
		num("passes_after_start", &passesAfter)
		num("pass_after_start_mean_ms", &r.PassAfterStartMean)
		num("pass_after_start_max_ms", &r.PassAfterStartMax)
	}
	var cpasses, croutes float64
	if _, ok := f["client_routes"]; ok {
		num("client_rss_idle_mb", &r.ClientRSSIdle)
		num("client_rss_mb", &r.ClientRSS)
		num("client_passes", &cpasses)
		num("client_pass_mean_ms", &r.ClientPassMean)
		num("client_pass_max_ms", &r.ClientPassMax)
		num("client_routes", &croutes)
	}
	var cpassesAfter float64
	if _, ok := f["client_passes_after_start"]; ok {
		num("client_passes_after_start", &cpassesAfter)
		num("client_pass_after_start_mean_ms", &r.ClientPassAfterStartMean)
		num("client_pass_after_start_max_ms", &r.ClientPassAfterStartMax)
	}
	r.Clients, r.Updates, r.Passes = int(clients), int64(updates), int64(passes)
	r.ClientPasses, r.ClientRoutes = int64(cpasses), int64(croutes)
	r.PassesAfterStart, r.ClientPassesAfterStart = int64(passesAfter), int64(cpassesAfter)
	return r, err
}
