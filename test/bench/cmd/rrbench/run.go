package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rhizome-net/rhizome/test/bench/benchproc"
	"github.com/rhizome-net/rhizome/test/netns"
)

// result is one run.
type result struct {
	Reflector string `json:"reflector"`
	Clients   int    `json:"clients"`
	Rep       int    `json:"rep"`
	// Converge: from every client announcing at once until every client
	// holds every other client's prefixes.
	Converge float64 `json:"tConvergeSeconds"`
	// Churn = Withdraw + Readvertise: 1 % of the clients close their
	// sessions; until every other client has their prefixes withdrawn;
	// then, once they are back up and announce again, until every client
	// holds everything again.
	Churn       float64 `json:"tChurnSeconds"`
	Withdraw    float64 `json:"tWithdrawSeconds"`
	Readvertise float64 `json:"tReadvertiseSeconds"`
	// Establish: from the clients dialling until all N sessions are up.
	Establish float64 `json:"tEstablishSeconds"`
	// RSS is the reflector's peak resident set (VmHWM), MiB; CPU its CPU
	// seconds over the whole run (start-up included), CPUConverge those
	// of the convergence alone.
	RSS         float64 `json:"rssMiB"`
	CPU         float64 `json:"cpuSeconds"`
	CPUConverge float64 `json:"cpuConvergeSeconds"`
	// Updates are the UPDATE messages the clients received in all.
	Updates int64 `json:"updates"`
	// OtherCPU is what everything else used of the machine during the
	// convergence, % of one core (the API server included).
	OtherCPU float64 `json:"otherCPUPercent"`
	// RSSIdle is the reflector's resident set once idle after the churn,
	// MiB; Passes and PassMean (ms) the Rhizome agent's reconcile passes
	// over the whole run, from its metrics (issue 19 item 3: an agent
	// holding every node of the cluster and their routes).
	RSSIdle  float64 `json:"rssIdleMiB"`
	Passes   int64   `json:"passes,omitempty"`
	PassMean float64 `json:"passMeanMs,omitempty"`
	// PassMax is the upper bound of the slowest pass's histogram bucket
	// (ms; -1 above every bucket); the AfterStart figures are those of
	// the passes from the convergence on (the start-up's first pass
	// configures every session and dominates the whole run's mean).
	PassMax            float64 `json:"passMaxMs,omitempty"`
	PassesAfterStart   int64   `json:"passesAfterStart,omitempty"`
	PassAfterStartMean float64 `json:"passAfterStartMeanMs,omitempty"`
	PassAfterStartMax  float64 `json:"passAfterStartMaxMs,omitempty"`
	// The client agent's figures (rrbench -client, client.go): its
	// resident set once idle at the end and its peak, MiB; its reconcile
	// passes over the run, their mean and the upper bound of the slowest
	// one's histogram bucket (ms; -1 above every bucket); the routes it
	// has programmed. Zero without -client.
	ClientRSSIdle  float64 `json:"clientRssIdleMiB,omitempty"`
	ClientRSS      float64 `json:"clientRssMiB,omitempty"`
	ClientPasses   int64   `json:"clientPasses,omitempty"`
	ClientPassMean float64 `json:"clientPassMeanMs,omitempty"`
	ClientPassMax  float64 `json:"clientPassMaxMs,omitempty"`
	ClientRoutes   int64   `json:"clientRoutes,omitempty"`
	// The client agent's passes from the convergence on, as for the
	// reflector's.
	ClientPassesAfterStart   int64   `json:"clientPassesAfterStart,omitempty"`
	ClientPassAfterStartMean float64 `json:"clientPassAfterStartMeanMs,omitempty"`
	ClientPassAfterStartMax  float64 `json:"clientPassAfterStartMaxMs,omitempty"`
}

func (r result) String() string {
	return fmt.Sprintf("reflector=%s clients=%d t_converge_s=%.3f t_churn_s=%.3f rss_mb=%.1f cpu_s=%.2f t_establish_s=%.3f t_withdraw_s=%.3f t_readvertise_s=%.3f cpu_converge_s=%.2f updates=%d other_cpu_pct=%.0f rss_idle_mb=%.1f passes=%d pass_mean_ms=%.1f pass_max_ms=%g passes_after_start=%d pass_after_start_mean_ms=%.1f pass_after_start_max_ms=%g",
		r.Reflector, r.Clients, r.Converge, r.Churn, r.RSS, r.CPU, r.Establish, r.Withdraw, r.Readvertise, r.CPUConverge, r.Updates, r.OtherCPU, r.RSSIdle, r.Passes, r.PassMean,
		r.PassMax, r.PassesAfterStart, r.PassAfterStartMean, r.PassAfterStartMax) + r.clientFields()
}

// clientFields are the client agent's figures, appended to a line when
// it ran (-client).
func (r result) clientFields() string {
	if r.ClientRoutes == 0 {
		return ""
	}
	return fmt.Sprintf(" client_rss_idle_mb=%.1f client_rss_mb=%.1f client_passes=%d client_pass_mean_ms=%.1f client_pass_max_ms=%g client_routes=%d client_passes_after_start=%d client_pass_after_start_mean_ms=%.1f client_pass_after_start_max_ms=%g",
		r.ClientRSSIdle, r.ClientRSS, r.ClientPasses, r.ClientPassMean, r.ClientPassMax, r.ClientRoutes,
		r.ClientPassesAfterStart, r.ClientPassAfterStartMean, r.ClientPassAfterStartMax)
}

// runner holds what every run needs.
type runner struct {
	self        string
	dir         string
	seq         int
	cluster     *cluster
	rhizomeBin  string
	rhizomeArgs []string
	bBin        string
	bArgs       []string
	timeout     time.Duration
	quiet       time.Duration
	flapPct     float64
	// client runs one more rhizome-agent as an ordinary client of the
	// reflector in every run and reports its figures (client.go).
	client bool
	// profile, if set, is a directory for CPU profiles of the Rhizome
	// reflector's convergence and churn (profileFor long each) and its
	// heap at the end.
	profile    string
	profileFor time.Duration
}

// run measures one reflector with n clients in fresh namespaces.
func (rn *runner) run(ctx context.Context, name string, n int) (res result, err error) {
	rn.seq++
	dir := filepath.Join(rn.dir, fmt.Sprintf("%03d-%s-%d", rn.seq, name, n))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	res = result{Reflector: name, Clients: n}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%s clients=%d (logs in %s): %w", name, n, dir, err)
		}
	}()
	rrNS, err := netns.Create(netns.Name("rzr", "rr"))
	if err != nil {
		return res, err
	}
	defer rrNS.Delete()
	clNS, err := netns.Create(netns.Name("rzr", "cl"))
	if err != nil {
		return res, err
	}
	defer clNS.Delete()
	if err := wire(rrNS, clNS, n, dir); err != nil {
		return res, err
	}

	var rr reflector
	switch name {
	case "bird":
		rr = &birdRR{dir: dir, ns: rrNS.Name, client: rn.client}
	case "rhizome", "rhizome-b":
		bin, extra := rn.rhizomeBin, rn.rhizomeArgs
		if name == "rhizome-b" {
			bin, extra = rn.bBin, rn.bArgs
		}
		if rn.profile != "" {
			extra = append(append([]string{}, extra...), "--pprof-address", pprofAddr)
		}
		rr = &rhizomeRR{r: rn, dir: dir, ns: rrNS.Name, bin: bin, extra: extra}
	default:
		return res, fmt.Errorf("unknown reflector %q", name)
	}
	defer rr.stop()
	if err := rr.start(ctx, n); err != nil {
		return res, err
	}
	var ca *clientAgent
	if rn.client {
		if ca, err = rn.startClientAgent(rrNS, dir); err != nil {
			return res, fmt.Errorf("client agent: %w", err)
		}
		defer ca.stop()
	}
	cl, err := benchproc.Start("clients", filepath.Join(dir, "clients.log"), "ip", "netns", "exec", clNS.Name,
		rn.self, "clients", "-n", strconv.Itoa(n))
	if err != nil {
		return res, err
	}
	defer cl.Stop(3 * time.Second)
	procs := append(rr.procs(), cl)
	rx := benchproc.PIDs(rr.procs()...)
	if _, err := cl.Wait("READY", time.Minute, procs...); err != nil {
		return res, err
	}
	phase := 0
	// step sends a command and waits for its events.
	step := func(cmd string, events ...string) ([]benchproc.Ev, error) {
		phase++
		p := strconv.Itoa(phase)
		if err := cl.Send(cmd + " " + p); err != nil {
			return nil, err
		}
		var out []benchproc.Ev
		for _, e := range events {
			ev, err := cl.Wait(e+"-"+p, rn.timeout, procs...)
			if err != nil {
				if f, ferr := cl.Wait("FAILED-"+p, 0, cl); ferr == nil {
					return nil, fmt.Errorf("%s: %s", cmd, f.Fields["error"])
				}
				return nil, fmt.Errorf("%s: %w", cmd, err)
			}
			if down, derr := cl.Wait("DOWN", 0, cl); derr == nil {
				return nil, fmt.Errorf("the reflector closed client %s's session: %s", down.Fields["client"], down.Fields["error"])
			}
			out = append(out, ev)
		}
		return out, nil
	}

	t0 := time.Now()
	if _, err := step("connect", "UP"); err != nil {
		return res, err
	}
	res.Establish = time.Since(t0).Seconds()
	benchproc.WaitIdle(rx, time.Minute)
	benchproc.WaitQuiet(rn.quiet)

	var prof *profiler
	tag := fmt.Sprintf("%s-%d-%d", name, n, rn.seq)
	if rn.profile != "" && strings.HasPrefix(name, "rhizome") {
		prof = newProfiler(rrNS, rn.profile)
		defer prof.heap(tag + "-heap")
	}
	profiled := func(what string) func() {
		if prof == nil {
			return func() {}
		}
		return prof.cpu(tag+"-"+what, rn.profileFor)
	}
	// The measured phases begin: what the agents' passes were until now
	// (start-up, the sessions coming up) is told apart from what they
	// are during and after the convergence and churn.
	var rrStart passStats
	if strings.HasPrefix(name, "rhizome") {
		var perr error
		if rrStart, perr = readPassStats(rrNS); perr != nil {
			fmt.Fprintf(os.Stderr, "rrbench: %s: reading the agent's pass times: %v\n", name, perr)
		}
	}
	if ca != nil {
		var perr error
		if ca.start, perr = readPassStats(ca.ns); perr != nil {
			fmt.Fprintf(os.Stderr, "rrbench: client agent: reading its pass times: %v\n", perr)
		}
	}
	busy0, ours0 := benchproc.BusyTicks(), benchproc.CPUTicks(benchproc.PIDs(procs...)...)
	cpu0 := benchproc.CPUTicks(rx...)
	waitProf := profiled("converge")
	evs, err := step("announce", "ANNOUNCED", "SAT")
	waitProf()
	if err != nil {
		return res, err
	}
	res.Converge = evs[1].T.Sub(evs[0].T).Seconds()
	res.CPUConverge = float64(benchproc.CPUTicks(rx...)-cpu0) / benchproc.ClkTck
	res.OtherCPU = benchproc.OtherPct(busy0, ours0, benchproc.BusyTicks(), benchproc.CPUTicks(benchproc.PIDs(procs...)...), time.Duration(res.Converge*float64(time.Second)))

	// What the reflector does after the clients hold everything (a
	// Rhizome reflector stayed busy for minutes at 1,000 clients).
	profiled("tail")()
	benchproc.WaitIdle(rx, 2*time.Minute)
	benchproc.WaitQuiet(rn.quiet)
	k := max(1, int(float64(n)*rn.flapPct/100+0.5))
	waitProf = profiled("churn")
	if evs, err = step("flap "+strconv.Itoa(k), "FLAPPED", "SAT"); err != nil {
		return res, err
	}
	res.Withdraw = evs[1].T.Sub(evs[0].T).Seconds()
	if evs, err = step("rejoin", "UP", "ANNOUNCED", "SAT"); err != nil {
		return res, err
	}
	res.Readvertise = evs[2].T.Sub(evs[1].T).Seconds()
	res.Churn = res.Withdraw + res.Readvertise
	waitProf()
	if evs, err = step("stats", "STATS"); err == nil {
		res.Updates, _ = strconv.ParseInt(evs[0].Fields["updates"], 10, 64)
	}
	benchproc.WaitIdle(rx, time.Minute)
	for _, pid := range rx {
		res.RSS += float64(benchproc.VmHWM(pid)) / 1024
		res.RSSIdle += float64(benchproc.VmRSS(pid)) / 1024
	}
	res.CPU = float64(benchproc.CPUTicks(rx...)) / benchproc.ClkTck
	if strings.HasPrefix(name, "rhizome") {
		if s, err := readPassStats(rrNS); err != nil {
			fmt.Fprintf(os.Stderr, "rrbench: %s: reading the agent's pass times: %v\n", name, err)
		} else {
			res.Passes, res.PassMean, res.PassMax = s.figures()
			if after, err := s.since(rrStart); err != nil {
				fmt.Fprintf(os.Stderr, "rrbench: %s: the agent's passes after the start: %v\n", name, err)
			} else {
				res.PassesAfterStart, res.PassAfterStartMean, res.PassAfterStartMax = after.figures()
			}
		}
	}
	if ca != nil {
		if err := ca.measure(&res, wantRoutes(n), rn.timeout); err != nil {
			return res, fmt.Errorf("client agent: %w", err)
		}
	}
	return res, nil
}

// wire joins the two namespaces and gives the clients their addresses.
func wire(rr, cl *netns.NS, n int, dir string) error {
	if err := netns.Veth(rr, "rr0", cl, "cl0"); err != nil {
		return err
	}
	if err := netns.AddAddr(rr, "rr0", netip.PrefixFrom(netip.MustParseAddr(rrAddr), linkBits)); err != nil {
		return err
	}
	if err := netns.AddAddr(cl, "cl0", netip.PrefixFrom(netip.MustParseAddr(gwAddr), linkBits)); err != nil {
		return err
	}
	if err := netns.AddRoute(rr, netip.MustParsePrefix(clientNet), netip.MustParseAddr(gwAddr)); err != nil {
		return err
	}
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "addr add %s/32 dev cl0\n", clientAddr(i))
	}
	batch := filepath.Join(dir, "addrs.batch")
	if err := os.WriteFile(batch, []byte(b.String()), 0o644); err != nil {
		return err
	}
	if out, err := exec.Command("ip", "-n", cl.Name, "-batch", batch).CombinedOutput(); err != nil {
		return fmt.Errorf("adding the clients' addresses: %w: %s", err, out)
	}
	return nil
}
