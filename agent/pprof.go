package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"runtime/pprof"
	"strconv"
	"time"
)

// servePprof serves Go's profiles on addr until ctx ends:
// /debug/pprof/profile (CPU, ?seconds=N) and /debug/pprof/NAME (heap,
// allocs, goroutine, ...; ?gc=1 collects first, ?debug=1 is text), for the measurements
// behind the agent's performance work (docs/design/0018). It is off unless
// --pprof-address is set, and meant for a loopback address: the profiles
// expose the process's internals to whoever can reach them.
func servePprof(ctx context.Context, addr string, log *slog.Logger) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening for pprof on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/profile", cpuProfile)
	mux.HandleFunc("/debug/pprof/{name}", func(w http.ResponseWriter, r *http.Request) {
		p := pprof.Lookup(r.PathValue("name"))
		if p == nil {
			http.Error(w, "no such profile", http.StatusNotFound)
			return
		}
		// ?debug=1 is the text form (the heap's with the runtime's
		// memory statistics: stacks, GC), as net/http/pprof serves it.
		debug, _ := strconv.Atoi(r.FormValue("debug"))
		if debug > 0 {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		} else {
			w.Header().Set("Content-Type", "application/octet-stream")
		}
		gc, _ := strconv.Atoi(r.FormValue("gc"))
		if gc > 0 {
			runtime.GC()
		}
		_ = p.WriteTo(w, debug)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	log.Info("serving pprof", "address", l.Addr().String())
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// cpuProfile is /debug/pprof/profile?seconds=N (default 30), what `go tool
// pprof http://ADDRESS/debug/pprof/profile` fetches. The handlers are
// runtime/pprof's own profiles; net/http/pprof is not linked, so the agent
// carries no code for this beyond what the runtime has.
func cpuProfile(w http.ResponseWriter, r *http.Request) {
	sec, _ := strconv.Atoi(r.FormValue("seconds"))
	if sec <= 0 {
		sec = 30
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if err := pprof.StartCPUProfile(w); err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	select {
	case <-time.After(time.Duration(sec) * time.Second):
	case <-r.Context().Done():
	}
	pprof.StopCPUProfile()
}
