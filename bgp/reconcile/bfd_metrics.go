package reconcile

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rhizome-net/rhizome/bfd"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// bfdCollector exports BFD as Prometheus metrics with bounded series: node
// sessions (mesh, route reflection) only in aggregate, by kind and state —
// a 100-node mesh must not add 100 series per node — and per-peer series
// only for external peers, whose number operators choose.
type bfdCollector struct {
	r *Reconciler

	sessions, failures, peerUp, peerFailures, sent, received, dropped *prometheus.Desc
}

var (
	bfdKinds  = []v1alpha1.SessionKind{v1alpha1.SessionMesh, v1alpha1.SessionRR, v1alpha1.SessionExternal}
	bfdStates = []string{bfd.Up.String(), bfd.Init.String(), bfd.Down.String(), bfd.AdminDown.String(), bfdUnavailable}
)

func newBFDCollector(r *Reconciler) *bfdCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("rhizome_bfd_"+name, help, labels, nil)
	}
	return &bfdCollector{
		r:            r,
		sessions:     d("sessions", "BFD sessions by BGP session kind and BFD state.", "kind", "state"),
		failures:     d("failures_total", "BFD sessions that went from Up to Down (not by the peer's AdminDown), by BGP session kind.", "kind"),
		peerUp:       d("session_up", "1 if the BFD session to an external peer is Up.", "peer"),
		peerFailures: d("session_failures_total", "Failures of the BFD session to an external peer since it was started.", "peer"),
		sent:         d("packets_sent_total", "BFD Control packets sent."),
		received:     d("packets_received_total", "BFD Control packets received and matched to a session."),
		dropped:      d("packets_dropped_total", "BFD packets dropped, by reason (ttl: not 255; malformed; unknown-discr; unknown-peer; wrong-address; session-closed).", "reason"),
	}
}

func (c *bfdCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.sessions, c.failures, c.peerUp, c.peerFailures, c.sent, c.received, c.dropped} {
		ch <- d
	}
}

func (c *bfdCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.r.status.get(ctx, true)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.sessions, err)
		return
	}
	count := map[v1alpha1.SessionKind]map[string]int{}
	for _, k := range bfdKinds {
		count[k] = map[string]int{}
	}
	for _, s := range st.Sessions {
		if s.BFD == nil {
			continue
		}
		if count[s.Kind] != nil {
			count[s.Kind][s.BFD.State]++
		}
		if s.Kind == v1alpha1.SessionExternal {
			up := 0.0
			if s.BFD.State == bfd.Up.String() {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(c.peerUp, prometheus.GaugeValue, up, s.Peer)
			ch <- prometheus.MustNewConstMetric(c.peerFailures, prometheus.CounterValue, float64(s.BFD.Failures), s.Peer)
		}
	}
	for _, k := range bfdKinds {
		for _, state := range bfdStates {
			ch <- prometheus.MustNewConstMetric(c.sessions, prometheus.GaugeValue, float64(count[k][state]), string(k), state)
		}
	}
	c.r.mu.Lock()
	failures := make(map[v1alpha1.SessionKind]uint64, len(bfdKinds))
	for _, k := range bfdKinds {
		failures[k] = c.r.bfdFailures[k]
	}
	c.r.mu.Unlock()
	for _, k := range bfdKinds {
		ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(failures[k]), string(k))
	}
	if m, ok := c.r.cfg.BFD.(interface{ Stats() bfd.Stats }); ok {
		s := m.Stats()
		ch <- prometheus.MustNewConstMetric(c.sent, prometheus.CounterValue, float64(s.Sent))
		ch <- prometheus.MustNewConstMetric(c.received, prometheus.CounterValue, float64(s.Received))
		for reason, n := range s.Dropped {
			ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(n), reason)
		}
	}
}
