package agent

// This file is the backend of the local API: the agent's answers to the
// CNI plugin (addresses) and to rhizomectl (node state). Package
// agent/localapi is the server: it serves these answers over the unix
// socket and knows nothing else of the agent.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/rhizome-net/rhizome/agent/agentapi"
	"github.com/rhizome-net/rhizome/agent/localapi"
	"github.com/rhizome-net/rhizome/internal/version"
	"github.com/rhizome-net/rhizome/ipam"
	"github.com/rhizome-net/rhizome/routes"
)

// ipamAllocator serves the local API from the agent's IPAM.
type ipamAllocator struct{ a *agent }

var _ localapi.Allocator = (*ipamAllocator)(nil)

func (i *ipamAllocator) Allocate(ctx context.Context, req localapi.AllocateRequest) ([]netip.Addr, bool, error) {
	if strings.HasPrefix(req.Handle, tunnelHandlePrefix) {
		return nil, false, fmt.Errorf("handle %q is reserved for the agent's tunnel addresses", req.Handle)
	}
	existing := i.holds(req.Handle)
	start := time.Now()
	res, err := i.a.ipam.Allocate(ctx, ipam.Request{Handle: req.Handle, Namespace: req.Namespace, Pod: req.Pod, PodUID: req.PodUID})
	if h := i.a.allocDuration; h != nil {
		result := "ok"
		if err != nil {
			result = "error"
		}
		h.WithLabelValues(result).Observe(time.Since(start).Seconds())
	}
	switch {
	case errors.Is(err, ipam.ErrExhausted):
		return nil, false, fmt.Errorf("%w: %w", localapi.ErrExhausted, err)
	case errors.Is(err, ipam.ErrNoPool):
		return nil, false, fmt.Errorf("%w: %w", localapi.ErrNoPool, err)
	case err != nil:
		return nil, false, err
	}
	out := make([]netip.Addr, 0, len(res.Addresses))
	for _, ad := range res.Addresses {
		out = append(out, ad.Addr)
	}
	return out, existing, nil
}

// holds reports whether the handle already holds addresses, from the
// IPAM's view of this node's allocations.
func (i *ipamAllocator) holds(handle string) bool {
	for _, h := range i.a.ipam.Handles() {
		if h == handle {
			return true
		}
	}
	return false
}

func (i *ipamAllocator) Release(ctx context.Context, handle string) ([]netip.Addr, error) {
	if strings.HasPrefix(handle, tunnelHandlePrefix) {
		// The agent's own: freed, the address could go to a pod while
		// the tunnel device still holds it.
		return nil, fmt.Errorf("handle %q is reserved for the agent's tunnel addresses", handle)
	}
	held := i.a.ipam.HandleAddresses(handle)
	if err := i.a.ipam.Release(ctx, handle); err != nil {
		return nil, err
	}
	return held, nil
}

func (i *ipamAllocator) Addresses(_ context.Context, handle string) ([]netip.Addr, error) {
	return i.a.ipam.HandleAddresses(handle), nil
}

func (i *ipamAllocator) CNIHandles(context.Context) ([]string, error) {
	var out []string
	for _, h := range i.a.ipam.Handles() {
		if !strings.HasPrefix(h, tunnelHandlePrefix) {
			out = append(out, h)
		}
	}
	return out, nil
}

// nodeState answers the local API's questions about the node.
type nodeState struct{ a *agent }

var _ localapi.State = (*nodeState)(nil)

// NetworkConfig: pods can be wired once IPAM is ready and the route
// programmer has made its first pass (it knows the MTU); BGP may still be
// converging.
func (s *nodeState) NetworkConfig() (int, bool, string) {
	a := s.a
	if a.ipam == nil || a.routes == nil {
		return 0, false, "the agent is starting"
	}
	if why := a.ready.Get("ipam"); why != "" {
		return 0, false, "IPAM: " + why
	}
	mtu := a.routes.PodMTU()
	if a.routes.Status().Passes == 0 {
		return mtu, false, "the route programmer has not made its first pass"
	}
	return mtu, true, ""
}

func (s *nodeState) Status() *agentapi.StatusResponse {
	a := s.a
	v := version.Get()
	resp := &agentapi.StatusResponse{NodeName: a.cfg.NodeName, Build: &agentapi.Build{
		Version: v.Version, Revision: v.Revision, BuildDate: v.BuildDate, GoVersion: v.GoVersion, Platform: v.Platform}}
	nr := a.ready.NotReady()
	resp.Ready = len(nr) == 0
	resp.NotReadyReason = strings.Join(nr, "; ")
	if a.bgp != nil {
		if st, err := a.bgp.Status(context.Background()); err == nil {
			if st.RouterID.IsValid() {
				resp.RouterId = st.RouterID.String()
			}
			resp.AsNumber = st.ASN
			for _, ss := range st.Sessions {
				sess := &agentapi.Session{
					Peer: ss.Peer, PeerAs: uint32(ss.PeerAS), Kind: string(ss.Kind), State: ss.State,
					PrefixesReceived: ss.PrefixesReceived, PrefixesAccepted: ss.PrefixesAccepted,
					PrefixesAdvertised: ss.PrefixesAdvertised, LastError: ss.LastError, Source: ss.Source,
					PrefixesRejected: ss.PrefixesRejected,
				}
				if ss.Since != nil {
					sess.SinceUnix = ss.Since.Unix()
				}
				if b := ss.BFD; b != nil {
					sess.BfdState, sess.BfdDiagnostic = b.State, b.Diagnostic
					if b.DetectionTime != nil {
						sess.BfdDetectionMs = b.DetectionTime.Milliseconds()
					}
				}
				resp.Sessions = append(resp.Sessions, sess)
			}
		}
	}
	if a.ipam != nil {
		snap := a.ipam.Snapshot()
		for _, b := range snap.Affine {
			resp.Blocks = append(resp.Blocks, b.CIDR.String())
		}
		for _, ad := range snap.Borrowed {
			resp.BorrowedAddresses = append(resp.BorrowedAddresses, ad.String())
		}
	}
	if a.local != nil {
		resp.NodeAddress = a.local.IPv4.String()
		resp.UnderlayInterface = a.local.Interface
		resp.UnderlayMtu = int32(a.local.MTU)
	}
	if a.routes != nil {
		rs := a.routes.Status()
		for _, r := range a.routes.Routes() {
			resp.Routes = append(resp.Routes, describeRoute(r, rs.Devices))
		}
		resp.PodMtu = int32(rs.PodMTU)
		for _, d := range rs.Devices {
			resp.Devices = append(resp.Devices, &agentapi.Device{Name: d.Name, Type: d.Type, Mtu: int32(d.MTU), Address: d.Address})
		}
		for _, p := range rs.Conflicts {
			resp.Conflicts = append(resp.Conflicts, p.String())
		}
		for p, e := range rs.RouteErrors {
			resp.RouteErrors = append(resp.RouteErrors, p.String()+": "+e)
		}
		sort.Strings(resp.RouteErrors)
		resp.RouteProtocol, resp.RouteTable = int32(a.routeProtocol), int64(a.routeTable)
	}
	return resp
}

// describeRoute renders a kernel route for rhizomectl routes.
func describeRoute(r routes.Route, devices []routes.DeviceInfo) *agentapi.Route {
	out := &agentapi.Route{Prefix: r.Dst.String(), Encapsulation: "none"}
	if r.Kind == routes.Blackhole {
		out.Encapsulation = "blackhole"
		return out
	}
	for _, nh := range r.NextHops {
		out.NextHops = append(out.NextHops, nh.Gateway.String())
		if ifc, err := net.InterfaceByIndex(nh.LinkIndex); err == nil {
			out.Device = ifc.Name
			for _, d := range devices {
				if d.Name == ifc.Name {
					out.Encapsulation = d.Type
				}
			}
		}
	}
	return out
}
