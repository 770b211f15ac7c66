package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rhizome-net/rhizome/test/netns"
)

// Ports inside each node namespace (each namespace has its own loopback).
const (
	agentHealthAddr = "127.0.0.1:9099"
	gobgpAPIAddr    = "127.0.0.1:50051"
)

func (l *Lab) nodeDir(name string) string { return filepath.Join(l.Dir, "nodes", name) }

// agentSocket is where the node's agent serves its local API: in kubelet
// mode the DaemonSet's /var/run/rhizome, seen through the node's directory.
func (l *Lab) agentSocket(name string) string {
	if l.State != nil && l.State.Options.Kubelet {
		return filepath.Join(l.backing(name, "/run/rhizome"), "agent.sock")
	}
	return filepath.Join(l.nodeDir(name), "agent.sock")
}
func (l *Lab) agentLog(name string) string { return filepath.Join(l.nodeDir(name), "agent.log") }

// agentKubeconfig is the ServiceAccount kubeconfig (the admin one for labs
// from before it existed).
func (l *Lab) agentKubeconfig() string {
	if l.State.AgentKubeconfig != "" {
		return l.State.AgentKubeconfig
	}
	return l.State.Kubeconfig
}

// startAgent starts the node's API proxy (if not running) and its agent.
func (l *Lab) startAgent(name string) error {
	if err := l.startAPIProxy(name); err != nil {
		return err
	}
	return l.startProc("agent", name, l.nodeNS(name), l.agentLog(name), filepath.Join(l.BinDir, "rhizome-agent"),
		"--node-name", name,
		"--kubeconfig", l.agentKubeconfig(),
		"--namespace", AgentNamespace,
		"--agent-socket", l.agentSocket(name),
		"--health-address", agentHTTPListen,
		"--gobgp-api-address", gobgpAPIAddr,
		"--status-interval", "1s",
		"--log-level", "info")
}

// kubernetesServiceIP is the ClusterIP of the default/kubernetes Service
// (the first address of the control plane's service range). Pods' in-cluster
// configuration points there; with no kube-proxy in the lab, each kubelet
// node holds it on lo and its API proxy listens on it.
const kubernetesServiceIP = "10.96.0.1"

// startAPIProxy starts the node's API proxy unless it runs. In kubelet mode
// it also listens on the kubernetes Service's address and port, so that pods
// (the agent DaemonSet among them) reach the API server with their
// in-cluster configuration, as they would through kube-proxy.
func (l *Lab) startAPIProxy(name string) error {
	if l.hasProc("apiproxy", name) {
		return nil
	}
	// The proxy is a verb of rhizome-lab itself; under `go test` the
	// running executable is the test binary, so prefer the one in BinDir.
	self := filepath.Join(l.BinDir, "rhizome-lab")
	if _, err := os.Stat(self); err != nil {
		if self, err = os.Executable(); err != nil {
			return err
		}
	}
	args := []string{"apiproxy", "--netns", l.nodeNS(name), "--port", fmt.Sprint(l.State.APIPort)}
	if l.State.Options.Kubelet {
		if _, err := ns(l.nodeNS(name)).Exec(context.Background(), "ip", "addr", "replace", kubernetesServiceIP+"/32", "dev", "lo"); err != nil {
			return err
		}
		args = append(args, "--also-listen", kubernetesServiceIP+":443")
	}
	return l.startProc("apiproxy", name, "", filepath.Join(l.nodeDir(name), "apiproxy.log"), self, args...)
}

func (l *Lab) hasProc(role, node string) bool {
	for _, p := range l.State.Procs {
		if p.Role == role && p.Node == node && p.alive() {
			return true
		}
	}
	return false
}

// StopAgent stops a node's agent (SIGTERM; with kill, SIGKILL at once).
func (l *Lab) StopAgent(name string, kill bool) {
	grace := 10 * time.Second
	if kill {
		grace = 0
	}
	l.stopProcs(func(p Proc) bool { return p.Role == "agent" && p.Node == name }, grace)
	l.save()
}

// waitAgentsReady waits until every node's agent answers /readyz with 200,
// and returns the ones that did not in time with their last answer.
func (l *Lab) waitAgentsReady(ctx context.Context, names []string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	pending := map[string]string{}
	for _, n := range names {
		pending[n] = "no answer yet"
	}
	for len(pending) > 0 {
		for n := range pending {
			code, body, err := httpGetInNS(ctx, l.nodeNS(n), "http://"+agentHealthAddr+"/readyz")
			switch {
			case err != nil:
				pending[n] = err.Error()
			case code == http.StatusOK:
				delete(pending, n)
			default:
				pending[n] = strings.TrimSpace(body)
			}
		}
		if len(pending) == 0 {
			break
		}
		if time.Now().After(deadline) {
			var msg []string
			for n, why := range pending {
				msg = append(msg, fmt.Sprintf("%s: %s (log: %s)", n, why, l.agentLog(n)))
			}
			return fmt.Errorf("agents not ready after %s:\n  %s", timeout, strings.Join(msg, "\n  "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}

// httpGetInNS performs a GET from inside a namespace: the connection's
// socket is created on a thread switched into it.
func httpGetInNS(ctx context.Context, nsName, url string) (int, string, error) {
	target := &netns.NS{Name: nsName}
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := target.Do(func() error {
				d := net.Dialer{Timeout: 2 * time.Second}
				var err error
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(b), nil
}
