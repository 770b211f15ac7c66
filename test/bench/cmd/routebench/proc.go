package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// event prints "NAME t_ns=<now> k=v ..." on stdout, one write per line.
// Every tool of the harness runs on this machine, so their timestamps
// compare directly.
func event(name string, kv ...any) {
	var b strings.Builder
	fmt.Fprintf(&b, "%s t_ns=%d", name, time.Now().UnixNano())
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, " %v=%v", kv[i], kv[i+1])
	}
	b.WriteByte('\n')
	os.Stdout.WriteString(b.String())
}

// ev is an event line read from a tool.
type ev struct {
	t      time.Time
	fields map[string]string
}

// proc is a process the harness started (inside a namespace, through
// `ip netns exec`, which execs: the PID is the tool's own). Its event lines
// are collected; everything it prints goes to its log file too.
type proc struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	evs  map[string]ev
	note chan struct{}
	done chan struct{}
	err  error
}

func startProc(name, logPath string, args ...string) (*proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	p := &proc{name: name, cmd: exec.Command(args[0], args[1:]...), evs: map[string]ev{},
		note: make(chan struct{}, 1), done: make(chan struct{})}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	p.cmd.Stderr = logf
	// The tools die with the harness even if it is killed.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		sc := bufio.NewScanner(io.TeeReader(out, logf))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 2 || !strings.HasPrefix(f[1], "t_ns=") {
				continue
			}
			ns, _ := strconv.ParseInt(strings.TrimPrefix(f[1], "t_ns="), 10, 64)
			e := ev{t: time.Unix(0, ns), fields: map[string]string{}}
			for _, kv := range f[2:] {
				k, v, _ := strings.Cut(kv, "=")
				e.fields[k] = v
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
		p.err = p.cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// wait returns the first event named name, failing after timeout or when
// the process (or any of others) exits first.
func (p *proc) wait(name string, timeout time.Duration, others ...*proc) (ev, error) {
	deadline := time.After(timeout)
	for {
		p.mu.Lock()
		e, ok := p.evs[name]
		p.mu.Unlock()
		if ok {
			return e, nil
		}
		for _, o := range append([]*proc{p}, others...) {
			select {
			case <-o.done:
				p.mu.Lock()
				e, ok := p.evs[name]
				p.mu.Unlock()
				if ok {
					return e, nil
				}
				return ev{}, fmt.Errorf("%s exited (%v) while waiting for %s from %s", o.name, o.err, name, p.name)
			default:
			}
		}
		select {
		case <-p.note:
		case <-deadline:
			return ev{}, fmt.Errorf("timed out after %v waiting for %s from %s", timeout, name, p.name)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM, then SIGKILL after 3 s, to this process only.
func (p *proc) stop() {
	if !p.alive() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(3 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// procTree is pid and its descendants (FRR's and the receivers' helpers).
func procTree(pid int) []int {
	out := []int{pid}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return out
	}
	for _, f := range strings.Fields(string(b)) {
		if c, err := strconv.Atoi(f); err == nil {
			out = append(out, procTree(c)...)
		}
	}
	return out
}

// cpuTicks is the user+system CPU of the pids, in clock ticks.
func cpuTicks(pids ...int) int64 {
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

// busyTicks is the machine's busy CPU time (all cores) in clock ticks.
func busyTicks() int64 {
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

const clkTck = 100 // USER_HZ on Linux

// waitIdle waits (at most 30 s) until the pids used no CPU for 1 s, so that
// the withdrawal is not charged with leftovers of the install.
func waitIdle(pids []int) {
	last := cpuTicks(pids...)
	still := 0
	for i := 0; i < 120 && still < 4; i++ {
		time.Sleep(250 * time.Millisecond)
		now := cpuTicks(pids...)
		if now == last {
			still++
		} else {
			still = 0
		}
		last = now
	}
}

// waitQuiet waits up to max until others use less than 15 % of a core,
// since the machine is shared and other tenants skew the numbers.
func waitQuiet(max time.Duration) {
	end := time.Now().Add(max)
	for time.Now().Before(end) {
		a := busyTicks()
		time.Sleep(time.Second)
		if busyTicks()-a < 15*clkTck/100 {
			return
		}
	}
}
