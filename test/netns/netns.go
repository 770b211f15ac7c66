// Package netns creates network namespaces, links and addresses for Rhizome's
// kernel tests and the lab, and always removes them again.
//
// Go threads and setns(2) do not mix: a goroutine can move to another OS
// thread at any moment, and a thread left in the wrong namespace poisons
// every goroutine scheduled on it later. So this package changes namespaces
// in three safe ways only: through netlink handles bound to a namespace
// (Handle), through subprocesses (Cmd, Exec: `ip netns exec`), and through Do,
// which runs a function on a locked OS thread that is thrown away afterwards
// if it cannot be switched back.
//
// Every namespace is named with a prefix and the PID of the process that made
// it. Cleanup removes a test's namespaces when the test ends (pass or fail,
// panics included, through t.Cleanup); Sweep removes the namespaces of
// processes that no longer exist, along with the processes still running in
// them, so the leftovers of a crashed run go away on the next one.
package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/rhizome-net/rhizome/internal/nsthread"
)

// RunDir is where `ip netns` keeps its bind mounts.
const RunDir = "/run/netns"

// NS is a named network namespace.
type NS struct {
	// Name is the full name, as `ip netns` knows it.
	Name string
}

// Path is the namespace's bind mount, usable with setns or CNI_NETNS.
func (n *NS) Path() string { return filepath.Join(RunDir, n.Name) }

// Name builds a namespace name that Sweep recognises: prefix, PID, short name.
func Name(prefix, short string) string {
	return fmt.Sprintf("%s%d-%s", prefix, os.Getpid(), short)
}

// TestPrefix is the prefix of namespaces made by New.
const TestPrefix = "rzt"

// Create makes a namespace with the given full name, brings its loopback up
// and returns it. It fails if the name exists.
func Create(name string) (*NS, error) {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("creating network namespace %s: %w: %s", name, err, bytes.TrimSpace(out))
	}
	n := &NS{Name: name}
	if _, err := n.Exec(context.Background(), "ip", "link", "set", "lo", "up"); err != nil {
		n.Delete()
		return nil, err
	}
	return n, nil
}

// New creates a namespace for a test and deletes it, with every process
// still running in it, when the test ends.
func New(t testing.TB, short string) *NS {
	t.Helper()
	RequireRoot(t)
	n, err := Create(Name(TestPrefix, short))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Delete(); err != nil {
			t.Errorf("cleaning up: %v", err)
		}
	})
	return n
}

// RequireRoot skips a test that needs root when not run as root, saying so.
// `make test` runs as root, so there such tests always run.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root to create network namespaces (make test runs as root)")
	}
}

// Delete kills the processes that still run in the namespace and removes it.
// Links inside it vanish with it (the peers of veth pairs too).
func (n *NS) Delete() error {
	killProcessesIn(n.Path())
	out, err := exec.Command("ip", "netns", "delete", n.Name).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "No such file") {
		return fmt.Errorf("deleting network namespace %s: %w: %s", n.Name, err, bytes.TrimSpace(out))
	}
	return nil
}

// Cmd returns a command that runs inside the namespace (through
// `ip netns exec`). The caller starts it and owns the process.
func (n *NS) Cmd(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Exec runs a command inside the namespace and returns its combined output;
// the error includes the output.
func (n *NS) Exec(ctx context.Context, name string, args ...string) ([]byte, error) {
	out, err := n.Cmd(ctx, name, args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("in %s: %s %s: %w: %s", n.Name, name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// Handle returns a netlink handle bound to the namespace; no thread changes
// namespace. The caller closes it.
func (n *NS) Handle() (*netlink.Handle, error) {
	h, err := netns.GetFromPath(n.Path())
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", n.Path(), err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", n.Name, err)
	}
	return nh, nil
}

// Do runs fn on an OS thread switched into the namespace. The thread is
// locked for the duration; if it cannot be switched back, it stays locked and
// Go discards it when the goroutine ends, so no other goroutine runs in the
// wrong namespace. fn must not start goroutines that expect the namespace.
func (n *NS) Do(fn func() error) error {
	return nsthread.Do(n.Path(), fn)
}

// Sweep deletes namespaces with the given prefix whose creating process is
// gone, killing whatever still runs inside them. It returns their names.
func Sweep(prefix string) []string {
	entries, _ := os.ReadDir(RunDir)
	var swept []string
	for _, e := range entries {
		name := e.Name()
		rest, ok := strings.CutPrefix(name, prefix)
		if !ok {
			continue
		}
		pidStr, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || processAlive(pid) {
			continue
		}
		n := &NS{Name: name}
		if n.Delete() == nil {
			swept = append(swept, name)
		}
	}
	return swept
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// killProcessesIn SIGKILLs every process whose network namespace is the one
// bound at path. Only namespaces that this package created are ever passed,
// so these are processes our tests or lab started there.
func killProcessesIn(path string) {
	var want syscall.Stat_t
	if err := syscall.Stat(path, &want); err != nil {
		return
	}
	for attempt := 0; attempt < 50; attempt++ {
		pids := processesIn(want)
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func processesIn(want syscall.Stat_t) []int {
	procs, _ := os.ReadDir("/proc")
	var pids []int
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join("/proc", p.Name(), "ns", "net"), &st) != nil {
			continue
		}
		if st.Ino == want.Ino && st.Dev == want.Dev {
			if b, err := os.ReadFile(filepath.Join("/proc", p.Name(), "stat")); err == nil && isZombie(b) {
				continue
			}
			pids = append(pids, pid)
		}
	}
	return pids
}

func isZombie(stat []byte) bool {
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && (stat[i+2] == 'Z' || stat[i+2] == 'X')
}

// Prefix parses a CIDR such as 10.0.0.1/24, panicking on a malformed literal;
// for tests and the lab's fixed address plans.
func Prefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
