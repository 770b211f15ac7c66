package lab

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// startProc starts a long-running program detached from the lab command (its
// own session; it outlives `up`), inside namespace nsName when that is set,
// with output appended to logPath, and records it in the state.
//
// The recorded PID is that of bin: `ip netns exec` and `sh -c '... && exec
// bin'` both exec in place, and so does nsenter. When args start with "sh"
// or "nsenter", they are the whole command; otherwise bin runs with args.
func (l *Lab) startProc(role, node, nsName, logPath, bin string, args ...string) error {
	argv := append([]string{bin}, args...)
	if len(args) > 0 && (args[0] == "sh" || args[0] == "nsenter") {
		argv = args
	}
	if nsName != "" {
		argv = append([]string{"ip", "netns", "exec", nsName}, argv...)
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", role, err)
	}
	go cmd.Wait() // reap if it exits while we still run
	p := Proc{Role: role, Node: node, PID: cmd.Process.Pid, Bin: bin}
	// Give exec a moment to replace `ip`/`sh` with the program, then check
	// that it runs (and did not exit at once on a bad configuration).
	deadline := time.Now().Add(3 * time.Second)
	for !p.alive() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s (pid %d) did not start; see %s:\n%s", role, p.PID, logPath, tailFile(logPath, 2000))
		}
		time.Sleep(20 * time.Millisecond)
	}
	l.State.Procs = append(l.State.Procs, p)
	return l.save()
}

// stopProcs stops the recorded processes matching the filter, in reverse
// start order, and forgets them.
func (l *Lab) stopProcs(match func(Proc) bool, grace time.Duration) {
	var keep []Proc
	for i := len(l.State.Procs) - 1; i >= 0; i-- {
		p := l.State.Procs[i]
		if match(p) {
			p.stop(grace)
			continue
		}
		keep = append([]Proc{p}, keep...)
	}
	l.State.Procs = keep
}

func tailFile(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
