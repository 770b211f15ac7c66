package reconcile

// Status and metrics of the reconciler: sessions by state, flaps by kind,
// series that stay bounded as the cluster grows, MD5 counters.

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

func TestStatusAndMetrics(t *testing.T) {
	f := newFixture(t)
	st := baseState()
	st.Peers = []*v1alpha1.BGPPeer{torPeer()}
	st.Secret = func(string, string) (string, error) { return "pw", nil }
	f.reconcile(st)
	sp := f.sp()
	b, tor := netip.MustParseAddr("10.0.1.2"), netip.MustParseAddr("10.0.1.254")
	sp.SetState(b, bgp.StateEstablished, false, "")
	sp.Receive(bgp.Update{Peer: b, Announced: []bgp.ReceivedPath{
		{Prefix: netip.MustParsePrefix("10.244.5.0/26"), NextHop: b, Attrs: &bgp.Attrs{}},
		{Prefix: netip.MustParsePrefix("10.244.1.0/26"), NextHop: b, Attrs: &bgp.Attrs{}}, // our own block
		{Prefix: netip.MustParsePrefix("192.168.0.0/24"), NextHop: b, Attrs: &bgp.Attrs{}},
	}})
	// The ToR's kernel rejects our password: our kernel counts failures.
	f.status() // first look records the counters
	f.md5.Failure += 4

	s := f.status()
	if s.RouterID != netip.MustParseAddr("10.0.1.1") || s.ASN != 64512 || s.SessionsEstablished() != "1/3" || !s.Running {
		t.Errorf("status = %+v", s)
	}
	bs := findSession(t, s, "10.0.1.2")
	if bs.State != "Established" || bs.Kind != v1alpha1.SessionMesh || bs.Source != "b" || bs.PrefixesReceived != 3 || bs.PrefixesAccepted != 1 || bs.Since == nil || bs.PeerAS != 64512 {
		t.Errorf("mesh session = %+v", bs)
	}
	ts := findSession(t, s, tor.String())
	if ts.Kind != v1alpha1.SessionExternal || !strings.Contains(ts.LastError, "TCP MD5 password mismatch") || !strings.Contains(ts.LastError, "dropped 4 segments") {
		t.Errorf("tor session = %+v", ts)
	}
	if want := map[string]int{"own-block": 1, "not-in-pool": 1}; !cmp.Equal(s.Rejected, want) {
		t.Errorf("rejected = %v, want %v", s.Rejected, want)
	}

	// Metrics follow the same snapshot.
	// Node sessions only in aggregate; per-peer series for the external
	// peer alone.
	metrics := gather(t, f.reg)
	if n := len(metrics["rhizome_bgp_session_up"]); n != 1 {
		t.Errorf("session_up series = %d, want 1 (the external peer's)", n)
	}
	wantMetrics := map[string]float64{
		`rhizome_bgp_prefixes_rejected{reason="not-in-pool"}`:          1,
		`rhizome_bgp_prefixes_rejected{reason="own-block"}`:            1,
		`rhizome_bgp_sessions_established{}`:                           1,
		`rhizome_bgp_session_up{kind="external",peer="10.0.1.254"}`:    0,
		`rhizome_bgp_session_state{kind="external",peer="10.0.1.254"}`: 3,
		`rhizome_bgp_peers{kind="mesh",state="Established"}`:           1,
		`rhizome_bgp_peers{kind="external",state="Active"}`:            1,
		`rhizome_bgp_peers{kind="rr",state="Established"}`:             0,
		`rhizome_bgp_kind_prefixes{direction="accepted",kind="mesh"}`:  1,
		`rhizome_bgp_kind_prefixes{direction="received",kind="mesh"}`:  3,
		`rhizome_bgp_flaps_total{kind="mesh"}`:                         0,
		`rhizome_bgp_session_flaps_total{peer="10.0.1.254"}`:           0,
		`rhizome_bgp_rib_routes_set_total{}`:                           1,
	}
	for k, v := range wantMetrics {
		name, _, _ := strings.Cut(k, "{")
		found := false
		for _, m := range metrics[name] {
			if m.key == k {
				found = true
				if m.value != v {
					t.Errorf("%s = %v, want %v", k, m.value, v)
				}
			}
		}
		if !found {
			t.Errorf("metric %s missing; have %v", k, metrics[name])
		}
	}

	// The sink got the one accepted route.
	f.sink.mu.Lock()
	got := slices.Collect(func(yield func(string) bool) {
		for p := range f.sink.routes {
			if !yield(p.String()) {
				return
			}
		}
	})
	f.sink.mu.Unlock()
	if !slices.Equal(got, []string{"10.244.5.0/26"}) {
		t.Errorf("sink routes = %v", got)
	}

	// The session goes away with its node: status and metrics follow.
	st.Nodes = st.Nodes[:1]
	f.reconcile(st)
	if s := f.status(); s.Total != 1 {
		t.Errorf("sessions after the nodes left: %+v", s.Sessions)
	}
}

// Sessions leaving Established are counted by kind (and by peer for
// external ones) and reported to OnSessionChange, from the speaker's
// events; a session being removed is not a flap.
func TestSessionFlaps(t *testing.T) {
	var mu sync.Mutex
	var changes []SessionChange
	f := newFixture(t)
	f.r.cfg.OnSessionChange = func(c SessionChange) { mu.Lock(); changes = append(changes, c); mu.Unlock() }
	st := baseState()
	st.Peers = []*v1alpha1.BGPPeer{torPeer()}
	st.Secret = func(string, string) (string, error) { return "pw", nil }
	f.reconcile(st)
	b, tor := netip.MustParseAddr("10.0.1.2"), netip.MustParseAddr("10.0.1.254")
	for range 3 {
		f.sp().SetState(b, bgp.StateEstablished, false, "")
		f.sp().SetState(b, bgp.StateIdle, false, "connection reset by peer")
	}
	f.sp().SetState(b, bgp.StateEstablished, false, "")
	f.sp().SetState(b, bgp.StateIdle, false, "maximum prefix limit exceeded: the peer sent more than 256 prefixes; session closed")
	f.sp().SetState(tor, bgp.StateEstablished, false, "")
	f.sp().SetState(tor, bgp.StateActive, false, "notification received: cease")
	for _, c := range []struct {
		key  string
		want float64
	}{
		{`rhizome_bgp_flaps_total{kind="mesh"}`, 4},
		{`rhizome_bgp_prefix_limit_exceeded_total{kind="mesh"}`, 1},
		{`rhizome_bgp_prefix_limit_exceeded_total{kind="external"}`, 0},
		{`rhizome_bgp_node_prefix_limit{family="ipv4"}`, 65536 + 1024 + 1},
		{`rhizome_bgp_node_prefix_limit{family="ipv6"}`, 256},
		{`rhizome_bgp_flaps_total{kind="external"}`, 1},
		{`rhizome_bgp_flaps_total{kind="rr"}`, 0},
		{`rhizome_bgp_session_flaps_total{peer="10.0.1.254"}`, 1},
	} {
		if got := metricValue(gather(t, f.reg), c.key); got != c.want {
			t.Errorf("%s = %v, want %v", c.key, got, c.want)
		}
	}
	mu.Lock()
	var downs int
	for _, c := range changes {
		if c.From == "Established" {
			downs++
		}
	}
	n, last := len(changes), changes[len(changes)-1]
	mu.Unlock()
	if downs != 5 || last.Peer != tor || last.Kind != v1alpha1.SessionExternal || last.From != "Established" || last.To != "Active" || !strings.Contains(last.Reason, "cease") {
		t.Errorf("%d changes (%d from Established), last %+v", n, downs, last)
	}
}

// A 500-node mesh: each agent's BGP series do not grow with the cluster.
func TestBGPSeriesBounded(t *testing.T) {
	count := func(nodes int) int {
		f := newFixture(t)
		st := baseState()
		st.Nodes = st.Nodes[:1]
		for i := 2; i <= nodes; i++ {
			st.Nodes = append(st.Nodes, node(fmt.Sprintf("n%d", i), fmt.Sprintf("10.1.%d.%d", i/250, i%250+1)))
		}
		f.reconcile(st)
		n := 0
		for name, ms := range gather(t, f.reg) {
			if strings.HasPrefix(name, "rhizome_bgp_") {
				n += len(ms)
			}
		}
		return n
	}
	small, large := count(3), count(500)
	if small != large || large > 60 {
		t.Errorf("rhizome_bgp_* series per agent: %d with 3 nodes, %d with 500; want the same, bounded", small, large)
	}
}

func metricValue(m map[string][]sample, key string) float64 {
	name, _, _ := strings.Cut(key, "{")
	for _, s := range m[name] {
		if s.key == key {
			return s.value
		}
	}
	return -1
}

func TestParseMD5Stats(t *testing.T) {
	in := []byte("TcpExt: SyncookiesSent TCPMD5NotFound TCPMD5Unexpected TCPMD5Failure Other\n" +
		"TcpExt: 0 3 1 7 9\n" +
		"IpExt: InNoRoutes\nIpExt: 0\n")
	s, err := ParseMD5Stats(in)
	if err != nil || s != (MD5Stats{Failure: 7, NotFound: 3, Unexpected: 1}) {
		t.Errorf("ParseMD5Stats = %+v, %v", s, err)
	}
	if _, err := ParseMD5Stats([]byte("IpExt: a\nIpExt: 1\n")); err == nil {
		t.Error("no TcpExt lines: no error")
	}
	if _, err := ReadMD5Stats(); err != nil {
		t.Errorf("reading this namespace's counters: %v", err)
	}
}

type sample struct {
	key   string
	value float64
}

// gather renders every series as name{label="value",...} → value.
func gather(t *testing.T, g prometheus.Gatherer) map[string][]sample {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]sample{}
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			var labels []string
			for _, l := range m.Label {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			slices.Sort(labels)
			key := mf.GetName() + "{" + strings.Join(labels, ",") + "}"
			out[mf.GetName()] = append(out[mf.GetName()], sample{key, value(m)})
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	}
	return 0
}
