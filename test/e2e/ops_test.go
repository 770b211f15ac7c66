//go:build e2e

package e2e

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	rzclient "github.com/rhizome-net/rhizome/crds/client/clientset/versioned"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/test/controlplane"
	"github.com/rhizome-net/rhizome/test/lab"
)

// Issue 17: rhizomectl as an operator meets it, against a whole lab: inside
// a node (rhizome-lab exec, no flags), from the host as the kubectl plugin
// (cluster-wide views from the API, --node through the API server's pod
// proxy and the lab's egress), every output format, version of every
// agent, completion, the diagnostics bundle; then the doctor, silent on
// the healthy lab, naming each fault injected into a node.

// ctl runs a command with the lab's rhizome-lab and rhizomectl; argv[0]
// "lab" is rhizome-lab (exec NODE -- rhizomectl ... runs inside the node).
func ctl(t *testing.T, l *lab.Lab, argv ...string) ([]byte, error) {
	t.Helper()
	bin := binDir(t)
	name := filepath.Join(bin, "kubectl-rhizome")
	if argv[0] == "lab" {
		name, argv = filepath.Join(bin, "rhizome-lab"), argv[1:]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, argv...)
	cmd.Env = append(os.Environ(), "RHIZOME_LAB_DIR="+l.Dir, "KUBECONFIG="+l.State.Kubeconfig, "PATH="+bin+":"+os.Getenv("PATH"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		err = fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(argv, " "), err, stderr.String())
	}
	return out, err
}

func mustCtl(t *testing.T, l *lab.Lab, argv ...string) []byte {
	t.Helper()
	out, err := ctl(t, l, argv...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return out
}

func decode(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := yaml.Unmarshal(b, v); err != nil { // JSON is YAML
		t.Fatalf("decoding %v:\n%s", err, b)
	}
}

type items[T any] struct {
	Items []T `json:"items"`
}

func TestOperatorCLI(t *testing.T) {
	l := up(t, lab.Options{Nodes: 3, Racks: 2, ToR: "none", Mode: "mesh", Encap: "vxlan", Pods: 1})
	nodes := []string{"node-1", "node-2", "node-3"}

	t.Run("inside a node without flags", func(t *testing.T) {
		var st struct {
			NodeName string `json:"nodeName"`
			Ready    bool   `json:"ready"`
			Build    struct {
				Version string `json:"version"`
			} `json:"build"`
		}
		decode(t, mustCtl(t, l, "lab", "exec", "node-1", "--", "rhizomectl", "status", "-o", "json"), &st)
		if st.NodeName != "node-1" || !st.Ready || st.Build.Version == "" {
			t.Fatalf("status in node-1: %+v", st)
		}
		// The API server too: pools through the node's API proxy.
		var pools items[struct {
			Name        string `json:"name"`
			NATOutgoing bool   `json:"natOutgoing"`
		}]
		decode(t, mustCtl(t, l, "lab", "exec", "node-1", "--", "rhizomectl", "pools", "-o", "yaml"), &pools)
		if len(pools.Items) != 1 || pools.Items[0].Name != podPoolName || !pools.Items[0].NATOutgoing {
			t.Fatalf("pools in node-1: %+v", pools)
		}
	})

	t.Run("cluster-wide from the API", func(t *testing.T) {
		var peers items[struct {
			Node, Peer, Kind, State string
		}]
		eventually(t, time.Minute, "every node's mesh sessions established in bgp peers -A", func() (bool, string) {
			out, err := ctl(t, l, "bgp", "peers", "-A", "-o", "json")
			if err != nil {
				return false, err.Error()
			}
			peers = items[struct{ Node, Peer, Kind, State string }]{}
			decode(t, out, &peers)
			up := 0
			for _, p := range peers.Items {
				if p.State == "Established" && p.Kind == "mesh" {
					up++
				}
			}
			return up == 6, string(out)
		})
		var ns items[struct {
			Name                string   `json:"name"`
			Ready               string   `json:"ready"`
			SessionsEstablished int      `json:"sessionsEstablished"`
			Blocks              []string `json:"blocks"`
		}]
		decode(t, mustCtl(t, l, "nodes", "-o", "json"), &ns)
		if len(ns.Items) != 3 {
			t.Fatalf("nodes: %+v", ns)
		}
		for i, n := range ns.Items {
			if n.Name != nodes[i] || n.Ready != "True" || n.SessionsEstablished != 2 || len(n.Blocks) == 0 {
				t.Errorf("nodes: %+v", n)
			}
		}
		if out := string(mustCtl(t, l, "nodes", "-o", "wide")); !strings.Contains(out, "ADDRESS") || !strings.Contains(out, "node-3") {
			t.Errorf("nodes -o wide:\n%s", out)
		}
	})

	t.Run("another node's agent through the API server", func(t *testing.T) {
		var st struct {
			NodeName string `json:"nodeName"`
			Routes   []struct {
				Prefix string `json:"prefix"`
			} `json:"routes"`
		}
		decode(t, mustCtl(t, l, "status", "--node", "node-2", "-o", "json"), &st)
		if st.NodeName != "node-2" || len(st.Routes) == 0 {
			t.Fatalf("status --node node-2: %+v", st)
		}
		var routes items[struct {
			Node, Prefix, Encapsulation string
		}]
		decode(t, mustCtl(t, l, "routes", "--node", "node-3", "-o", "yaml"), &routes)
		if len(routes.Items) == 0 || routes.Items[0].Node != "node-3" {
			t.Fatalf("routes --node node-3: %+v", routes)
		}
		if _, err := ctl(t, l, "status", "--node", "no-such-node"); err == nil || !strings.Contains(err.Error(), "no running agent pod on node no-such-node") {
			t.Fatalf("status --node no-such-node: %v", err)
		}
	})

	t.Run("version of the client and every agent", func(t *testing.T) {
		var v struct {
			Client struct{ Version, Revision string }
			Agents []struct {
				Node    string
				Version *struct{ Version, Revision string }
				Error   string
			}
		}
		decode(t, mustCtl(t, l, "version", "-o", "json"), &v)
		var got []string
		for _, a := range v.Agents {
			if a.Version == nil || a.Version.Revision != v.Client.Revision {
				t.Errorf("agent on %s: %+v %s, want the client's build %+v", a.Node, a.Version, a.Error, v.Client)
			}
			got = append(got, a.Node)
		}
		if !slices.Equal(got, nodes) {
			t.Fatalf("version lists agents %v, want %v", got, nodes)
		}
	})

	t.Run("kubectl finds the plugin, and completes it", func(t *testing.T) {
		bins, err := controlplane.EnsureBinaries(context.Background(), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bins.Kubectl, "rhizome", "nodes")
		cmd.Env = append(os.Environ(), "KUBECONFIG="+l.State.Kubeconfig, "PATH="+binDir(t)+":"+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "node-2") || !strings.Contains(string(out), "ROUTER ID") {
			t.Fatalf("kubectl rhizome nodes: %v\n%s", err, out)
		}
		comp := string(mustCtl(t, l, "__complete", "status", "--node", "node-"))
		for _, n := range nodes {
			if !strings.Contains(comp, n+"\n") {
				t.Errorf("completion of --node lacks %s:\n%s", n, comp)
			}
		}
		if out := string(mustCtl(t, l, "completion", "bash")); !strings.Contains(out, "bash completion") {
			t.Errorf("completion bash:\n%.300s", out)
		}
	})

	t.Run("diags bundle", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "diags.tar.gz")
		mustCtl(t, l, "lab", "exec", "node-1", "--", "rhizomectl", "diags", "-f", path)
		files := readTarGz(t, path)
		for _, want := range []string{"agent/status.json", "agent/metrics.txt", "agent/agent.log", "kernel/routes-ipv4.txt",
			"kernel/rules-ipv4.txt", "kernel/nftables.txt", "bgp/rib-ipv4.txt", "bgp/neighbors.txt", "cluster/rhizomenodes.yaml",
			"cluster/ipamblocks.yaml", "doctor.json", "errors.txt"} {
			if _, ok := files[want]; !ok {
				t.Errorf("diags lacks %s (errors.txt: %s)", want, files["errors.txt"])
			}
		}
		if !strings.Contains(files["kernel/routes-ipv4.txt"], "proto 114") || !strings.Contains(files["cluster/rhizomenodes.yaml"], "node-3") ||
			!strings.Contains(files["agent/metrics.txt"], "rhizome_build_info") {
			t.Errorf("diags content: routes %q...", files["kernel/routes-ipv4.txt"])
		}
	})

	t.Run("session events on the RhizomeNodes", func(t *testing.T) {
		kube := kubeClient(t, l)
		eventually(t, 30*time.Second, "BGPSessionEstablished events about RhizomeNodes", func() (bool, string) {
			evs, err := kube.CoreV1().Events("").List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.kind=RhizomeNode,reason=BGPSessionEstablished"})
			if err != nil {
				return false, err.Error()
			}
			nodes := map[string]bool{}
			for _, e := range evs.Items {
				if e.Source.Component == "rhizome-agent" && strings.HasPrefix(e.Message, "BGP session with ") {
					nodes[e.InvolvedObject.Name] = true
				}
			}
			return len(nodes) == 3, fmt.Sprintf("events on %v", nodes)
		})
	})
	t.Run("doctor", func(t *testing.T) { doctorFaults(t, l) })
	t.Run("monitoring queries resolve against a live agent", func(t *testing.T) { monitoringQueries(t, l) })
}

// monitoringQueries resolves every series selector of the shipped alert
// rules and dashboard against node-1's live /metrics: the metric exists and
// some series satisfies the selector's label matchers (labels Prometheus
// adds when scraping are not the agent's, and `up` is Prometheus' own). The
// per-peer series exist for external peers only, so node-1 gets one: a
// BGPPeer towards its rack's router, where no BGP speaker listens (the
// session stays Active, its series exist).
func monitoringQueries(t *testing.T, l *lab.Lab) {
	ctx := ctxFor(t, 5*time.Minute)
	rz := rzClient(t, l)
	peer := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "ops-external"}, Spec: v1alpha1.BGPPeerSpec{
		PeerIP: l.Plan.Racks[0].ToRAddr.Addr().String(), ASNumber: ptrTo(int64(65099)), Node: "node-1"}}
	if _, err := rz.RhizomeV1alpha1().BGPPeers().Create(ctx, peer, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer rz.RhizomeV1alpha1().BGPPeers().Delete(context.Background(), peer.Name, metav1.DeleteOptions{})
	var series map[string]float64
	eventually(t, time.Minute, "node-1 exports the external peer's series", func() (bool, string) {
		var err error
		series, err = l.AgentMetrics(ctx, "node-1")
		if err != nil {
			return false, err.Error()
		}
		for k := range series {
			if strings.HasPrefix(k, "rhizome_bgp_session_up{") && strings.Contains(k, `kind="external"`) {
				return true, ""
			}
		}
		return false, "no rhizome_bgp_session_up for an external peer yet"
	})
	cmd := exec.CommandContext(ctx, "go", "-C", "../../hack/promcheck", "run", ".", "selectors",
		mustAbs(t, "../../deploy/components/monitoring/prometheusrule.yaml"), mustAbs(t, "../../deploy/components/monitoring/dashboards/rhizome.json"))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("promcheck selectors: %v", err)
	}
	var sels []struct {
		Metric   string
		Matchers []string
		Source   string
	}
	if err := json.Unmarshal(out, &sels); err != nil {
		t.Fatal(err)
	}
	if len(sels) < 40 {
		t.Fatalf("only %d selectors in the rules and the dashboard", len(sels))
	}
	scrapeLabels := map[string]bool{"job": true, "instance": true, "node": true, "pod": true, "namespace": true}
	for _, sel := range sels {
		if sel.Metric == "up" {
			continue
		}
		if !anySeriesMatches(series, sel.Metric, sel.Matchers, scrapeLabels) {
			t.Errorf("%s: %s%v selects nothing on a live agent", sel.Source, sel.Metric, sel.Matchers)
		}
	}
}

var matcherRE = regexp.MustCompile(`^([a-zA-Z_][a-zA-Z0-9_]*)(=~|!~|!=|=)"(.*)"$`)

func anySeriesMatches(series map[string]float64, metric string, matchers []string, ignore map[string]bool) bool {
	for key := range series {
		name, rest, _ := strings.Cut(key, "{")
		if name != metric {
			continue
		}
		labels := map[string]string{}
		for _, kv := range splitLabels(strings.TrimSuffix(rest, "}")) {
			k, v, _ := strings.Cut(kv, "=")
			labels[k] = strings.Trim(v, `"`)
		}
		ok := true
		for _, m := range matchers {
			g := matcherRE.FindStringSubmatch(m)
			if g == nil {
				ok = false
				break
			}
			if ignore[g[1]] {
				continue
			}
			v := labels[g[1]]
			re := regexp.MustCompile("^(?:" + g[3] + ")$")
			switch g[2] {
			case "=":
				ok = ok && v == g[3]
			case "!=":
				ok = ok && v != g[3]
			case "=~":
				ok = ok && re.MatchString(v)
			case "!~":
				ok = ok && !re.MatchString(v)
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// splitLabels splits a="x",b="y" at the commas between pairs.
func splitLabels(s string) []string {
	var out []string
	inQuote, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			inQuote = !inQuote
		case ',':
			if !inQuote {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func ptrTo[T any](v T) *T { return &v }

func readTarGz(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	out := map[string]string{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out[strings.TrimPrefix(h.Name, "rhizome-diags/")] = string(b)
	}
}

func routeDev(t *testing.T, l *lab.Lab, node, addr string) string {
	t.Helper()
	f := strings.Fields(routeLine(t, l, node, addr))
	i := slices.Index(f, "dev")
	if i < 0 || i+1 >= len(f) {
		t.Fatalf("no route to %s on %s: %v", addr, node, f)
	}
	return f[i+1]
}

func kubeClient(t *testing.T, l *lab.Lab) kubernetes.Interface {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", l.State.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func rzClient(t *testing.T, l *lab.Lab) rzclient.Interface {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", l.State.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	c, err := rzclient.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// routeLine is node's `ip route get`-free view of the route to addr.
func routeLine(t *testing.T, l *lab.Lab, node, addr string) string {
	t.Helper()
	out, err := l.Exec(context.Background(), node, "ip", "-4", "route", "show", addr+"/32")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

func moduleAvailable(name string) bool {
	if _, err := os.Stat("/sys/module/" + name); err == nil {
		return true
	}
	return exec.Command("modprobe", "-n", name).Run() == nil
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// podPoolName is the lab's pool (test/lab/cluster.go).
const podPoolName = "default-ipv4"
