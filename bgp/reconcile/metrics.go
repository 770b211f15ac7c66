package reconcile

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rhizome-net/rhizome/bgp"
)

// collector exports the BGP status as Prometheus metrics, computed at
// scrape time from the same snapshot as the RhizomeNode status, so that a
// removed session's series disappear with it.
type collector struct {
	r *Reconciler

	up, state, received, accepted, advertised, rejected, established, total, converged *prometheus.Desc
	routesSet, routesWithdrawn, batches                                                *prometheus.Desc
}

func newCollector(r *Reconciler) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("rhizome_bgp_"+name, help, labels, nil)
	}
	return &collector{
		r:               r,
		up:              d("session_up", "1 if the BGP session is established.", "peer", "kind"),
		state:           d("session_state", "BGP session state: 0 not started, 1 idle, 2 connect, 3 active, 4 opensent, 5 openconfirm, 6 established.", "peer", "kind"),
		received:        d("prefixes_received", "Prefixes the peer sent that the node holds.", "peer", "kind"),
		accepted:        d("prefixes_accepted", "Received prefixes that passed import policy.", "peer", "kind"),
		advertised:      d("prefixes_advertised", "Prefixes sent to the peer.", "peer", "kind"),
		rejected:        d("prefixes_rejected", "Held prefixes that import policy rejected, by reason.", "reason"),
		established:     d("sessions_established", "Established BGP sessions."),
		total:           d("sessions", "Desired BGP sessions, those not started included."),
		converged:       d("converged", "1 once every peer has sent its whole table (or the wait timed out)."),
		routesSet:       d("rib_routes_set_total", "Routes handed to the route programmer (added or changed)."),
		routesWithdrawn: d("rib_routes_withdrawn_total", "Routes the route programmer was told to remove."),
		batches:         d("rib_batches_total", "Batches handed to the route programmer."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.state, c.received, c.accepted, c.advertised, c.rejected, c.established, c.total, c.converged, c.routesSet, c.routesWithdrawn, c.batches} {
		ch <- d
	}
}

var stateValues = map[string]float64{StateNotStarted: 0}

func init() {
	for s := bgp.StateIdle; s <= bgp.StateEstablished; s++ {
		stateValues[s.String()] = float64(s)
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.r.status.get(ctx, true)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.up, err)
		return
	}
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, s := range st.Sessions {
		kind := string(s.Kind)
		up := 0.0
		if s.State == bgp.StateEstablished.String() {
			up = 1
		}
		g(c.up, up, s.Peer, kind)
		g(c.state, stateValues[s.State], s.Peer, kind)
		g(c.received, float64(s.PrefixesReceived), s.Peer, kind)
		g(c.accepted, float64(s.PrefixesAccepted), s.Peer, kind)
		g(c.advertised, float64(s.PrefixesAdvertised), s.Peer, kind)
	}
	for reason, n := range st.Rejected {
		g(c.rejected, float64(n), reason)
	}
	g(c.established, float64(st.Established))
	g(c.total, float64(st.Total))
	conv := 0.0
	if st.Converged {
		conv = 1
	}
	g(c.converged, conv)
	t := c.r.rib.Totals()
	ch <- prometheus.MustNewConstMetric(c.routesSet, prometheus.CounterValue, float64(t.RoutesSet))
	ch <- prometheus.MustNewConstMetric(c.routesWithdrawn, prometheus.CounterValue, float64(t.RoutesWithdrawn))
	ch <- prometheus.MustNewConstMetric(c.batches, prometheus.CounterValue, float64(t.Batches))
}
