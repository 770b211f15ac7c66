// Package cni is Rhizome's CNI plugin (spec 1.0 and 1.1): one veth per pod,
// no bridge, pure L3. The pod's eth0 gets a /32 (and /128) and a default
// route via the link-local gateway 169.254.1.1 (fe80::1), which the host side
// answers for by proxy ARP/NDP; the host gets a /32 (/128) route to the pod.
// Addresses come from the node's agent over its unix socket
// (agent/agentapi), which serves them from its cached IPAM blocks.
//
// Failure rules: when the agent is unreachable, ADD fails at once and leaves
// nothing behind; when ADD fails after allocating, the address is released
// (the named error checked in a defer), unless an earlier ADD of the same
// attachment holds it; DEL succeeds when the pod, the veth or the allocation
// is already gone.
package cni

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rhizome-net/rhizome/agent/agentapi"
)

// CNI error codes of this plugin (100 and up are plugin-specific).
const (
	ErrAgentUnavailable   = 100 // the agent cannot be reached or refused the request
	ErrInterfaceMissing   = 101 // CHECK: the pod or host interface is missing
	ErrAddressMissing     = 102 // CHECK: the pod interface lacks an address
	ErrHostRouteMissing   = 103 // CHECK: the host route to the pod is missing
	ErrNetworkSetupFailed = 104 // ADD: building the veth pair or routes failed
	ErrPoolExhausted      = 105 // ADD: the pools that apply to this node have no free address
	ErrNoPool             = 106 // ADD: no enabled IP pool selects this node
	ErrAllocationFailed   = 107 // ADD: the agent answered but could not allocate (see the details)
	ErrInterfaceExists    = 108 // ADD: the pod already has an interface of that name
	ErrAddressNotHeld     = 109 // CHECK: the agent holds no such address for this attachment
)

// allocationError turns the agent's answer to Allocate into a CNI error
// whose code says what to do: wait (not ready), add addresses (exhausted),
// fix the pools (no pool), or look at the agent (unreachable, failed).
func allocationError(err error) *types.Error {
	switch status.Code(err) {
	case codes.FailedPrecondition:
		return types.NewError(types.ErrTryAgainLater, "the rhizome agent is not ready yet", err.Error())
	case codes.ResourceExhausted:
		return types.NewError(ErrPoolExhausted, "no pod address left: the IP pools for this node are exhausted", err.Error())
	case codes.NotFound:
		return types.NewError(ErrNoPool, "no IP pool applies to this node", err.Error())
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return types.NewError(ErrAgentUnavailable, "cannot reach the rhizome agent", err.Error())
	}
	return types.NewError(ErrAllocationFailed, "the rhizome agent could not allocate an address", err.Error())
}

// Dialer connects to the agent; tests replace it.
type Dialer func(socket string) (agentapi.AgentClient, io.Closer, error)

// Plugin holds the plugin's dependencies.
type Plugin struct {
	Dial Dialer
	// Stderr receives the plugin's logs (the runtime collects stderr).
	Stderr io.Writer
}

// Main runs the plugin as the runtime invokes it.
func Main(about string) {
	p := &Plugin{Dial: DialAgent, Stderr: os.Stderr}
	skel.PluginMainFuncs(p.Funcs(), version.All, about)
}

// DialAgent is the production Dialer.
func DialAgent(socket string) (agentapi.AgentClient, io.Closer, error) {
	c, conn, err := agentapi.Dial(socket)
	if err != nil {
		return nil, nil, err
	}
	return c, conn, nil
}

// Funcs returns the CNI verbs.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, GC: p.GC, Status: p.Status}
}

func (p *Plugin) logger(conf *NetConf, args *skel.CmdArgs) *slog.Logger {
	level := slog.LevelInfo
	switch conf.LogLevel {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	w := p.Stderr
	if w == nil {
		w = io.Discard
	}
	l := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})).With("component", "rhizome-cni")
	if args != nil {
		l = l.With("container", shortID(args.ContainerID), "ifname", args.IfName)
	}
	return l
}

func (p *Plugin) connect(conf *NetConf) (agentapi.AgentClient, io.Closer, error) {
	c, closer, err := p.Dial(conf.AgentSocket)
	if err != nil {
		return nil, nil, types.NewError(ErrAgentUnavailable, "cannot reach the rhizome agent", err.Error())
	}
	return c, closer, nil
}

// Add allocates addresses for the attachment and builds the pod's network.
func (p *Plugin) Add(args *skel.CmdArgs) (err error) {
	conf, cerr := ParseConfig(args.StdinData)
	if cerr != nil {
		return cerr
	}
	// The spec: an interface of that name in the container is an error.
	// Checked before anything is allocated or created, so that a failed
	// ADD never removes what it did not make (an earlier ADD's interface,
	// or one another plugin owns).
	if exists, err := podInterfaceExists(args.Netns, args.IfName); err != nil {
		return types.NewError(ErrNetworkSetupFailed, "opening the pod's network namespace failed", err.Error())
	} else if exists {
		return types.NewError(ErrInterfaceExists, fmt.Sprintf("interface %s already exists in the pod's network namespace", args.IfName),
			"a runtime must not ADD an attachment twice without DEL; DEL it first")
	}
	log := p.logger(conf, args)
	k8s, err := parseK8sArgs(args.Args)
	if err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "invalid CNI_ARGS", err.Error())
	}
	client, closer, err := p.connect(conf)
	if err != nil {
		return err
	}
	defer closer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), conf.timeout)
	defer cancel()

	// One call: the agent refuses (FailedPrecondition) while it is not ready, and
	// answers with the MTU along with the addresses.
	handle := Handle(conf.Name, args.ContainerID, args.IfName)
	t1 := time.Now()
	alloc, err := client.Allocate(ctx, &agentapi.AllocateRequest{
		Handle: handle, PodNamespace: string(k8s.K8S_POD_NAMESPACE), PodName: string(k8s.K8S_POD_NAME),
		PodUid: string(k8s.K8S_POD_UID), ContainerId: args.ContainerID, Interface: args.IfName,
	})
	if err != nil {
		return allocationError(err)
	}
	mtu := conf.MTU
	if mtu == 0 {
		mtu = int(alloc.GetMtu())
	}
	defer func() {
		if err == nil || alloc.GetExisting() {
			return
		}
		rctx, rcancel := context.WithTimeout(context.Background(), conf.timeout)
		defer rcancel()
		if _, rerr := client.Release(rctx, &agentapi.ReleaseRequest{Handle: handle}); rerr != nil {
			log.Error("releasing the address after a failed ADD", "handle", handle, "error", rerr)
		} else {
			log.Info("released the address after a failed ADD", "handle", handle)
		}
	}()
	addrs, err := parseAddrs(alloc.GetAddresses())
	if err != nil {
		return types.NewError(ErrAgentUnavailable, "the agent returned a malformed address", err.Error())
	}
	if len(addrs) == 0 {
		return types.NewError(ErrAgentUnavailable, "the agent returned no address", "no IP pool applies to this node")
	}

	hostVeth := HostVethName(string(k8s.K8S_POD_NAMESPACE), string(k8s.K8S_POD_NAME), args.ContainerID, args.IfName)
	t2 := time.Now()
	pn, created, err := setupPod(args.Netns, args.IfName, hostVeth, mtu, addrs)
	if err != nil {
		if created {
			// Only what this ADD made: the pair it created.
			teardownPod(args.Netns, args.IfName)
		}
		return types.NewError(ErrNetworkSetupFailed, "setting up the pod network failed", err.Error())
	}
	result := buildResult(conf.CNIVersion, pn, addrs)
	log.Info("pod network ready", "pod", string(k8s.K8S_POD_NAMESPACE)+"/"+string(k8s.K8S_POD_NAME),
		"addresses", alloc.GetAddresses(), "hostVeth", hostVeth, "mtu", mtu,
		"allocateMs", ms(t2.Sub(t1)), "setupMs", ms(time.Since(t2)))
	return types.PrintResult(result, conf.CNIVersion)
}

func buildResult(cniVersion string, pn *podNetwork, addrs []netip.Prefix) *current.Result {
	r := &current.Result{CNIVersion: current.ImplementedSpecVersion, Interfaces: []*current.Interface{pn.host, pn.cont}}
	contIdx := 1
	for _, a := range addrs {
		gw := GatewayV4
		dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if a.Addr().Is6() {
			gw, dst = GatewayV6, netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		r.IPs = append(r.IPs, &current.IPConfig{Interface: &contIdx, Address: *prefixToIPNet(a), Gateway: gw.AsSlice()})
		r.Routes = append(r.Routes, &types.Route{Dst: *prefixToIPNet(dst), GW: gw.AsSlice()})
	}
	_ = cniVersion
	return r
}

// Del tears the pod's network down and releases its addresses.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	conf, cerr := ParseConfigLenient(args.StdinData)
	if cerr != nil {
		return cerr
	}
	log := p.logger(conf, args)
	// Interface first, so the address is never handed out again while the
	// old pod still has it.
	if err := teardownPod(args.Netns, args.IfName); err != nil {
		return types.NewError(types.ErrIOFailure, "removing the pod interface failed", err.Error())
	}
	client, closer, err := p.connect(conf)
	if err != nil {
		// The addresses stay allocated: the runtime retries DEL, and the
		// agent's garbage collector frees them if it never does.
		return err
	}
	defer closer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), conf.timeout)
	defer cancel()
	var released []string
	// The handle, and the one of plugins before the network name was part
	// of it, for attachments they made.
	for _, handle := range []string{Handle(conf.Name, args.ContainerID, args.IfName), LegacyHandle(args.ContainerID, args.IfName)} {
		resp, err := client.Release(ctx, &agentapi.ReleaseRequest{Handle: handle})
		if err != nil {
			return types.NewError(ErrAgentUnavailable, "releasing the address failed", err.Error())
		}
		released = append(released, resp.GetReleased()...)
	}
	log.Info("pod network removed", "released", released)
	return nil
}

// GC releases the addresses of attachments the runtime no longer has.
//
// A request without cni.dev/valid-attachments frees nothing: without the
// list, every attachment would look stale.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	conf, cerr := ParseConfigLenient(args.StdinData)
	if cerr != nil {
		return cerr
	}
	if conf.ValidAttachments == nil {
		p.logger(conf, nil).Warn("GC without cni.dev/valid-attachments: nothing released")
		return nil
	}
	client, closer, err := p.connect(conf)
	if err != nil {
		return err
	}
	defer closer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), conf.timeout)
	defer cancel()
	req := &agentapi.GarbageCollectRequest{Network: conf.Name}
	for _, a := range *conf.ValidAttachments {
		req.ValidHandles = append(req.ValidHandles, Handle(conf.Name, a.ContainerID, a.IfName))
	}
	resp, err := client.GarbageCollect(ctx, req)
	if err != nil {
		return types.NewError(ErrAgentUnavailable, "garbage collection failed", err.Error())
	}
	p.logger(conf, nil).Info("garbage collected", "valid", len(req.ValidHandles), "released", resp.GetReleasedHandles())
	return nil
}

// Status reports whether the plugin can serve ADD: the agent must answer
// and be ready.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	conf, cerr := ParseConfig(args.StdinData)
	if cerr != nil {
		return cerr
	}
	client, closer, err := p.Dial(conf.AgentSocket)
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "the rhizome agent is not reachable", err.Error())
	}
	defer closer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nc, err := client.NetworkConfig(ctx, &agentapi.NetworkConfigRequest{})
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "the rhizome agent did not answer", err.Error())
	}
	if !nc.GetReady() {
		return types.NewError(types.ErrPluginNotAvailable, "the rhizome agent is not ready", nc.GetNotReadyReason())
	}
	return nil
}

func parseAddrs(in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range in {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("address %q: %w", s, err)
		}
		if p.Bits() != p.Addr().BitLen() {
			return nil, fmt.Errorf("address %q: want a host prefix (/32 or /128)", s)
		}
		out = append(out, p)
	}
	return out, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
