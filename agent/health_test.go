package agent

import (
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/rhizome-net/rhizome/agent/agentapi"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/internal/version"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

func TestHealthEndpoints(t *testing.T) {
	r := newReadiness("caches", "ipam")
	var aliveErr error
	reg := newRegistry()
	newAgentMetrics(reg, r)
	var status *agentapi.StatusResponse
	h := healthHandler(r, func() error { return aliveErr }, reg, func() *agentapi.StatusResponse { return status })

	if code, body := get(t, h, "/readyz"); code != http.StatusServiceUnavailable || body != "not ready:\ncaches: starting\nipam: starting\n" {
		t.Errorf("/readyz while starting: %d %q", code, body)
	}
	r.Set("caches", "")
	r.Set("ipam", "waiting for the IPAM caches")
	if code, body := get(t, h, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "ipam: waiting") || strings.Contains(body, "caches:") {
		t.Errorf("/readyz with one condition failing: %d %q", code, body)
	}
	_, metrics := get(t, h, "/metrics")
	for _, want := range []string{`rhizome_agent_ready{condition="caches"} 1`, `rhizome_agent_ready{condition="ipam"} 0`, "go_goroutines", "rhizome_agent_reconcile_duration_seconds_count 0"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	r.Set("ipam", "")
	if code, body := get(t, h, "/readyz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/readyz when ready: %d %q", code, body)
	}
	if code, _ := get(t, h, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d", code)
	}
	aliveErr = errors.New("no reconcile pass for 16m0s")
	if code, body := get(t, h, "/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no reconcile pass") {
		t.Errorf("/healthz when the loop is stuck: %d %q", code, body)
	}

	// /status is the local API's answer as protojson, 503 before the agent
	// has its parts; /version is this build.
	if code, body := get(t, h, "/status"); code != http.StatusServiceUnavailable || !strings.Contains(body, "starting") {
		t.Errorf("/status while starting: %d %q", code, body)
	}
	status = &agentapi.StatusResponse{NodeName: "node-1", Sessions: []*agentapi.Session{{Peer: "10.0.1.11", State: "Established"}}}
	code, body := get(t, h, "/status")
	var got agentapi.StatusResponse
	if err := protojson.Unmarshal([]byte(body), &got); code != http.StatusOK || err != nil || got.GetNodeName() != "node-1" || got.GetSessions()[0].GetPeer() != "10.0.1.11" {
		t.Errorf("/status: %d %q %v", code, body, err)
	}
	code, body = get(t, h, "/version")
	var v version.Info
	if err := json.Unmarshal([]byte(body), &v); code != http.StatusOK || err != nil || v != version.Get() {
		t.Errorf("/version: %d %q %v", code, body, err)
	}
}

func TestAlive(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NodeName = self
	ag := newAgent(cfg, nil)
	if err := ag.alive(); err != nil {
		t.Errorf("a new agent: %v", err)
	}
	// The loop has not turned for longer than three resync periods and a
	// minute: the kubelet should restart the agent.
	ag.lastPass.Store(time.Now().Add(-3*cfg.ResyncPeriod - 2*time.Minute).UnixNano())
	if err := ag.alive(); err == nil || !strings.Contains(err.Error(), "no reconcile pass for 17m") {
		t.Errorf("a stuck loop: %v", err)
	}
}

func TestSignalerCoalesces(t *testing.T) {
	s := newSignaler()
	for range 5 {
		s.Signal() // never blocks
	}
	<-s.C
	select {
	case <-s.C:
		t.Error("five signals woke the loop twice")
	default:
	}
	s.Signal()
	select {
	case <-s.C:
	default:
		t.Error("a signal after the loop woke was lost")
	}
}

func TestIPAMUsageMetrics(t *testing.T) {
	w := newWorld(t)
	w.allocate("pod0.eth0")
	w.allocate("pod1.eth0")
	p := &v1alpha1.IPPool{}
	p.Name = "default"
	p.Spec.CIDR = w.pool.String()
	p.Status.AddressesInUse, p.Status.AddressesFree = 2, 65534
	if err := w.pools.Update(p); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newIPAMUsage(a(w).caches.Pools, w.ipam))
	want := map[string]float64{
		"rhizome_ipam_node_block_addresses_allocated":         2,
		"rhizome_ipam_node_blocks":                            1,
		`rhizome_ipam_pool_addresses_free{pool="default"}`:    65534,
		`rhizome_ipam_pool_addresses_in_use{pool="default"}`:  2,
		`rhizome_ipam_pool_utilization_ratio{pool="default"}`: 2.0 / 65536,
	}
	if got := gather(t, reg); !maps.Equal(got, want) {
		t.Errorf("metrics:\n got %v\nwant %v", got, want)
	}
	// A pool with an empty status has no utilisation to report.
	p.Status.AddressesInUse, p.Status.AddressesFree = 0, 0
	if err := w.pools.Update(p); err != nil {
		t.Fatal(err)
	}
	if _, ok := gather(t, reg)[`rhizome_ipam_pool_utilization_ratio{pool="default"}`]; ok {
		t.Error("utilisation reported for a pool with an empty status")
	}
}

// gather renders a registry's gauges as name{labels} → value.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+strconv.Quote(l.GetValue()))
			}
			if len(ls) > 0 {
				name += "{" + strings.Join(ls, ",") + "}"
			}
			out[name] = m.GetGauge().GetValue()
		}
	}
	return out
}
