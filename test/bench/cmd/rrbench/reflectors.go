package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/rhizome-net/rhizome/test/bench/benchproc"
	"github.com/rhizome-net/rhizome/test/lab"
)

// reflector is one reflector under test, started in the reflector's
// namespace of a run.
type reflector interface {
	// start starts it configured for n clients and returns once it
	// accepts their sessions.
	start(ctx context.Context, n int) error
	// procs are its processes (CPU, RSS).
	procs() []*benchproc.Proc
	stop()
}

// rhizomeRR is a real rhizome-agent in reflector role: node "rr" of the
// cluster, reading the API server through a proxy in its namespace, as the
// lab runs agents.
type rhizomeRR struct {
	r     *runner
	dir   string
	ns    string
	extra []string
	bin   string
	agent *benchproc.Proc
	stopP context.CancelFunc
}

func (z *rhizomeRR) start(ctx context.Context, n int) error {
	pctx, cancel := context.WithCancel(context.Background())
	z.stopP = cancel
	go func() {
		if err := lab.ServeAPIProxy(pctx, z.ns, z.r.cluster.port); err != nil && pctx.Err() == nil {
			fmt.Fprintln(os.Stderr, "rrbench: API proxy:", err)
		}
	}()
	log := filepath.Join(z.dir, "agent.log")
	args := append([]string{"ip", "netns", "exec", z.ns, z.bin,
		"--node-name", rrNode,
		"--kubeconfig", z.r.cluster.cp.Kubeconfig,
		"--namespace", agentNamespace,
		"--agent-socket", filepath.Join(z.dir, "agent.sock"),
		"--health-address", healthAddr,
		"--gobgp-api-address", "127.0.0.1:50051",
		"--log-level", "info"}, z.extra...)
	p, err := benchproc.Start("rhizome-agent", log, args...)
	if err != nil {
		return err
	}
	z.agent = p
	// Ready when the agent has configured a session for every client: it
	// logs each one it adds.
	deadline := time.Now().Add(10 * time.Minute)
	for {
		b, _ := os.ReadFile(log)
		if c := bytes.Count(b, []byte(`"msg":"BGP session added"`)); c >= n {
			return nil
		}
		if !p.Alive() {
			return fmt.Errorf("rhizome-agent exited at startup (log %s)", log)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("rhizome-agent configured fewer than %d sessions in 10 minutes (log %s)", n, log)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (z *rhizomeRR) procs() []*benchproc.Proc { return []*benchproc.Proc{z.agent} }

func (z *rhizomeRR) stop() {
	if z.agent != nil {
		z.agent.Stop(10 * time.Second)
	}
	if z.stopP != nil {
		z.stopP()
	}
}

// birdRR is BIRD 2 as a route reflector, configured as Calico configures
// BIRD for its reflectors: one iBGP protocol per client, route reflection
// with a cluster ID, learned routes exported to the kernel. Its sessions
// are passive, like the Rhizome reflector's (the side with the higher
// address waits), and next hops of the clients' routes resolve through a
// static route to the clients' subnet.
type birdRR struct {
	dir    string
	ns     string
	client bool // also a session for the client agent (client.go)
	bird   *benchproc.Proc
}

// birdConfig is BIRD's configuration for n clients, plus the client
// agent's session when client is set.
func birdConfig(dir string, n int, client bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, `log "%s/bird.log" { warning, error, auth, fatal, bug };
router id %s;
protocol device { scan time 10; }
protocol static { ipv4; route %s via %s; }
protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; learn off; scan time 60; }
template bgp rrclient {
	local %s as %d;
	rr client;
	rr cluster id %s;
	passive on;
	error wait time 1, 1;
	ipv4 { import all; export where source = RTS_BGP; };
}
`, dir, rrAddr, clientNet, gwAddr, rrAddr, asn, clusterID)
	for i := range n {
		fmt.Fprintf(&b, "protocol bgp %s from rrclient { neighbor %s as %d; }\n", strings.ReplaceAll(clientName(i), "-", "_"), clientAddr(i), asn)
	}
	if client {
		fmt.Fprintf(&b, "protocol bgp %s from rrclient { neighbor %s as %d; }\n", agentNode, agentAddr, asn)
	}
	return b.String()
}

func (br *birdRR) start(ctx context.Context, n int) error {
	conf := filepath.Join(br.dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(birdConfig(br.dir, n, br.client)), 0o644); err != nil {
		return err
	}
	sock := filepath.Join(br.dir, "bird.ctl")
	p, err := benchproc.Start("bird", filepath.Join(br.dir, "bird.out"), "ip", "netns", "exec", br.ns,
		"bird", "-f", "-c", conf, "-s", sock, "-P", filepath.Join(br.dir, "bird.pid"))
	if err != nil {
		return err
	}
	br.bird = p
	// Ready when birdc lists every client protocol.
	deadline := time.Now().Add(5 * time.Minute)
	for {
		out, err := exec.CommandContext(ctx, "birdc", "-s", sock, "show", "protocols").Output()
		if err == nil && countLines(out, " BGP ") >= n {
			return nil
		}
		if !p.Alive() {
			return fmt.Errorf("bird exited at startup (see %s)", br.dir)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bird did not list %d protocols in 5 minutes: %v", n, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func countLines(b []byte, sub string) int {
	c := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if strings.Contains(sc.Text(), sub) {
			c++
		}
	}
	return c
}

func (br *birdRR) procs() []*benchproc.Proc { return []*benchproc.Proc{br.bird} }

func (br *birdRR) stop() {
	if br.bird != nil {
		br.bird.Stop(10 * time.Second)
	}
}
