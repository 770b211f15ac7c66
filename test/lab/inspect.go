package lab

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ControlPlaneDir is the lab's control-plane state directory.
func (l *Lab) ControlPlaneDir() string { return filepath.Join(l.Dir, "controlplane") }

// NodeNS returns the namespace name of a node, pod or router of the lab.
func (l *Lab) NodeNS(name string) string { return l.Prefix + name }

// Exec runs a command in a lab namespace (node-1, tor-1, a pod's name).
func (l *Lab) Exec(ctx context.Context, target string, args ...string) ([]byte, error) {
	argv := l.execArgv(target, args...)
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("in %s: %s: %w: %s", target, strings.Join(args, " "), err, out)
	}
	return out, nil
}

// execArgv is the command line that runs args in a lab namespace: a pod's
// (by its recorded path), or a node's or router's by name. A kubelet node's
// commands also see its mount namespace (its /etc/cni/net.d, /opt/cni/bin,
// /var/run/rhizome).
func (l *Lab) execArgv(target string, args ...string) []string {
	for _, p := range l.State.Pods {
		if p.Name == target {
			return InNetNS(p.NetNS, args...)
		}
	}
	if _, ok := l.Plan.Node(target); ok && l.State.Options.Kubelet {
		return l.nsenterArgs(target, args...)
	}
	return InNetNS(l.Prefix+target, args...)
}

// KernelRoutes returns the routes the agent of a node has programmed
// (protocol 114), prefix → the rest of the `ip route` line.
func (l *Lab) KernelRoutes(ctx context.Context, node string) (map[string]string, error) {
	out, err := l.Exec(ctx, node, "ip", "-4", "route", "show", "proto", "114")
	if err != nil {
		return nil, err
	}
	routes := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if f[0] == "blackhole" && len(f) > 1 {
			routes[f[1]] = "blackhole"
			continue
		}
		routes[f[0]] = strings.Join(f[1:], " ")
	}
	return routes, nil
}

// AgentMetrics scrapes a node's agent's /metrics and returns the samples
// without labels' order games: "name{labels}" → value.
func (l *Lab) AgentMetrics(ctx context.Context, node string) (map[string]float64, error) {
	code, body, err := httpGetInNS(ctx, l.nodeNS(node), "http://"+agentHealthAddr+"/metrics")
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("/metrics answered %d", code)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// AgentReady reports whether a node's agent answers /readyz with 200, and
// the body otherwise.
func (l *Lab) AgentReady(ctx context.Context, node string) (bool, string) {
	code, body, err := httpGetInNS(ctx, l.nodeNS(node), "http://"+agentHealthAddr+"/readyz")
	if err != nil {
		return false, err.Error()
	}
	return code == 200, strings.TrimSpace(body)
}

// StartAgent starts a node's agent (after StopAgent) and waits until it is
// ready.
func (l *Lab) StartAgent(ctx context.Context, node string) error {
	if err := l.startAgent(node); err != nil {
		return err
	}
	return l.waitAgentsReady(ctx, []string{node}, 2*time.Minute)
}

// StartAgentNoWait starts a node's agent (after StopAgent) and returns at
// once, for scenarios in which it cannot become ready yet (the API server
// is down).
func (l *Lab) StartAgentNoWait(node string) error { return l.startAgent(node) }

// WaitAgentReady waits until a node's agent is ready.
func (l *Lab) WaitAgentReady(ctx context.Context, node string, timeout time.Duration) error {
	return l.waitAgentsReady(ctx, []string{node}, timeout)
}

// AgentPID returns the PID of a node's running agent, or 0.
func (l *Lab) AgentPID(node string) int {
	for _, p := range l.State.Procs {
		if p.Role == "agent" && p.Node == node && p.alive() {
			return p.PID
		}
	}
	return 0
}

// StopAgentAndWait stops a node's agent with SIGTERM and waits for it to exit.
func (l *Lab) StopAgentAndWait(ctx context.Context, node string) error {
	l.StopAgent(node, false)
	for l.AgentPID(node) != 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}
