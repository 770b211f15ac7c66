package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rhizome-net/rhizome/agent/agentapi"
	"github.com/rhizome-net/rhizome/agent/localapi"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/ctl/doctor"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

type fixedState struct{ st *agentapi.StatusResponse }

func (f fixedState) NetworkConfig() (int, bool, string) { return 1450, true, "" }
func (f fixedState) Status() *agentapi.StatusResponse   { return f.st }

// serve runs the real local API over a unix socket, as the agent does.
func serve(t *testing.T, st *agentapi.StatusResponse) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		localapi.New(localapi.NewFakeAllocator("10.0.0.0/24"), fixedState{st}, nil).Serve(ctx, sock)
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	for i := 0; i < 200; i++ {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return sock
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("local API did not start")
	return ""
}

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := NewCommand()
	var out bytes.Buffer
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestStatusPeersRoutes(t *testing.T) {
	sock := serve(t, &agentapi.StatusResponse{
		NodeName: "node-1", RouterId: "10.0.1.10", AsNumber: 64512, Ready: true,
		Blocks: []string{"10.244.0.0/26"},
		Sessions: []*agentapi.Session{
			{Peer: "10.0.1.11", PeerAs: 64512, Kind: "mesh", State: "Established", SinceUnix: time.Now().Add(-time.Minute).Unix(), PrefixesReceived: 6, PrefixesAccepted: 2, PrefixesAdvertised: 1, Source: "node-2",
				PrefixesRejected: map[string]int64{"not-owner": 3, "held": 1}},
			{Peer: "10.0.1.1", PeerAs: 65001, Kind: "external", State: "Active", LastError: "wrong password: TCP MD5 signature mismatch"},
		},
		Routes: []*agentapi.Route{{Prefix: "10.244.1.0/26", NextHops: []string{"10.0.1.11"}, Encapsulation: "none", Device: "eth0"}},
	})
	out, err := run(t, "--socket", sock, "status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Rhizome agent on node-1 is ready", "Router ID 10.0.1.10, AS 64512; 1/2 BGP sessions established; 1 routes programmed", "Blocks: 10.244.0.0/26", "10.0.1.11", "Established", "wrong password"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	// Sessions are sorted by peer.
	if strings.Index(out, "10.0.1.1 ") > strings.Index(out, "10.0.1.11") {
		t.Errorf("peers not sorted:\n%s", out)
	}
	out, err = run(t, "--socket", sock, "routes")
	if err != nil || !strings.Contains(out, "10.244.1.0/26") || !strings.Contains(out, "10.0.1.11") {
		t.Errorf("routes: %v\n%s", err, out)
	}
	out, err = run(t, "--socket", sock, "status", "-o", "json")
	var doc map[string]any
	if err != nil || json.Unmarshal([]byte(out), &doc) != nil || doc["routerId"] != "10.0.1.10" {
		t.Errorf("status -o json: %v\n%s", err, out)
	}
	// bgp peers and routes are lists with the RhizomeNode status's names,
	// the same in JSON and YAML.
	for _, format := range []string{"json", "yaml"} {
		out, err = run(t, "--socket", sock, "bgp", "peers", "-o", format)
		var peers struct {
			Items []map[string]any `json:"items"`
		}
		if err == nil {
			err = yaml.Unmarshal([]byte(out), &peers) // YAML is a superset of JSON
		}
		if err != nil || len(peers.Items) != 2 || peers.Items[0]["peer"] != "10.0.1.1" || peers.Items[1]["peerAS"] != float64(64512) ||
			peers.Items[1]["node"] != "node-1" || peers.Items[1]["prefixesAdvertised"] != float64(1) || peers.Items[0]["lastError"] == nil ||
			fmt.Sprint(peers.Items[1]["prefixesRejected"]) != "map[held:1 not-owner:3]" {
			t.Errorf("bgp peers -o %s: %v\n%s", format, err, out)
		}
	}
	out, err = run(t, "--socket", sock, "routes", "-o", "json")
	var rl struct {
		Items []routeRow `json:"items"`
	}
	if err != nil || json.Unmarshal([]byte(out), &rl) != nil || len(rl.Items) != 1 || rl.Items[0].Prefix != "10.244.1.0/26" || rl.Items[0].NextHops[0] != "10.0.1.11" {
		t.Errorf("routes -o json: %v\n%s", err, out)
	}
	out, err = run(t, "--socket", sock, "bgp", "peers", "-o", "wide")
	if err != nil || !strings.Contains(out, "SOURCE") || !strings.Contains(out, "LAST ERROR") || !strings.Contains(out, "node-2") ||
		!strings.Contains(out, "REJECTED") || !strings.Contains(out, "held=1,not-owner=3") {
		t.Errorf("bgp peers -o wide: %v\n%s", err, out)
	}
	out, err = run(t, "--socket", sock, "status", "-o", "wide")
	if err != nil || !strings.Contains(out, "Underlay") {
		t.Errorf("status -o wide: %v\n%s", err, out)
	}
	if out, err := run(t, "--socket", sock, "routes", "-o", "xml"); err == nil || !strings.Contains(err.Error(), "want json, yaml, wide") {
		t.Errorf("routes -o xml: err %v, output %q; want a refusal naming the formats", err, out)
	}
}

// TestPeersBFDColumn: the BFD column of `bgp peers` for each case.
func TestPeersBFDColumn(t *testing.T) {
	sock := serve(t, &agentapi.StatusResponse{NodeName: "node-1", Sessions: []*agentapi.Session{
		{Peer: "10.0.1.1", Kind: "external", State: "Established", BfdState: "Up", BfdDetectionMs: 900},
		{Peer: "10.0.1.2", Kind: "mesh", State: "Active", BfdState: "Down", BfdDiagnostic: "ControlDetectionTimeExpired"},
		{Peer: "10.0.1.3", Kind: "mesh", State: "Established"},
		{Peer: "10.0.1.4", Kind: "external", State: "Established", BfdState: "Unavailable", BfdDiagnostic: "listening on UDP 3784: address already in use"},
	}})
	out, err := run(t, "--socket", sock, "bgp", "peers")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 || !strings.Contains(lines[0], "BFD") {
		t.Fatalf("output:\n%s", out)
	}
	for i, want := range []string{"Up(900ms)", "Down(ControlDetectionTimeExpired)", " - ", "Unavailable"} {
		if !strings.Contains(lines[i+1], want) {
			t.Errorf("line %d lacks %q:\n%s", i+1, want, out)
		}
	}
	// -o json keeps the state alone in bfd (the RhizomeNode status's
	// name), and none for a session without BFD.
	out, err = run(t, "--socket", sock, "bgp", "peers", "-o", "json")
	var doc struct {
		Items []map[string]any `json:"items"`
	}
	if err != nil || json.Unmarshal([]byte(out), &doc) != nil || len(doc.Items) != 4 ||
		doc.Items[0]["bfd"] != "Up" || doc.Items[1]["bfd"] != "Down" || doc.Items[2]["bfd"] != nil {
		t.Errorf("bgp peers -o json: %v\n%s", err, out)
	}
}

// The same column from a RhizomeNode's status (bgp peers -A).
func TestPeersBFDFromNodeStatus(t *testing.T) {
	det := metav1.Duration{Duration: 300 * time.Millisecond}
	n := &v1alpha1.RhizomeNode{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}, Status: v1alpha1.RhizomeNodeStatus{Sessions: []v1alpha1.BGPSessionStatus{
		{Peer: "10.0.1.1", Kind: v1alpha1.SessionExternal, State: "Established", BFD: &v1alpha1.BFDSessionStatus{State: "Up", DetectionTime: &det}},
		{Peer: "10.0.1.2", Kind: v1alpha1.SessionMesh, State: "Active", BFD: &v1alpha1.BFDSessionStatus{State: "Down", Diagnostic: "NeighborSignaledSessionDown"}},
		{Peer: "10.0.1.3", Kind: v1alpha1.SessionMesh, State: "Established"},
	}}}
	var b strings.Builder
	if err := writePeerTable(&b, peerRowsFromNode(n), true, false); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("output:\n%s", b.String())
	}
	// The rows are tab-separated here (the caller aligns them); BFD is
	// the seventh column with NODE first.
	for i, want := range []string{"Up(300ms)", "Down(NeighborSignaledSessionDown)", "-"} {
		if f := strings.Split(lines[i+1], "\t"); len(f) < 7 || f[6] != want {
			t.Errorf("line %d: BFD column is not %q:\n%s", i+1, want, b.String())
		}
	}
}

// Without a local agent and without a cluster, status says both: no
// socket, and no cluster for the cluster-wide view it falls back to.
func TestAgentNotRunning(t *testing.T) {
	dir := t.TempDir()
	_, err := run(t, "--socket", filepath.Join(dir, "missing.sock"), "--kubeconfig", filepath.Join(dir, "missing.kubeconfig"), "status")
	if err == nil || !strings.Contains(err.Error(), "not running") || !strings.Contains(err.Error(), "no cluster") {
		t.Fatalf("error = %v, want one saying the agent is not running and no cluster is configured", err)
	}
	_, err = run(t, "--socket", filepath.Join(dir, "missing.sock"), "routes")
	if err == nil || !strings.Contains(err.Error(), "not running") {
		t.Fatalf("routes: error = %v, want one saying the agent is not running", err)
	}
}

// The doctor's exit code follows its worst finding.
func TestDoctorExitCodes(t *testing.T) {
	for _, c := range []struct {
		findings []doctor.Finding
		code     int
	}{
		{nil, 0},
		{[]doctor.Finding{{Check: "return-path", Severity: doctor.Warning}}, 2},
		{[]doctor.Finding{{Check: "return-path", Severity: doctor.Warning}, {Check: "firewall", Severity: doctor.Error}}, 3},
	} {
		err := doctorExit("node-1", c.findings)
		var ee *ExitError
		switch {
		case c.code == 0 && err != nil:
			t.Errorf("%v: exit error %v, want none", c.findings, err)
		case c.code != 0 && (!errors.As(err, &ee) || ee.Code != c.code):
			t.Errorf("%v: %v, want exit code %d", c.findings, err, c.code)
		}
	}
}
