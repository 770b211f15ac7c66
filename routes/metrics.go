package routes

import "github.com/prometheus/client_golang/prometheus"

// metrics are the Reconciler's Prometheus metrics. With a nil Registerer
// they exist but are not exported, so the code never checks for nil.
type metrics struct {
	programmed   prometheus.Gauge
	stale        prometheus.Gauge
	conflicts    prometheus.Gauge
	routeErrors  prometheus.Gauge
	passDuration prometheus.Histogram
	writes       *prometheus.CounterVec
	errors       *prometheus.CounterVec
	driftEvents  prometheus.Counter
	// watchRestarts counts restarts of the kernel event watch.
	watchRestarts prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	const ns, sub = "rhizome", "routes"
	m := &metrics{
		programmed: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "programmed",
			Help: "Kernel routes owned by Rhizome (its route protocol, its table)."}),
		stale: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "stale",
			Help: "Owned routes no longer desired, kept until BGP has converged."}),
		conflicts: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "conflicts",
			Help: "Desired prefixes held by a route of another protocol, left alone."}),
		routeErrors: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "unprogrammable",
			Help: "Desired routes that cannot be built or written (no VTEP, no device, kernel refusal)."}),
		passDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "pass_duration_seconds", Help: "Duration of full reconciliation passes.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8)}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "writes_total",
			Help: "Route writes sent to the kernel, by operation."}, []string{"op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "errors_total",
			Help: "Failed route writes and passes, by operation."}, []string{"op"}),
		driftEvents: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "drift_events_total",
			Help: "Kernel notifications that showed a change to something Rhizome owns."}),
		watchRestarts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "watch_restarts_total",
			Help: "Restarts of the kernel event watch after it failed (drift between is repaired by a full pass)."}),
	}
	// Every operation's series exists from the start, so that rates and
	// alerts see zeros rather than nothing.
	for _, op := range []string{"create", "replace", "delete"} {
		m.writes.WithLabelValues(op)
		m.errors.WithLabelValues(op)
	}
	m.errors.WithLabelValues("pass")
	if reg != nil {
		reg.MustRegister(m.programmed, m.stale, m.conflicts, m.routeErrors, m.passDuration, m.writes, m.errors, m.driftEvents, m.watchRestarts)
	}
	return m
}
