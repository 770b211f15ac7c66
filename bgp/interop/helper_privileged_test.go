//go:build privileged

package interop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/rhizome-net/rhizome/bfd"
	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/bgp/reconcile"
	"github.com/rhizome-net/rhizome/bgp/rib"
	"github.com/rhizome-net/rhizome/bgp/topology"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/test/netns"
)

// helperEnv names the directory a helper process works in: it reads
// state.json there and serves its API on api.sock.
const helperEnv = "RHIZOME_BGP_HELPER_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		if err := runHelper(dir); err != nil {
			fmt.Fprintln(os.Stderr, "bgp helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	netns.Sweep(netns.TestPrefix)
	os.Exit(m.Run())
}

// helperState is the cluster state a helper reconciles, as JSON.
type helperState struct {
	NodeName string                      `json:"nodeName"`
	Nodes    []corev1.Node               `json:"nodes"`
	Configs  []v1alpha1.BGPConfiguration `json:"configs"`
	Peers    []v1alpha1.BGPPeer          `json:"peers"`
	Pools    []v1alpha1.IPPool           `json:"pools"`
	Blocks   []netip.Prefix              `json:"blocks"`
	Secrets  map[string]string           `json:"secrets"` // "name/key" → value
	API      string                      `json:"api"`
}

func (s *helperState) reconcileState() reconcile.State {
	st := reconcile.State{Input: topology.Input{NodeName: s.NodeName}}
	for i := range s.Nodes {
		st.Nodes = append(st.Nodes, &s.Nodes[i])
	}
	for i := range s.Configs {
		st.Configs = append(st.Configs, &s.Configs[i])
	}
	for i := range s.Peers {
		st.Peers = append(st.Peers, &s.Peers[i])
	}
	for i := range s.Pools {
		st.Pools = append(st.Pools, &s.Pools[i])
	}
	st.Local.Blocks = s.Blocks
	secrets := s.Secrets
	st.Secret = func(name, key string) (string, error) {
		v, ok := secrets[name+"/"+key]
		if !ok {
			return "", fmt.Errorf("secrets %q not found", name)
		}
		return v, nil
	}
	return st
}

// routeTable is the helper's sink: the routes the kernel would get.
type routeTable struct {
	mu        sync.Mutex
	routes    map[netip.Prefix]rib.Route
	converged bool
}

func (t *routeTable) ApplyRoutes(b rib.Batch) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, r := range b.Set {
		t.routes[r.Prefix] = r
	}
	for _, p := range b.Withdraw {
		delete(t.routes, p)
	}
}

func (t *routeTable) Converged() { t.mu.Lock(); t.converged = true; t.mu.Unlock() }

// helperRoutes is the /routes answer.
type helperRoutes struct {
	Routes    []string `json:"routes"` // "prefix via nh,nh"
	Converged bool     `json:"converged"`
}

func runHelper(dir string) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	read := func() (*helperState, error) {
		b, err := os.ReadFile(filepath.Join(dir, "state.json"))
		if err != nil {
			return nil, err
		}
		var s helperState
		return &s, json.Unmarshal(b, &s)
	}
	st, err := read()
	if err != nil {
		return err
	}
	table := &routeTable{routes: map[netip.Prefix]rib.Route{}}
	// BFD as the agent runs it: in the process's namespace, closed
	// without a word when the process stops for a restart.
	sessions, err := bfd.NewManager(bfd.Config{Transport: &bfd.UDP{}, Logger: log})
	if err != nil {
		return err
	}
	defer sessions.Close()
	suspended := bfd.SuspendedFile(dir)
	if sus, err := bfd.ReadSuspended(suspended); err != nil {
		return err
	} else if len(sus) > 0 {
		sessions.Resume(sus)
	}
	r := reconcile.New(reconcile.Config{
		BFD:             sessions,
		NewSpeaker:      func() bgp.Speaker { return bgp.NewGoBGP(bgp.GoBGPOptions{Logger: log}) },
		Sink:            table,
		Logger:          log,
		APIAddress:      st.API,
		ConvergeTimeout: 30 * time.Second,
		StaleRecheck:    2 * time.Second,
	})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go r.Run(ctx)
	if err := r.Reconcile(ctx, st.reconcileState()); err != nil {
		log.Warn("reconcile", "error", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/status", func(w http.ResponseWriter, req *http.Request) {
		s, err := r.Status(req.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		json.NewEncoder(w).Encode(s)
	})
	mux.HandleFunc("/routes", func(w http.ResponseWriter, _ *http.Request) {
		table.mu.Lock()
		out := helperRoutes{Converged: table.converged}
		for _, rt := range table.routes {
			line := rt.Prefix.String() + " via"
			for i, nh := range rt.NextHops {
				if i > 0 {
					line += ","
				} else {
					line += " "
				}
				line += nh.String()
			}
			out.Routes = append(out.Routes, line)
		}
		table.mu.Unlock()
		slices.Sort(out.Routes)
		json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("/reload", func(w http.ResponseWriter, req *http.Request) {
		s, err := read()
		if err == nil {
			err = r.Reconcile(req.Context(), s.reconcileState())
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	sock := filepath.Join(dir, "api.sock")
	os.Remove(sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux}
	go func() {
		<-ctx.Done()
		// As the agent does on SIGTERM: hand BFD over to the next run, and
		// leave the BGP sessions to the kernel, so that peers see a lost
		// connection and keep our routes.
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		sus := sessions.CloseForRestart(sctx, r.BFDRestartHold)
		cancel()
		if err := bfd.WriteSuspended(suspended, sus); err != nil {
			log.Warn("writing the suspended BFD sessions", "error", err)
		}
		r.Stop(context.Background())
		srv.Close()
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
