package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rhizome-net/rhizome/agent/agentapi"
	"github.com/rhizome-net/rhizome/agent/localapi"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
	"github.com/rhizome-net/rhizome/ipam"
)

// serveLocalAPI serves the agent's local API on a socket of the test, as
// Run does, and returns a client: the CNI plugin's side of a CNI ADD.
func serveLocalAPI(t *testing.T, w *world, mod ...func(*localapi.Server)) agentapi.AgentClient {
	t.Helper()
	dir, err := os.MkdirTemp("", "rz-api") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "agent.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	a := w.run.a
	srv := localapi.New(&ipamAllocator{a: a}, &nodeState{a: a}, a.log)
	srv.GCGrace = 0
	for _, m := range mod {
		m(srv)
	}
	go func() { done <- srv.Serve(ctx, sock) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("local API: %v", err)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the local API did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	c, conn, err := agentapi.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return c
}

// TestLocalAPIBackend drives the agent's answers to the CNI plugin through
// the real server and client, over the IPAM the pass uses: a CNI ADD
// before the agent is ready, ADD, a repeated ADD (the runtime retrying),
// a handle reserved for tunnels, DEL twice, garbage collection, an IPAM
// that cannot reach the API server.
func TestLocalAPIBackend(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	w.setPool(v1alpha1.EncapAlways, v1alpha1.EncapNever, false) // a tunnel handle exists
	c := serveLocalAPI(t, w)
	add := func(handle string) (*agentapi.AllocateResponse, error) {
		return c.Allocate(ctx, &agentapi.AllocateRequest{Handle: handle, PodNamespace: "default", PodName: "p-" + handle, ContainerId: "c", Interface: "eth0"})
	}
	code := func(err error) codes.Code { return status.Code(err) }

	// Before the first pass the agent knows nothing of its IPAM: the
	// plugin is told to try again (FailedPrecondition), nothing allocated.
	w.ipam.SetReady(false)
	w.pass()
	if _, err := add("k8s/early.eth0"); code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "IPAM: waiting") {
		t.Fatalf("ADD before IPAM is ready: %v", err)
	}
	w.ipam.SetReady(true)
	w.pass()
	// The route programmer has made a pass (world.pass settles it), so
	// ADD is served with its pod MTU.
	r1, err := add("k8s/pod1.eth0")
	if err != nil {
		t.Fatal(err)
	}
	if r1.Existing || len(r1.Addresses) != 1 || r1.Mtu != 1450 {
		t.Errorf("first ADD: %+v (want one address, not existing, MTU 1500-50 for VXLAN)", r1)
	}
	r2, err := add("k8s/pod1.eth0")
	if err != nil || !r2.Existing || !slices.Equal(r2.Addresses, r1.Addresses) {
		t.Errorf("repeated ADD: %+v, %v; want the same addresses, existing", r2, err)
	}
	if _, err := add("k8s/early.eth0"); err != nil {
		t.Fatal(err)
	}
	tunnel := a(w).tunnelHandle(tunnelVXLAN)
	if _, err := add(tunnel); code(err) != codes.Internal || !strings.Contains(err.Error(), "reserved") {
		t.Errorf("ADD with the tunnel's handle: %v", err)
	}
	if got := w.ipam.HandleAddresses(tunnel); len(got) != 1 {
		t.Errorf("the tunnel's address after a CNI ADD with its handle: %v", got)
	}

	// DEL returns what it released, and nothing the second time.
	for i, want := range []int{1, 0} {
		rel, err := c.Release(ctx, &agentapi.ReleaseRequest{Handle: "k8s/pod1.eth0"})
		if err != nil || len(rel.Released) != want {
			t.Errorf("DEL #%d: %+v, %v; want %d addresses", i+1, rel, err, want)
		}
	}
	// A DEL naming the tunnel's handle (a broken or hostile runtime) is
	// refused: freed, the VTEP address could go to a pod.
	if _, err := c.Release(ctx, &agentapi.ReleaseRequest{Handle: tunnel}); err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Errorf("DEL with the tunnel's handle: %v", err)
	}
	if got := w.ipam.HandleAddresses(tunnel); len(got) != 1 {
		t.Errorf("the tunnel's address after a CNI DEL with its handle: %v", got)
	}

	// GC keeps the handles the runtime lists, releases the others, and
	// never sees the tunnel's.
	if _, err := add("k8s/keep.eth0"); err != nil {
		t.Fatal(err)
	}
	gc, err := c.GarbageCollect(ctx, &agentapi.GarbageCollectRequest{Network: "k8s", ValidHandles: []string{"k8s/keep.eth0"}})
	if err != nil || fmt.Sprint(gc.ReleasedHandles) != "[k8s/early.eth0]" {
		t.Errorf("GC: %+v, %v; want early.eth0 released", gc, err)
	}
	held := w.ipam.Handles()
	if !slices.Contains(held, "k8s/keep.eth0") || slices.Contains(held, "k8s/early.eth0") || !slices.Contains(held, tunnel) {
		t.Errorf("handles after GC: %v", held)
	}

	// The IPAM cannot reach the API server: the plugin gets the error,
	// and nothing is half-allocated.
	w.ipam.FailWith(errAPI)
	if _, err := add("k8s/late.eth0"); code(err) != codes.Internal || !strings.Contains(err.Error(), "etcdserver") {
		t.Errorf("ADD with the IPAM failing: %v", err)
	}
	if _, err := c.Release(ctx, &agentapi.ReleaseRequest{Handle: "k8s/keep.eth0"}); code(err) != codes.Internal {
		t.Errorf("DEL with the IPAM failing: %v", err)
	}
	w.ipam.FailWith(nil)
	if got := w.ipam.HandleAddresses("k8s/late.eth0"); len(got) != 0 {
		t.Errorf("a failed ADD left %v allocated", got)
	}
}

// TestLocalAPIGarbageCollectionIsCareful plays a runtime whose GC request
// is broken or early: without the network's name it frees nothing; it never
// frees another network's attachments (handles of net "other", the CNI
// network a second conflist uses); and an attachment allocated within the
// grace period is kept though the runtime did not list it (its ADD was in
// flight when the runtime built the list). Error codes tell an exhausted
// pool and a missing pool apart from a failure.
func TestLocalAPIGarbageCollectionIsCareful(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	w.setPool(v1alpha1.EncapNever, v1alpha1.EncapNever, false)
	now := time.Now()
	c := serveLocalAPI(t, w, func(s *localapi.Server) {
		s.GCGrace = time.Minute
		s.Now = func() time.Time { return now }
	})
	w.pass()
	for _, h := range []string{"k8s/old.eth0", "other/old.eth0", "k8s/young.eth0"} {
		if h == "k8s/young.eth0" {
			now = now.Add(2 * time.Minute)
		}
		if _, err := c.Allocate(ctx, &agentapi.AllocateRequest{Handle: h, PodNamespace: "default", PodName: "p"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.GarbageCollect(ctx, &agentapi.GarbageCollectRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("GC without a network: %v, want InvalidArgument", err)
	}
	gc, err := c.GarbageCollect(ctx, &agentapi.GarbageCollectRequest{Network: "k8s"})
	if err != nil || fmt.Sprint(gc.ReleasedHandles) != "[k8s/old.eth0]" {
		t.Errorf("GC of k8s with nothing valid: %+v, %v; want only k8s/old.eth0 (other's is not k8s's, young.eth0 is within the grace period)", gc, err)
	}
	held := w.ipam.Handles()
	if !slices.Contains(held, "other/old.eth0") || !slices.Contains(held, "k8s/young.eth0") || slices.Contains(held, "k8s/old.eth0") {
		t.Errorf("handles after GC: %v", held)
	}
	for _, c2 := range []struct {
		err  error
		want codes.Code
	}{{ipam.ErrExhausted, codes.ResourceExhausted}, {ipam.ErrNoPool, codes.NotFound}, {errAPI, codes.Internal}} {
		w.ipam.FailWith(c2.err)
		if _, err := c.Allocate(ctx, &agentapi.AllocateRequest{Handle: "k8s/x.eth0"}); status.Code(err) != c2.want {
			t.Errorf("ADD failing with %v: code %v, want %v", c2.err, status.Code(err), c2.want)
		}
	}
	w.ipam.FailWith(nil)
}

// TestNodeStateStatus checks what rhizomectl status shows of the parts.
func TestNodeStateStatus(t *testing.T) {
	w := newWorld(t)
	w.addNode(n2)
	w.publishVTEP(n2, "02:00:00:00:00:02", "10.244.1.0")
	w.setPool(v1alpha1.EncapCrossSubnet, v1alpha1.EncapNever, false)
	w.allocate("pod0.eth0")
	w.ipam.AddBlock(netip.MustParsePrefix("10.244.9.0/26"), "n2")
	w.pass()
	w.peerUp(n2, "10.244.1.0/26")
	st := (&nodeState{a: a(w)}).Status()
	if st.NodeName != self || st.NodeAddress != "10.0.0.1/24" || st.UnderlayInterface != "eth0" || st.UnderlayMtu != 1500 || st.PodMtu != 1450 {
		t.Errorf("node: %+v", st)
	}
	if fmt.Sprint(st.Blocks) != "[10.244.0.0/26]" {
		t.Errorf("blocks: %v", st.Blocks)
	}
	if len(st.Sessions) != 1 || st.Sessions[0].Peer != "10.0.0.2" || st.Sessions[0].State != "Established" || st.Sessions[0].PrefixesAccepted != 1 {
		t.Errorf("sessions: %+v", st.Sessions)
	}
	var rts []string
	for _, r := range st.Routes {
		rts = append(rts, r.Prefix+" "+r.Encapsulation+" "+strings.Join(r.NextHops, ","))
	}
	slices.Sort(rts)
	if want := "[10.244.0.0/26 blackhole  10.244.1.0/26 none 10.0.0.2]"; fmt.Sprint(rts) != want {
		t.Errorf("routes: %v, want %s", rts, want)
	}
	if len(st.Devices) != 1 || st.Devices[0].Name != "vxlan.rhizome" || st.Devices[0].Address != "10.244.0.1" {
		t.Errorf("devices: %+v", st.Devices)
	}
	if st.RouteProtocol != 0 || st.RouteTable != 0 {
		// The world's agent was attached without them (Run passes the
		// merged BGP configuration's).
		t.Errorf("route protocol/table: %d/%d", st.RouteProtocol, st.RouteTable)
	}
	if st.Ready || !strings.Contains(st.NotReadyReason, "caches: starting") {
		t.Errorf("ready %v, %q: the world's agent never ran its caches", st.Ready, st.NotReadyReason)
	}

	// Before attach (the agent is starting), nothing but the node name.
	early := newAgent(a(w).cfg, a(w).log)
	if mtu, ok, why := (&nodeState{a: early}).NetworkConfig(); ok || mtu != 0 || why != "the agent is starting" {
		t.Errorf("NetworkConfig before attach: %d %v %q", mtu, ok, why)
	}
	if st := (&nodeState{a: early}).Status(); st.NodeName != self || len(st.Routes) != 0 || st.Ready {
		t.Errorf("Status before attach: %+v", st)
	}
}

// TestIPAMAllocatorErrors: errors come back wrapped, naming the handle,
// and a handle of the agent's own is refused before the IPAM is asked.
func TestIPAMAllocatorErrors(t *testing.T) {
	w := newWorld(t)
	al := &ipamAllocator{a: a(w)}
	ctx := context.Background()
	w.ipam.FailWith(ipam.ErrNoPool)
	if _, _, err := al.Allocate(ctx, localapi.AllocateRequest{Handle: "x.eth0"}); !errors.Is(err, ipam.ErrNoPool) {
		t.Errorf("Allocate: %v, want ErrNoPool", err)
	}
	w.ipam.FailWith(nil)
	for _, h := range []string{tunnelHandlePrefix + "vxlan." + self, tunnelHandlePrefix + "anything"} {
		if _, _, err := al.Allocate(ctx, localapi.AllocateRequest{Handle: h}); err == nil {
			t.Errorf("Allocate(%q) accepted a reserved handle", h)
		}
	}
	if hs, err := al.CNIHandles(ctx); err != nil || len(hs) != 0 {
		t.Errorf("CNIHandles: %v, %v", hs, err)
	}
}

func a(w *world) *agent { return w.run.a }
