//go:build privileged

package bfd

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rhizome-net/rhizome/test/netns"
)

// The CPU benchmark runs each side of 100 sessions in a process of its
// own, so that getrusage of the measured side counts its BFD alone: the
// same Manager and UDP transport the agent runs, and nothing else.
const (
	cpuRoleEnv = "RHIZOME_BFD_CPU_ROLE" // "measured" or "peer"
	cpuArgsEnv = "RHIZOME_BFD_CPU_ARGS" // locals;remotes;interval;mult;window
)

func TestMain(m *testing.M) {
	if role := os.Getenv(cpuRoleEnv); role != "" {
		if err := runCPUSide(role, os.Getenv(cpuArgsEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "bfd cpu side:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// BenchmarkSessionsCPU measures the CPU one process spends on 100 BFD
// sessions that are Up, at each setting of RHIZOME_BENCH_BFD_CPU (default
// "300x3,100x3"), over RHIZOME_BENCH_WINDOW seconds (default 20). One line
// per setting on stdout:
//
//	bfd_cpu=100x3 sessions=100 cpu_pct=1.52 per_session_pct=0.0152 pkts_per_s=2000 us_per_pkt=7.6
//
// cpu_pct is of one core; a packet is one sent or received.
func BenchmarkSessionsCPU(b *testing.B) {
	settings := strings.Split(envOr("RHIZOME_BENCH_BFD_CPU", "300x3,100x3"), ",")
	window, _ := strconv.Atoi(envOr("RHIZOME_BENCH_WINDOW", "20"))
	const n = 100
	for _, s := range settings {
		b.Run(s, func(b *testing.B) {
			ivs, ms, _ := strings.Cut(s, "x")
			ivMS, err1 := strconv.Atoi(ivs)
			mult, err2 := strconv.Atoi(ms)
			if err1 != nil || err2 != nil {
				b.Fatalf("setting %q: want TXxMULT", s)
			}
			a, p := netns.New(b, "bfdcpua"), netns.New(b, "bfdcpup")
			if err := netns.Veth(a, "eth0", p, "eth0"); err != nil {
				b.Fatal(err)
			}
			var la, lp []string
			for i := 1; i <= n; i++ {
				x, y := netip.AddrFrom4([4]byte{10, 79, 1, byte(i)}), netip.AddrFrom4([4]byte{10, 79, 2, byte(i)})
				if err := netns.AddAddr(a, "eth0", netip.PrefixFrom(x, 16)); err != nil {
					b.Fatal(err)
				}
				if err := netns.AddAddr(p, "eth0", netip.PrefixFrom(y, 16)); err != nil {
					b.Fatal(err)
				}
				la, lp = append(la, x.String()), append(lp, y.String())
			}
			args := func(locals, remotes []string) string {
				return fmt.Sprintf("%s;%s;%d;%d;%d", strings.Join(locals, ","), strings.Join(remotes, ","), ivMS, mult, window)
			}
			self, err := os.Executable()
			if err != nil {
				b.Fatal(err)
			}
			peer := p.Cmd(context.Background(), self, "-test.run=^$")
			peer.Env = append(os.Environ(), cpuRoleEnv+"=peer", cpuArgsEnv+"="+args(lp, la))
			peer.Stderr = os.Stderr
			peer.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := peer.Start(); err != nil {
				b.Fatal(err)
			}
			defer func() { peer.Process.Kill(); peer.Wait() }()
			measured := a.Cmd(context.Background(), self, "-test.run=^$")
			measured.Env = append(os.Environ(), cpuRoleEnv+"=measured", cpuArgsEnv+"="+args(la, lp))
			measured.Stderr = os.Stderr
			out, err := measured.Output()
			if err != nil {
				b.Fatalf("measured side: %v", err)
			}
			res := map[string]float64{}
			for _, f := range strings.Fields(string(out)) {
				k, v, _ := strings.Cut(f, "=")
				res[k], _ = strconv.ParseFloat(v, 64)
			}
			secs := res["seconds"]
			cpu := res["cpu_ns"] / 1e9 / secs * 100
			pkts := (res["sent"] + res["received"]) / secs
			fmt.Fprintf(os.Stdout, "bfd_cpu=%s sessions=%d cpu_pct=%.2f per_session_pct=%.4f pkts_per_s=%.0f us_per_pkt=%.1f\n",
				s, n, cpu, cpu/n, pkts, res["cpu_ns"]/1e3/(res["sent"]+res["received"]))
		})
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// runCPUSide runs one side's sessions. The measured side waits for all to
// be Up, then counts its own CPU time and packets over the window and
// prints them; the peer runs until killed.
func runCPUSide(role, spec string) error {
	f := strings.Split(spec, ";")
	if len(f) != 5 {
		return fmt.Errorf("bad args %q", spec)
	}
	locals, remotes := strings.Split(f[0], ","), strings.Split(f[1], ",")
	ivMS, _ := strconv.Atoi(f[2])
	mult, _ := strconv.Atoi(f[3])
	window, _ := strconv.Atoi(f[4])
	m, err := NewManager(Config{Transport: &UDP{}, Logger: discardLogger()})
	if err != nil {
		return err
	}
	defer m.Close()
	iv := time.Duration(ivMS) * time.Millisecond
	for i := range locals {
		p := Peer{Remote: netip.MustParseAddr(remotes[i]), Local: netip.MustParseAddr(locals[i]),
			Timers: Timers{MinTx: iv, MinRx: iv, Multiplier: uint8(mult)}}
		if err := m.Set(p); err != nil {
			return err
		}
	}
	if role == "peer" {
		select {}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		up := 0
		for _, s := range m.Sessions() {
			if s.State == Up && s.TxInterval == iv {
				up++
			}
		}
		if up == len(locals) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d sessions Up", up, len(locals))
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // polls done, steady state
	st0, ru0, t0 := m.Stats(), rusage(), time.Now()
	time.Sleep(time.Duration(window) * time.Second)
	st1, ru1, el := m.Stats(), rusage(), time.Since(t0)
	downs := uint64(0)
	for _, s := range m.Sessions() {
		downs += s.Downs
	}
	w := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(w, "seconds=%f cpu_ns=%d sent=%d received=%d downs=%d\n", el.Seconds(), ru1-ru0, st1.Sent-st0.Sent, st1.Received-st0.Received, downs)
	return w.Flush()
}

// rusage is the process's user and system CPU time in nanoseconds.
func rusage() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}
