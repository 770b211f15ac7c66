package reconcile

import (
	"context"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/bgp/policy"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// hostOfPeer is the address part of a session's peer key ("10.0.0.1" or
// "10.0.0.1:1790").
func hostOfPeer(peer string) string {
	if ap, err := netip.ParseAddrPort(peer); err == nil {
		return ap.Addr().String()
	}
	return peer
}

// collector exports the BGP status as Prometheus metrics, computed at
// scrape time from the same snapshot as the RhizomeNode status, so that a
// removed session's series disappear with it.
//
// Series stay bounded as the cluster grows, as BFD's do (bfd_metrics.go):
// sessions to other nodes (mesh, route reflection) are exported only in
// aggregate, by kind and state — in a 500-node mesh, per-peer series would
// be 499 per node and 250,000 in all — and per-peer series exist only for
// external peers, whose number operators choose.
type collector struct {
	r *Reconciler

	up, state, received, accepted, advertised, rejected, established, total, converged *prometheus.Desc
	peers, prefixes, flaps, peerFlaps, prefixLimits, nodeLimit                         *prometheus.Desc
	routesSet, routesWithdrawn, batches                                                *prometheus.Desc
}

// sessionStates are the states rhizome_bgp_peers always exports (0 when no
// session is in them), so that alerts see a 0 rather than no series.
var sessionStates = func() []string {
	out := []string{StateNotStarted}
	for s := bgp.StateIdle; s <= bgp.StateEstablished; s++ {
		out = append(out, s.String())
	}
	return out
}()

func newCollector(r *Reconciler) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("rhizome_bgp_"+name, help, labels, nil)
	}
	return &collector{
		r:               r,
		up:              d("session_up", "1 if the BGP session to an external peer is established.", "peer", "kind"),
		state:           d("session_state", "State of the BGP session to an external peer: 0 not started, 1 idle, 2 connect, 3 active, 4 opensent, 5 openconfirm, 6 established.", "peer", "kind"),
		received:        d("prefixes_received", "Prefixes an external peer sent that the node holds.", "peer", "kind"),
		accepted:        d("prefixes_accepted", "Prefixes received from an external peer that passed import policy.", "peer", "kind"),
		advertised:      d("prefixes_advertised", "Prefixes sent to an external peer.", "peer", "kind"),
		peers:           d("peers", "BGP sessions by kind (mesh, rr, external) and state.", "kind", "state"),
		prefixes:        d("kind_prefixes", "Prefixes over all sessions of a kind: received, accepted (import policy) or advertised.", "kind", "direction"),
		flaps:           d("flaps_total", "BGP sessions that left Established, by kind.", "kind"),
		peerFlaps:       d("session_flaps_total", "Times the BGP session to an external peer left Established.", "peer"),
		nodeLimit:       d("node_prefix_limit", "The prefix limit of every session to another node (mesh, rr) whose BGPPeer sets none, derived from the pools, by family.", "family"),
		prefixLimits:    d("prefix_limit_exceeded_total", "BGP sessions closed because the peer sent more prefixes than their limit, by kind (mesh and rr sessions have one derived from the pools).", "kind"),
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
	for _, d := range []*prometheus.Desc{c.up, c.state, c.received, c.accepted, c.advertised, c.rejected, c.established, c.total, c.converged,
		c.peers, c.prefixes, c.flaps, c.peerFlaps, c.prefixLimits, c.nodeLimit, c.routesSet, c.routesWithdrawn, c.batches} {
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
	byState := map[v1alpha1.SessionKind]map[string]int{}
	type sums struct{ received, accepted, advertised int64 }
	byKind := map[v1alpha1.SessionKind]*sums{}
	for _, k := range bfdKinds {
		byState[k], byKind[k] = map[string]int{}, &sums{}
	}
	for _, s := range st.Sessions {
		if byState[s.Kind] == nil {
			continue
		}
		state := s.State
		if _, ok := stateValues[state]; !ok {
			state = bgp.StateUnknown.String()
		}
		byState[s.Kind][state]++
		k := byKind[s.Kind]
		k.received += s.PrefixesReceived
		k.accepted += s.PrefixesAccepted
		k.advertised += s.PrefixesAdvertised
		if s.Kind != v1alpha1.SessionExternal {
			continue
		}
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
	for _, k := range bfdKinds {
		for _, state := range sessionStates {
			g(c.peers, float64(byState[k][state]), string(k), state)
		}
		if n := byState[k][bgp.StateUnknown.String()]; n > 0 {
			g(c.peers, float64(n), string(k), bgp.StateUnknown.String())
		}
		s := byKind[k]
		g(c.prefixes, float64(s.received), string(k), "received")
		g(c.prefixes, float64(s.accepted), string(k), "accepted")
		g(c.prefixes, float64(s.advertised), string(k), "advertised")
	}
	c.r.flaps.mu.Lock()
	flaps := make(map[v1alpha1.SessionKind]uint64, len(c.r.flaps.byKind))
	for k, n := range c.r.flaps.byKind {
		flaps[k] = n
	}
	limits := make(map[v1alpha1.SessionKind]uint64, len(c.r.flaps.limits))
	for k, n := range c.r.flaps.limits {
		limits[k] = n
	}
	peerFlaps := make(map[string]uint64, len(c.r.flaps.byPeer))
	for p, n := range c.r.flaps.byPeer {
		peerFlaps[p.String()] = n
	}
	c.r.flaps.mu.Unlock()
	for _, k := range bfdKinds {
		ch <- prometheus.MustNewConstMetric(c.flaps, prometheus.CounterValue, float64(flaps[k]), string(k))
		ch <- prometheus.MustNewConstMetric(c.prefixLimits, prometheus.CounterValue, float64(limits[k]), string(k))
	}
	for _, s := range st.Sessions {
		if s.Kind == v1alpha1.SessionExternal {
			ch <- prometheus.MustNewConstMetric(c.peerFlaps, prometheus.CounterValue, float64(peerFlaps[hostOfPeer(s.Peer)]), s.Peer)
		}
	}
	// Every reason is exported, 0 when nothing was rejected for it.
	for r := policy.Reason(0); int(r) < policy.NumReasons; r++ {
		if r != policy.Accepted {
			g(c.rejected, float64(st.Rejected[r.String()]), r.String())
		}
	}
	g(c.nodeLimit, float64(c.r.limits[0].Load()), "ipv4")
	g(c.nodeLimit, float64(c.r.limits[1].Load()), "ipv6")
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
