// Package benchproc runs and watches the processes of Rhizome's
// benchmarks (test/bench): tools that print timestamped event lines, their
// CPU time and peak memory from /proc, and waits for a quiet machine.
// Every tool of a benchmark runs on one machine, so their timestamps
// compare directly.
package benchproc

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Event prints "NAME t_ns=<now> k=v ..." on stdout, one write per line:
// what Proc.Wait reads from a tool.
func Event(name string, kv ...any) {
	var b strings.Builder
	fmt.Fprintf(&b, "%s t_ns=%d", name, time.Now().UnixNano())
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, " %v=%v", kv[i], kv[i+1])
	}
	b.WriteByte('\n')
	os.Stdout.WriteString(b.String())
}

// Ev is an event line read from a tool.
type Ev struct {
	T      time.Time
	Fields map[string]string
}

// Proc is a process a benchmark started (inside a namespace through `ip
// netns exec`, which execs: the PID is the tool's own). Its event lines are
// collected; everything it prints goes to its log file too. Stdin is a pipe
// the harness may write commands to.
type Proc struct {
	Name  string
	Cmd   *exec.Cmd
	Stdin io.WriteCloser
	mu    sync.Mutex
	evs   map[string]Ev
	note  chan struct{}
	done  chan struct{}
	err   error
}

// Start starts args[0] with args[1:], logging to logPath.
func Start(name, logPath string, args ...string) (*Proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	p := &Proc{Name: name, Cmd: exec.Command(args[0], args[1:]...), evs: map[string]Ev{},
		note: make(chan struct{}, 1), done: make(chan struct{})}
	out, err := p.Cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if p.Stdin, err = p.Cmd.StdinPipe(); err != nil {
		logf.Close()
		return nil, err
	}
	p.Cmd.Stderr = logf
	// The tools die with the harness even if it is killed.
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.Cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		sc := bufio.NewScanner(io.TeeReader(out, logf))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 2 || !strings.HasPrefix(f[1], "t_ns=") {
				continue
			}
			ns, _ := strconv.ParseInt(strings.TrimPrefix(f[1], "t_ns="), 10, 64)
			e := Ev{T: time.Unix(0, ns), Fields: map[string]string{}}
			for _, kv := range f[2:] {
				k, v, _ := strings.Cut(kv, "=")
				e.Fields[k] = v
			}
			p.mu.Lock()
			if _, seen := p.evs[f[0]]; !seen {
				p.evs[f[0]] = e
			}
			p.mu.Unlock()
			select {
			case p.note <- struct{}{}:
			default:
			}
		}
		// Drain what a scanner error left, so the tool never blocks on a
		// full pipe.
		_, _ = io.Copy(logf, out)
		p.err = p.Cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// Wait returns the first event named name, failing after timeout or when
// the process (or any of others) exits first.
func (p *Proc) Wait(name string, timeout time.Duration, others ...*Proc) (Ev, error) {
	deadline := time.After(timeout)
	for {
		p.mu.Lock()
		e, ok := p.evs[name]
		p.mu.Unlock()
		if ok {
			return e, nil
		}
		for _, o := range append([]*Proc{p}, others...) {
			select {
			case <-o.done:
				p.mu.Lock()
				e, ok := p.evs[name]
				p.mu.Unlock()
				if ok {
					return e, nil
				}
				return Ev{}, fmt.Errorf("%s exited (%v) while waiting for %s from %s", o.Name, o.err, name, p.Name)
			default:
			}
		}
		select {
		case <-p.note:
		case <-deadline:
			return Ev{}, fmt.Errorf("timed out after %v waiting for %s from %s", timeout, name, p.Name)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Send writes one command line to the process's stdin.
func (p *Proc) Send(line string) error {
	_, err := io.WriteString(p.Stdin, line+"\n")
	return err
}

// PID is the process's ID.
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Alive reports whether the process still runs.
func (p *Proc) Alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM, then SIGKILL after grace, to this process only.
func (p *Proc) Stop(grace time.Duration) {
	if !p.Alive() {
		return
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.Cmd.Process.Kill()
		<-p.done
	}
}

// Tree is pid and its descendants.
func Tree(pid int) []int {
	out := []int{pid}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return out
	}
	for _, f := range strings.Fields(string(b)) {
		if c, err := strconv.Atoi(f); err == nil {
			out = append(out, Tree(c)...)
		}
	}
	return out
}

// PIDs are the processes of ps and their descendants.
func PIDs(ps ...*Proc) []int {
	var out []int
	for _, p := range ps {
		out = append(out, Tree(p.PID())...)
	}
	return out
}

// ClkTck is USER_HZ on Linux: the unit of CPUTicks and BusyTicks.
const ClkTck = 100

// CPUTicks is the user+system CPU of the pids, in clock ticks.
func CPUTicks(pids ...int) int64 {
	var sum int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			k, _ := strconv.ParseInt(f[12], 10, 64)
			sum += u + k
		}
	}
	return sum
}

// BusyTicks is the machine's busy CPU time (all cores) in clock ticks.
func BusyTicks() int64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var sum int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		sum += n
	}
	return sum
}

// OtherPct is the CPU used by everything but our processes during d, in %
// of one core, from BusyTicks and CPUTicks taken at both ends: a
// contamination indicator (a few % on an idle machine).
func OtherPct(busy0, ours0, busy1, ours1 int64, d time.Duration) float64 {
	other := float64(busy1-busy0-(ours1-ours0)) / ClkTck
	return max(0, 100*other/d.Seconds())
}

// WaitIdle waits (at most limit) until the pids used at most 2 % of a
// core in each of two consecutive seconds. Not zero: a speaker with
// thousands of sessions sends keepalives all the time (5,000 sessions at
// a 30 s interval are ~170 messages a second), and a wait for no CPU at
// all ran into its limit after every phase.
func WaitIdle(pids []int, limit time.Duration) {
	last := CPUTicks(pids...)
	still := 0
	end := time.Now().Add(limit)
	for time.Now().Before(end) && still < 2 {
		time.Sleep(time.Second)
		now := CPUTicks(pids...)
		if now-last <= 2*ClkTck/100 {
			still++
		} else {
			still = 0
		}
		last = now
	}
}

// WaitQuiet waits up to limit until the machine's other work uses less
// than 15 % of a core: the machine is shared and other tenants skew the
// numbers. It returns the last second's busy share of one core, in %.
func WaitQuiet(limit time.Duration) float64 {
	end := time.Now().Add(limit)
	pct := 0.0
	for {
		a := BusyTicks()
		time.Sleep(time.Second)
		d := BusyTicks() - a
		pct = 100 * float64(d) / ClkTck
		if d < 15*ClkTck/100 || !time.Now().Before(end) {
			return pct
		}
	}
}

// VmHWM is a process's peak resident set in kB (0 if unknown).
func VmHWM(pid int) int { return statusKB(pid, "VmHWM:") }

// VmRSS is a process's resident set in kB (0 if unknown).
func VmRSS(pid int) int { return statusKB(pid, "VmRSS:") }

func statusKB(pid int, field string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field); ok {
			var kb int
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
			return kb
		}
	}
	return 0
}

// Median of v (0 for none).
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
