// Package localapi serves the agent's local gRPC API (package agentapi) on a
// unix socket: address allocation for the CNI plugin and node state for
// rhizomectl. It depends only on two small interfaces, so the CNI plugin's
// tests can run it with any allocator.
package localapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rhizome-net/rhizome/agent/agentapi"
)

// AllocateRequest is one CNI attachment asking for addresses.
type AllocateRequest struct {
	Handle, Namespace, Pod, PodUID, ContainerID, Interface string
}

// Errors an Allocator wraps so that the server answers with a gRPC code the
// CNI plugin turns into a distinct CNI error code: a pool exhausted or no
// pool for the node is not "agent unavailable".
var (
	ErrExhausted = errors.New("no address left")
	ErrNoPool    = errors.New("no IP pool applies to this node")
)

// DefaultGCGrace is how young an allocation must be for CNI GC to leave it
// alone: a runtime builds its list of valid attachments before it sends GC,
// so an ADD that completes in between would otherwise lose its address.
const DefaultGCGrace = 2 * time.Minute

// Allocator is the IPAM the API serves from.
type Allocator interface {
	// Allocate returns the addresses of the handle, one per IP family with
	// a pool for this node, allocating them on first use. existing is true
	// when the handle held them before the call. Safe for concurrent use.
	Allocate(ctx context.Context, req AllocateRequest) (addrs []netip.Addr, existing bool, err error)
	// Release frees the handle's addresses and returns them; an unknown
	// handle returns none and no error.
	Release(ctx context.Context, handle string) ([]netip.Addr, error)
	// CNIHandles lists the handles of the allocations this node made for
	// CNI attachments (never tunnel or other internal allocations).
	CNIHandles(ctx context.Context) ([]string, error)
	// Addresses returns the addresses the handle holds, allocating nothing.
	Addresses(ctx context.Context, handle string) ([]netip.Addr, error)
}

// State answers the non-IPAM questions.
type State interface {
	// NetworkConfig reports the pod MTU and whether the agent can serve ADD.
	NetworkConfig() (mtu int, ready bool, notReadyReason string)
	// Status is the node's state for rhizomectl.
	Status() *agentapi.StatusResponse
}

// Server implements agentapi.AgentServer.
type Server struct {
	agentapi.UnimplementedAgentServer
	alloc Allocator
	state State
	log   *slog.Logger
	// GCGrace protects allocations younger than this from CNI GC
	// (DefaultGCGrace unless set before Serve). Allocations the server
	// did not see being made (before a restart) count as made when it
	// started.
	GCGrace time.Duration
	// Now is the clock (time.Now unless set before Serve).
	Now func() time.Time

	mu      sync.Mutex
	started time.Time
	made    map[string]time.Time // handle -> when Allocate first served it
}

// New returns a server; log may be nil.
func New(alloc Allocator, state State, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{alloc: alloc, state: state, log: log.With("component", "localapi"),
		GCGrace: DefaultGCGrace, Now: time.Now, started: time.Now(), made: map[string]time.Time{}}
}

// Serve listens on the unix socket (replacing a stale socket file, mode
// 0600, parent directory created) and serves until ctx ends.
func (s *Server) Serve(ctx context.Context, socket string) error {
	if err := os.MkdirAll(filepath.Dir(socket), 0o755); err != nil {
		return fmt.Errorf("creating the socket directory: %w", err)
	}
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale socket %s: %w", socket, err)
	}
	// The socket appears at its path only once it is 0600: it is made
	// under a temporary name, restricted, then renamed, so there is no
	// moment when it has the umask's permissions.
	tmp := socket + ".new"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale socket %s: %w", tmp, err)
	}
	l, err := net.Listen("unix", tmp)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", socket, err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false) // Serve removes the socket itself
	if err := os.Chmod(tmp, 0o600); err != nil {
		l.Close()
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, socket); err != nil {
		l.Close()
		os.Remove(tmp)
		return fmt.Errorf("placing the socket at %s: %w", socket, err)
	}
	g := grpc.NewServer()
	agentapi.RegisterAgentServer(g, s)
	go func() {
		<-ctx.Done()
		g.GracefulStop()
	}()
	s.log.Info("serving the local API", "socket", socket)
	defer os.Remove(socket)
	if err := g.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serving the local API: %w", err)
	}
	return nil
}

// Allocate implements agentapi.AgentServer.
func (s *Server) Allocate(ctx context.Context, req *agentapi.AllocateRequest) (*agentapi.AllocateResponse, error) {
	if req.GetHandle() == "" {
		return nil, status.Error(codes.InvalidArgument, "handle is required")
	}
	mtu, ready, reason := s.state.NetworkConfig()
	if !ready {
		// FailedPrecondition, not Unavailable: the plugin tells "try again
		// later" (agent starting) from "cannot reach the agent".
		return nil, status.Errorf(codes.FailedPrecondition, "the agent is not ready: %s", reason)
	}
	s.mu.Lock()
	_, seen := s.made[req.GetHandle()]
	if !seen {
		// Before the allocation is written: a GC that runs meanwhile
		// must already see it as young.
		s.made[req.GetHandle()] = s.Now()
	}
	s.mu.Unlock()
	addrs, existing, err := s.alloc.Allocate(ctx, AllocateRequest{
		Handle: req.GetHandle(), Namespace: req.GetPodNamespace(), Pod: req.GetPodName(), PodUID: req.GetPodUid(),
		ContainerID: req.GetContainerId(), Interface: req.GetInterface(),
	})
	if err != nil {
		if !seen {
			// Nothing to protect: forget the handle, so that failed ADDs
			// (a pool exhausted for a while) do not pile up here.
			s.mu.Lock()
			delete(s.made, req.GetHandle())
			s.mu.Unlock()
		}
		s.log.Warn("allocation failed", "handle", req.GetHandle(), "pod", req.GetPodNamespace()+"/"+req.GetPodName(), "error", err)
		code := codes.Internal
		switch {
		case errors.Is(err, ErrExhausted):
			code = codes.ResourceExhausted
		case errors.Is(err, ErrNoPool):
			code = codes.NotFound
		case errors.Is(err, context.DeadlineExceeded):
			code = codes.DeadlineExceeded
		}
		return nil, status.Errorf(code, "allocating for %s: %v", req.GetHandle(), err)
	}
	resp := &agentapi.AllocateResponse{Existing: existing, Mtu: int32(mtu)}
	for _, a := range addrs {
		resp.Addresses = append(resp.Addresses, netip.PrefixFrom(a, a.BitLen()).String())
	}
	s.log.Debug("allocated", "handle", req.GetHandle(), "addresses", resp.Addresses, "existing", existing)
	return resp, nil
}

// Release implements agentapi.AgentServer.
func (s *Server) Release(ctx context.Context, req *agentapi.ReleaseRequest) (*agentapi.ReleaseResponse, error) {
	if req.GetHandle() == "" {
		return nil, status.Error(codes.InvalidArgument, "handle is required")
	}
	addrs, err := s.alloc.Release(ctx, req.GetHandle())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "releasing %s: %v", req.GetHandle(), err)
	}
	s.mu.Lock()
	delete(s.made, req.GetHandle())
	s.mu.Unlock()
	resp := &agentapi.ReleaseResponse{}
	for _, a := range addrs {
		resp.Released = append(resp.Released, a.String())
	}
	return resp, nil
}

// GarbageCollect implements agentapi.AgentServer: it releases every CNI
// handle of this node and of the request's network that the runtime did
// not list as valid, unless it was allocated less than GCGrace ago. A
// request that names no network frees nothing: it cannot say whose
// attachments it lists.
func (s *Server) GarbageCollect(ctx context.Context, req *agentapi.GarbageCollectRequest) (*agentapi.GarbageCollectResponse, error) {
	network := req.GetNetwork()
	if network == "" || strings.Contains(network, "/") {
		return nil, status.Errorf(codes.InvalidArgument, "garbage collection needs the CNI network name (got %q); nothing was released", network)
	}
	handles, err := s.alloc.CNIHandles(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "listing handles: %v", err)
	}
	resp := &agentapi.GarbageCollectResponse{}
	var errs []error
	now := s.Now()
	for _, h := range handles {
		if !strings.HasPrefix(h, network+"/") || slices.Contains(req.GetValidHandles(), h) {
			continue
		}
		s.mu.Lock()
		made, ok := s.made[h]
		if !ok {
			made = s.started
		}
		s.mu.Unlock()
		if now.Sub(made) < s.GCGrace {
			continue
		}
		if _, err := s.alloc.Release(ctx, h); err != nil {
			errs = append(errs, fmt.Errorf("releasing %s: %w", h, err))
			continue
		}
		s.mu.Lock()
		delete(s.made, h)
		s.mu.Unlock()
		resp.ReleasedHandles = append(resp.ReleasedHandles, h)
	}
	if len(errs) > 0 {
		return resp, status.Error(codes.Internal, errors.Join(errs...).Error())
	}
	if len(resp.ReleasedHandles) > 0 {
		s.log.Info("CNI garbage collection released handles", "handles", resp.ReleasedHandles)
	}
	return resp, nil
}

// Lookup implements agentapi.AgentServer.
func (s *Server) Lookup(ctx context.Context, req *agentapi.LookupRequest) (*agentapi.LookupResponse, error) {
	if req.GetHandle() == "" {
		return nil, status.Error(codes.InvalidArgument, "handle is required")
	}
	addrs, err := s.alloc.Addresses(ctx, req.GetHandle())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "looking up %s: %v", req.GetHandle(), err)
	}
	resp := &agentapi.LookupResponse{}
	for _, a := range addrs {
		resp.Addresses = append(resp.Addresses, netip.PrefixFrom(a, a.BitLen()).String())
	}
	return resp, nil
}

// NetworkConfig implements agentapi.AgentServer.
func (s *Server) NetworkConfig(context.Context, *agentapi.NetworkConfigRequest) (*agentapi.NetworkConfigResponse, error) {
	mtu, ready, reason := s.state.NetworkConfig()
	st := s.state.Status()
	return &agentapi.NetworkConfigResponse{NodeName: st.GetNodeName(), Mtu: int32(mtu), Ready: ready, NotReadyReason: reason}, nil
}

// Status implements agentapi.AgentServer.
func (s *Server) Status(context.Context, *agentapi.StatusRequest) (*agentapi.StatusResponse, error) {
	return s.state.Status(), nil
}
