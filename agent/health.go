package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/rhizome-net/rhizome/agent/agentapi"
	"github.com/rhizome-net/rhizome/internal/version"
)

// readiness collects named conditions; the agent is ready when all hold.
// /readyz lists the ones that do not, so a failing probe says why.
type readiness struct {
	mu     sync.Mutex
	checks map[string]string // name → reason not ready ("" = ready)
}

func newReadiness(names ...string) *readiness {
	r := &readiness{checks: map[string]string{}}
	for _, n := range names {
		r.checks[n] = "starting"
	}
	return r
}

// Set records a condition: reason "" means it holds.
func (r *readiness) Set(name, reason string) {
	r.mu.Lock()
	r.checks[name] = reason
	r.mu.Unlock()
}

// NotReady returns "name: reason" for each condition that does not hold,
// sorted.
func (r *readiness) NotReady() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for n, why := range r.checks {
		if why != "" {
			out = append(out, n+": "+why)
		}
	}
	sort.Strings(out)
	return out
}

// Get returns one condition's reason ("" = holds).
func (r *readiness) Get(name string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.checks[name]
}

// newRegistry returns the agent's Prometheus registry with the Go runtime
// and process collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// serveHealth serves /healthz (the process is alive and its loop turns),
// /readyz, /metrics, /status and /version until ctx ends.
func serveHealth(ctx context.Context, addr string, ready *readiness, alive func() error, reg *prometheus.Registry, status statusFunc, log *slog.Logger) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening for health and metrics on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: healthHandler(ready, alive, reg, status), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	log.Info("serving health and metrics", "address", l.Addr().String())
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// statusFunc is the node's status for /status; nil while the agent starts.
type statusFunc func() *agentapi.StatusResponse

// healthHandler serves /healthz, /readyz and /metrics, and the read-only
// views rhizomectl --node reaches through the API server's pod proxy:
// /status (the local API's StatusResponse as protojson: sessions, routes,
// blocks; no secrets) and /version (this build, as internal/version.Info).
func healthHandler(ready *readiness, alive func() error, reg *prometheus.Registry, status statusFunc) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := alive(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if nr := ready.NotReady(); len(nr) > 0 {
			http.Error(w, "not ready:\n"+strings.Join(nr, "\n"), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		st := status()
		if st == nil {
			http.Error(w, "the agent is starting", http.StatusServiceUnavailable)
			return
		}
		b, err := protojson.Marshal(st)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	})
	mux.HandleFunc("/version", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(version.Get())
	})
	return mux
}
