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

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rhizome-net/rhizome/agent/agentapi"
)

// AllocateRequest is one CNI attachment asking for addresses.
type AllocateRequest struct {
	Handle, Namespace, Pod, ContainerID, Interface string
}

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
}

// New returns a server; log may be nil.
func New(alloc Allocator, state State, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{alloc: alloc, state: state, log: log.With("component", "localapi")}
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
	l, err := net.Listen("unix", socket)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", socket, err)
	}
	if err := os.Chmod(socket, 0o600); err != nil {
		l.Close()
		return err
	}
	g := grpc.NewServer()
	agentapi.RegisterAgentServer(g, s)
	go func() {
		<-ctx.Done()
		g.GracefulStop()
	}()
	s.log.Info("serving the local API", "socket", socket)
	if err := g.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serving the local API: %w", err)
	}
	os.Remove(socket)
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
	addrs, existing, err := s.alloc.Allocate(ctx, AllocateRequest{
		Handle: req.GetHandle(), Namespace: req.GetPodNamespace(), Pod: req.GetPodName(),
		ContainerID: req.GetContainerId(), Interface: req.GetInterface(),
	})
	if err != nil {
		s.log.Warn("allocation failed", "handle", req.GetHandle(), "pod", req.GetPodNamespace()+"/"+req.GetPodName(), "error", err)
		return nil, status.Errorf(codes.ResourceExhausted, "allocating for %s: %v", req.GetHandle(), err)
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
	resp := &agentapi.ReleaseResponse{}
	for _, a := range addrs {
		resp.Released = append(resp.Released, a.String())
	}
	return resp, nil
}

// GarbageCollect implements agentapi.AgentServer: it releases every CNI
// handle of this node that the runtime did not list as valid.
func (s *Server) GarbageCollect(ctx context.Context, req *agentapi.GarbageCollectRequest) (*agentapi.GarbageCollectResponse, error) {
	handles, err := s.alloc.CNIHandles(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "listing handles: %v", err)
	}
	resp := &agentapi.GarbageCollectResponse{}
	var errs []error
	for _, h := range handles {
		if slices.Contains(req.GetValidHandles(), h) {
			continue
		}
		if _, err := s.alloc.Release(ctx, h); err != nil {
			errs = append(errs, fmt.Errorf("releasing %s: %w", h, err))
			continue
		}
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
