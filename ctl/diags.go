package ctl

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/rhizome-net/rhizome/ctl/doctor"
	"github.com/rhizome-net/rhizome/internal/version"
)

// rhizomectl diags collects what a bug report needs into one archive, like
// calicoctl node diags and cilium sysdump: the agent's status, metrics and
// log, the node's kernel state (links, addresses, routes of every table,
// rules, neighbours, the VXLAN FDB, nftables and iptables), GoBGP's RIB and
// neighbours (the gobgp CLI against the agent's API), the doctor's
// findings, and the cluster's Rhizome objects, Nodes and Events. Every
// source that fails is named in errors.txt instead of failing the whole.
// Secrets are never collected.

// diagCommands are the kernel and BGP views, run when the tool exists.
var diagCommands = []struct {
	file string
	argv []string
}{
	{"kernel/links.txt", []string{"ip", "-d", "link", "show"}},
	{"kernel/addresses.txt", []string{"ip", "addr", "show"}},
	{"kernel/routes-ipv4.txt", []string{"ip", "-4", "route", "show", "table", "all"}},
	{"kernel/routes-ipv6.txt", []string{"ip", "-6", "route", "show", "table", "all"}},
	{"kernel/rules-ipv4.txt", []string{"ip", "-4", "rule", "show"}},
	{"kernel/rules-ipv6.txt", []string{"ip", "-6", "rule", "show"}},
	{"kernel/neighbours.txt", []string{"ip", "neigh", "show"}},
	{"kernel/fdb.txt", []string{"bridge", "fdb", "show"}},
	{"kernel/nftables.txt", []string{"nft", "list", "ruleset"}},
	{"kernel/iptables.txt", []string{"iptables-save"}},
	{"kernel/ip6tables.txt", []string{"ip6tables-save"}},
	{"kernel/iptables-legacy.txt", []string{"iptables-legacy-save"}},
	{"bgp/neighbors.txt", []string{"gobgp", gobgpTarget, "neighbor"}},
	{"bgp/rib-ipv4.txt", []string{"gobgp", gobgpTarget, "global", "rib", "-a", "ipv4"}},
	{"bgp/rib-ipv6.txt", []string{"gobgp", gobgpTarget, "global", "rib", "-a", "ipv6"}},
}

// gobgpTarget stands for the flags that reach the agent's GoBGP API: its
// unix socket (the agent's default), else 127.0.0.1:50051 (labs and agents
// started with --gobgp-api-address host:port).
const gobgpTarget = "<gobgp-target>"

const gobgpSocket = "/var/run/rhizome/gobgp/gobgp.sock"

func gobgpArgs(argv []string) []string {
	var out []string
	for _, a := range argv {
		if a != gobgpTarget {
			out = append(out, a)
			continue
		}
		if fi, err := os.Stat(gobgpSocket); err == nil && fi.Mode()&os.ModeSocket != 0 {
			out = append(out, "--target", "unix://"+gobgpSocket)
		} else {
			out = append(out, "-u", "127.0.0.1", "-p", "50051")
		}
	}
	return out
}

// diagSysctls are the network sysctls the data path depends on.
var diagSysctls = []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding", "net/ipv4/conf/all/rp_filter",
	"net/ipv4/conf/default/rp_filter", "net/ipv4/conf/all/proxy_arp"}

type archive struct {
	files map[string][]byte
	order []string
	errs  []string
}

func (a *archive) add(name string, b []byte) {
	if _, ok := a.files[name]; !ok {
		a.order = append(a.order, name)
	}
	a.files[name] = b
}

func (a *archive) fail(what string, err error) {
	a.errs = append(a.errs, fmt.Sprintf("%s: %v", what, err))
}

func (g *globals) diagsCommand() *cobra.Command {
	var file, metricsURL string
	var logLines int64
	cmd := &cobra.Command{
		Use:   "diags",
		Short: "Collect logs, kernel routes and rules, nftables, the GoBGP RIB, the objects and the doctor's findings into one archive",
		Long: `Collect a diagnostics bundle (a .tar.gz) for a bug report. Run it on the
node in question (in its agent pod, or rhizome-lab exec NODE -- rhizomectl
diags) for the kernel's and GoBGP's state; with --node NAME from anywhere it
collects that agent's status, metrics and log through the API server, and
the cluster's objects.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a := &archive{files: map[string][]byte{}}
			node := g.collect(cmd.Context(), a, metricsURL, logLines)
			if file == "" {
				file = fmt.Sprintf("rhizome-diags-%s-%s.tar.gz", orDash(node), time.Now().UTC().Format("20060102T150405Z"))
			}
			var w io.Writer = g.out
			if file != "-" {
				f, err := os.Create(file)
				if err != nil {
					return err
				}
				defer f.Close()
				w = f
			}
			if err := a.write(w, "rhizome-diags"); err != nil {
				return err
			}
			if file != "-" {
				fmt.Fprintf(g.errOut, "wrote %s: %d files, %d sources failed (errors.txt)\n", file, len(a.order)+1, len(a.errs))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "archive to write (default rhizome-diags-NODE-TIME.tar.gz; - for stdout)")
	cmd.Flags().StringVar(&metricsURL, "metrics-url", "http://127.0.0.1:"+agentHTTPPort+"/metrics", "the local agent's metrics")
	cmd.Flags().Int64Var(&logLines, "log-lines", 5000, "lines of the agent's log to keep")
	g.nodeFlag(cmd)
	return cmd
}

// collect fills the archive and returns the node's name.
func (g *globals) collect(ctx context.Context, a *archive, metricsURL string, logLines int64) string {
	v, _ := json.MarshalIndent(version.Get(), "", "  ")
	a.add("version.json", v)
	node := g.node
	st, err := g.nodeStatus(ctx)
	if err != nil {
		a.fail("agent status", err)
	} else {
		node = st.GetNodeName()
		b, _ := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(st)
		a.add("agent/status.json", b)
	}
	if node == "" {
		node = os.Getenv(envNode)
	}
	c, cerr := g.clients()
	// Metrics and log: the remote agent's through the API server; the local
	// one's from its port and its log file or pod.
	if g.node != "" && cerr == nil {
		if pod, err := c.agentPod(ctx, g.namespace, g.node); err != nil {
			a.fail("agent pod", err)
		} else if b, err := c.agentGet(ctx, pod, "/metrics"); err != nil {
			a.fail("agent metrics", err)
		} else {
			a.add("agent/metrics.txt", b)
		}
	} else if g.node == "" {
		if b, err := httpGet(ctx, metricsURL); err != nil {
			a.fail("agent metrics ("+metricsURL+")", err)
		} else {
			a.add("agent/metrics.txt", b)
		}
	}
	if path := os.Getenv(envAgentLog); path != "" && g.node == "" {
		if b, err := tailFile(path, logLines); err != nil {
			a.fail("agent log", err)
		} else {
			a.add("agent/agent.log", b)
		}
	} else if cerr == nil && node != "" {
		if pod, err := c.agentPod(ctx, g.namespace, node); err != nil {
			a.fail("agent log", err)
		} else {
			b, err := c.kube.CoreV1().Pods(pod.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{Container: "agent", TailLines: &logLines}).DoRaw(ctx)
			if err != nil {
				a.fail("agent log", err)
			} else {
				a.add("agent/agent.log", b)
			}
		}
	}
	if g.node == "" {
		g.collectLocal(ctx, a, node)
	}
	if cerr != nil {
		a.fail("cluster objects", cerr)
	} else {
		collectObjects(ctx, a, c, g.namespace)
	}
	return node
}

// collectLocal: the kernel, GoBGP and the doctor, on this node.
func (g *globals) collectLocal(ctx context.Context, a *archive, node string) {
	for _, dc := range diagCommands {
		argv := gobgpArgs(dc.argv)
		if _, err := exec.LookPath(argv[0]); err != nil {
			a.fail(dc.file, fmt.Errorf("%s is not installed here", argv[0]))
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		out, err := exec.CommandContext(cctx, argv[0], argv[1:]...).CombinedOutput()
		cancel()
		if err != nil {
			a.fail(strings.Join(argv, " "), fmt.Errorf("%v: %s", err, bytes.TrimSpace(out)))
		}
		if len(out) > 0 {
			a.add(dc.file, out)
		}
	}
	var sys bytes.Buffer
	for _, k := range diagSysctls {
		b, err := os.ReadFile(filepath.Join("/proc/sys", k))
		if err != nil {
			fmt.Fprintf(&sys, "%s: %v\n", k, err)
			continue
		}
		fmt.Fprintf(&sys, "%s = %s\n", strings.ReplaceAll(k, "/", "."), bytes.TrimSpace(b))
	}
	a.add("kernel/sysctls.txt", sys.Bytes())
	in, err := g.doctorInput(ctx, node)
	if err != nil {
		a.fail("doctor", err)
		return
	}
	in.CNIConfDir = defaultCNIConfDir()
	b, _ := json.MarshalIndent(doctorDoc{Node: in.Node, Findings: append([]doctor.Finding{}, doctor.Run(ctx, in)...)}, "", "  ")
	a.add("doctor.json", b)
}

// collectObjects writes the cluster's Rhizome objects, Nodes and the
// Events about Rhizome's objects and in its namespace, as YAML.
func collectObjects(ctx context.Context, a *archive, c *clusterClients, ns string) {
	rz := c.rz.RhizomeV1alpha1()
	lo := metav1.ListOptions{}
	get := func(name string, f func() (any, error)) {
		obj, err := f()
		if err != nil {
			a.fail("cluster/"+name, err)
			return
		}
		b, err := yaml.Marshal(obj)
		if err != nil {
			a.fail("cluster/"+name, err)
			return
		}
		a.add("cluster/"+name+".yaml", b)
	}
	get("ippools", func() (any, error) { return rz.IPPools().List(ctx, lo) })
	get("ipamblocks", func() (any, error) { return rz.IPAMBlocks().List(ctx, lo) })
	get("bgpconfigurations", func() (any, error) { return rz.BGPConfigurations().List(ctx, lo) })
	get("bgppeers", func() (any, error) { return rz.BGPPeers().List(ctx, lo) })
	get("rhizomenodes", func() (any, error) { return rz.RhizomeNodes().List(ctx, lo) })
	get("nodes", func() (any, error) { return c.kube.CoreV1().Nodes().List(ctx, lo) })
	get("agent-pods", func() (any, error) {
		return c.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: agentSelector})
	})
	get("events-"+ns, func() (any, error) { return c.kube.CoreV1().Events(ns).List(ctx, lo) })
	for _, kind := range []string{"RhizomeNode", "IPPool", "IPAMBlock", "BGPPeer"} {
		get("events-"+strings.ToLower(kind), func() (any, error) {
			return c.kube.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=" + kind})
		})
	}
}

func (a *archive) write(w io.Writer, dir string) error {
	zw := gzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	now := time.Now()
	put := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: dir + "/" + name, Mode: 0o644, Size: int64(len(b)), ModTime: now, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	for _, name := range a.order {
		if err := put(name, a.files[name]); err != nil {
			return err
		}
	}
	errs := strings.Join(a.errs, "\n")
	if errs != "" {
		errs += "\n"
	}
	if err := put("errors.txt", []byte(errs)); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

func httpGet(ctx context.Context, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", url, resp.Status)
	}
	return b, err
}

// tailFile returns the last n lines of a file.
func tailFile(path string, n int64) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lines := bytes.SplitAfter(b, []byte("\n"))
	if int64(len(lines)) > n {
		lines = lines[int64(len(lines))-n:]
	}
	return bytes.Join(lines, nil), nil
}
