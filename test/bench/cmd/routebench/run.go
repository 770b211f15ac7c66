package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/rhizome-net/rhizome/test/bench/benchproc"
	"github.com/rhizome-net/rhizome/test/netns"
)

// The lab of one run: two fresh namespaces joined by a veth pair.
//
//	rzb<pid>-feed  feeder AS 65001  172.31.255.1/30 ==veth== 172.31.255.2/30  receiver AS 65002  rzb<pid>-recv
//	                                                                          + route counter
const (
	feedIP, recvIP = "172.31.255.1", "172.31.255.2"
	feedAS, recvAS = 65001, 65002
	feedDev        = "feed0"
	recvDev        = "recv0"
)

// result is one run's line.
type result struct {
	receiver          string
	n                 int
	rep               int // round of the interleaving (pairs runs for ratios)
	install, withdraw time.Duration
	first             time.Duration
	rssKB             int
	cpu               float64
	otherPct          float64
}

func (r result) String() string {
	return fmt.Sprintf("receiver=%s n=%d t_install_s=%.3f t_withdraw_s=%.3f rss_mb=%.1f t_first_s=%.3f cpu_s=%.2f other_cpu_pct=%.0f",
		r.receiver, r.n, r.install.Seconds(), r.withdraw.Seconds(), float64(r.rssKB)/1024, r.first.Seconds(), r.cpu, r.otherPct)
}

// runner holds what every run needs.
type runner struct {
	self, rhizomeBin string
	rhizomeArgs      []string
	rhizomeBArgs     []string // receiver rhizome-b (A/B runs)
	rhizomeBBin      string
	settle, timeout  time.Duration
	dir              string
	seq              int
}

// protoOf is the rtm_protocol whose routes the counter counts.
var protoOf = map[string]int{"bird": 12, "frr": 186, "ipbatch": 4, "netlink-batched": 4, "rhizome": 114, "rhizome-b": 114}

func (rn *runner) run(ctx context.Context, receiver string, n int) (res result, err error) {
	rn.seq++
	dir := filepath.Join(rn.dir, fmt.Sprintf("%03d-%s-%d", rn.seq, receiver, n))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	res = result{receiver: receiver, n: n}
	feed, err := netns.Create(netns.Name("rzb", "feed"))
	if err != nil {
		return res, err
	}
	defer feed.Delete()
	recv, err := netns.Create(netns.Name("rzb", "recv"))
	if err != nil {
		return res, err
	}
	defer recv.Delete()
	if err := netns.Veth(feed, feedDev, recv, recvDev); err != nil {
		return res, err
	}
	if err := netns.AddAddr(feed, feedDev, netip.MustParsePrefix(feedIP+"/30")); err != nil {
		return res, err
	}
	if err := netns.AddAddr(recv, recvDev, netip.MustParsePrefix(recvIP+"/30")); err != nil {
		return res, err
	}
	var procs []*benchproc.Proc
	defer func() {
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].Stop(3 * time.Second)
		}
		if err != nil {
			err = fmt.Errorf("%s n=%d (logs in %s): %w", receiver, n, dir, err)
		}
	}()
	start := func(ns *netns.NS, name string, args ...string) (*benchproc.Proc, error) {
		p, err := benchproc.Start(name, filepath.Join(dir, name+".log"), append([]string{"ip", "netns", "exec", ns.Name}, args...)...)
		if err == nil {
			procs = append(procs, p)
		}
		return p, err
	}

	counter, err := start(recv, "count", rn.self, "count", "-target", strconv.Itoa(n), "-proto", strconv.Itoa(protoOf[receiver]))
	if err != nil {
		return res, err
	}
	if e, err := counter.Wait("READY", 10*time.Second); err != nil {
		return res, err
	} else if e.Fields["count"] != "0" {
		return res, fmt.Errorf("receiver namespace already holds %s matching routes", e.Fields["count"])
	}

	var rx []*benchproc.Proc // the receiver's processes (RSS, CPU)
	var t0, t0w time.Time
	switch receiver {
	case "bird", "frr", "rhizome", "rhizome-b":
		switch receiver {
		case "bird":
			rx, err = rn.startBird(dir, recv, start)
		case "frr":
			rx, err = rn.startFRR(dir, recv, start)
		case "rhizome", "rhizome-b":
			bin, extra := rn.rhizomeBin, rn.rhizomeArgs
			if receiver == "rhizome-b" {
				bin, extra = rn.rhizomeBBin, rn.rhizomeBArgs
			}
			var p *benchproc.Proc
			p, err = start(recv, receiver, append([]string{bin, "-local", recvIP, "-peer", feedIP,
				"-as", strconv.Itoa(recvAS), "-peer-as", strconv.Itoa(feedAS)}, extra...)...)
			rx = []*benchproc.Proc{p}
		}
		if err != nil {
			return res, err
		}
		// Let the daemon finish starting: we measure installing routes, not
		// startup (FRR's bgpd holds routes that arrive in its first ~0.7 s).
		time.Sleep(rn.settle)
		for _, p := range rx {
			if !p.Alive() {
				return res, fmt.Errorf("%s died at startup", p.Name)
			}
		}
		otherStart, oursStart := benchproc.BusyTicks(), rn.ticks(append(rx, counter)...)
		fd, err := start(feed, "feeder", rn.self, "feeder", "-n", strconv.Itoa(n), "-local", feedIP, "-peer", recvIP,
			"-as", strconv.Itoa(feedAS), "-peer-as", strconv.Itoa(recvAS))
		if err != nil {
			return res, err
		}
		est, err := fd.Wait("ESTABLISHED", 2*time.Minute, rx...)
		if err != nil {
			return res, err
		}
		t0 = est.T
		full, err := counter.Wait("FULL", rn.timeout, append(rx, fd)...)
		if err != nil {
			return res, err
		}
		res.install = full.T.Sub(t0)
		oursEnd := rn.ticks(append(rx, counter, fd)...)
		res.otherPct = otherPct(otherStart, oursStart, oursEnd, full.T.Sub(t0)+rn.settle)
		benchproc.WaitIdle(rn.pids(rx), 30*time.Second)
		if err := fd.Cmd.Process.Signal(syscall.SIGUSR1); err != nil {
			return res, err
		}
		w, err := fd.Wait("WITHDRAW", 10*time.Second, fd)
		if err != nil {
			return res, err
		}
		t0w = w.T
	case "ipbatch":
		add, del := filepath.Join(dir, "add.batch"), filepath.Join(dir, "del.batch")
		if err := writeIPBatch(add, n, feedIP, recvDev, false); err != nil {
			return res, err
		}
		if err := writeIPBatch(del, n, feedIP, recvDev, true); err != nil {
			return res, err
		}
		t0, err = rn.ipBatch(recv, add, &res)
		if err != nil {
			return res, err
		}
		full, err := counter.Wait("FULL", rn.timeout)
		if err != nil {
			return res, err
		}
		res.install = full.T.Sub(t0)
		if t0w, err = rn.ipBatch(recv, del, &res); err != nil {
			return res, err
		}
	case "netlink-batched":
		p, err := start(recv, "nlbatch-add", rn.self, "nlbatch", "-n", strconv.Itoa(n), "-gw", feedIP, "-dev", recvDev)
		if err != nil {
			return res, err
		}
		s, err := p.Wait("START", time.Minute)
		if err != nil {
			return res, err
		}
		full, err := counter.Wait("FULL", rn.timeout, p)
		if err != nil {
			return res, err
		}
		t0, res.install = s.T, full.T.Sub(s.T)
		rn.addDone(p, &res)
		p, err = start(recv, "nlbatch-del", rn.self, "nlbatch", "-del", "-n", strconv.Itoa(n), "-gw", feedIP, "-dev", recvDev)
		if err != nil {
			return res, err
		}
		s, err = p.Wait("START", time.Minute)
		if err != nil {
			return res, err
		}
		t0w = s.T
		rn.addDone(p, &res)
	default:
		return res, fmt.Errorf("unknown receiver %q", receiver)
	}
	if first, err := counter.Wait("FIRST", time.Second); err == nil {
		res.first = first.T.Sub(t0)
	}
	empty, err := counter.Wait("EMPTY", rn.timeout, rx...)
	if err != nil {
		return res, err
	}
	res.withdraw = empty.T.Sub(t0w)
	if len(rx) > 0 {
		pids := rn.pids(rx)
		for _, p := range pids {
			res.rssKB += benchproc.VmHWM(p)
		}
		res.cpu = float64(benchproc.CPUTicks(pids...)) / benchproc.ClkTck
	}
	return res, nil
}

func (rn *runner) pids(ps []*benchproc.Proc) []int {
	var out []int
	for _, p := range ps {
		out = append(out, benchproc.Tree(p.PID())...)
	}
	return out
}

func (rn *runner) ticks(ps ...*benchproc.Proc) int64 { return benchproc.CPUTicks(rn.pids(ps)...) }

// otherPct is the CPU used by everything but our processes during d, in %
// of one core: a contamination indicator (a few % on an idle machine).
func otherPct(busy0, ours0, ours1 int64, d time.Duration) float64 {
	other := float64(benchproc.BusyTicks()-busy0-(ours1-ours0)) / benchproc.ClkTck
	return max(0, 100*other/d.Seconds())
}

// ipBatch runs `ip -batch file` in ns; it returns its start time.
func (rn *runner) ipBatch(ns *netns.NS, file string, res *result) (time.Time, error) {
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "ip", "-batch", file)
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return t0, fmt.Errorf("ip -batch %s: %w: %s", filepath.Base(file), err, out)
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		res.rssKB = max(res.rssKB, int(ru.Maxrss))
		res.cpu += float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
	}
	return t0, nil
}

// addDone waits for an nlbatch process and adds its CPU and RSS.
func (rn *runner) addDone(p *benchproc.Proc, res *result) {
	if e, err := p.Wait("DONE", rn.timeout); err == nil {
		c, _ := strconv.ParseFloat(e.Fields["cpu_s"], 64)
		kb, _ := strconv.Atoi(e.Fields["vmhwm_kb"])
		res.cpu += c
		res.rssKB = max(res.rssKB, kb)
	}
	<-p.Done()
}

func (rn *runner) startBird(dir string, ns *netns.NS, start func(*netns.NS, string, ...string) (*benchproc.Proc, error)) ([]*benchproc.Proc, error) {
	conf := filepath.Join(dir, "bird.conf")
	err := os.WriteFile(conf, fmt.Appendf(nil, `log "%s/bird.log" { info, remote, warning, error, auth, fatal, bug };
router id %s;
protocol device { scan time 10; }
protocol kernel { ipv4 { import none; export all; }; learn off; scan time 60; }
protocol bgp feeder {
	local %s as %d;
	neighbor %s as %d;
	passive on;
	ipv4 { import all; export none; };
}
`, dir, recvIP, recvIP, recvAS, feedIP, feedAS), 0o644)
	if err != nil {
		return nil, err
	}
	p, err := start(ns, "bird", "bird", "-f", "-c", conf, "-s", filepath.Join(dir, "bird.ctl"), "-P", filepath.Join(dir, "bird.pid"))
	return []*benchproc.Proc{p}, err
}

// startFRR starts zebra and bgpd as Debian's defaults do (zebra -s
// 90000000: its netlink buffer), with private paths. The daemons drop to
// user frr, so their directory belongs to frr.
func (rn *runner) startFRR(dir string, ns *netns.NS, start func(*netns.NS, string, ...string) (*benchproc.Proc, error)) ([]*benchproc.Proc, error) {
	fd := filepath.Join(dir, "frr")
	if err := os.MkdirAll(fd, 0o755); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(fd, "zebra.conf"), fmt.Appendf(nil, "hostname recv\nlog file %s/zebra.log informational\n", fd), 0o644); err != nil {
		return nil, err
	}
	bgpd := fmt.Sprintf(`hostname recv
log file %s/bgpd.log informational
router bgp %d
 bgp router-id %s
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor %s remote-as %d
 neighbor %s passive
 address-family ipv4 unicast
  neighbor %s activate
 exit-address-family
`, fd, recvAS, recvIP, feedIP, feedAS, feedIP, feedIP)
	if err := os.WriteFile(filepath.Join(fd, "bgpd.conf"), []byte(bgpd), 0o644); err != nil {
		return nil, err
	}
	u, err := user.Lookup("frr")
	if err != nil {
		return nil, fmt.Errorf("FRR's user: %w (is frr installed? make deps)", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	err = filepath.Walk(fd, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chown(p, uid, gid)
	})
	if err != nil {
		return nil, err
	}
	common := []string{"-z", filepath.Join(fd, "zserv.api"), "--vty_socket", fd, "-A", "127.0.0.1", "-P", "0"}
	zebra, err := start(ns, "zebra", append([]string{"/usr/lib/frr/zebra", "-f", filepath.Join(fd, "zebra.conf"),
		"-i", filepath.Join(fd, "zebra.pid"), "-s", "90000000"}, common...)...)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(fd, "zserv.api")); err == nil {
			break
		}
		if time.Now().After(deadline) || !zebra.Alive() {
			return nil, errors.New("zebra did not come up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	bgp, err := start(ns, "bgpd", append([]string{"/usr/lib/frr/bgpd", "-f", filepath.Join(fd, "bgpd.conf"),
		"-i", filepath.Join(fd, "bgpd.pid")}, common...)...)
	return []*benchproc.Proc{zebra, bgp}, err
}
