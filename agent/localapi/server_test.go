package localapi

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
)

// failingAllocator wraps FakeAllocator with failures of Release and
// CNIHandles, which the fake itself never returns.
type failingAllocator struct {
	*FakeAllocator
	releaseErr map[string]error
	listErr    error
}

func (f *failingAllocator) Release(ctx context.Context, h string) ([]netip.Addr, error) {
	if err := f.releaseErr[h]; err != nil {
		return nil, err
	}
	return f.FakeAllocator.Release(ctx, h)
}

func (f *failingAllocator) CNIHandles(ctx context.Context) ([]string, error) {
	if f.listErr != nil {
		return nil, f.listErr
	}
	return f.FakeAllocator.CNIHandles(ctx)
}

// serve runs a Server on a fresh socket and returns a client.
func serve(t *testing.T, alloc Allocator, state State) (agentapi.AgentClient, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "rz-lapi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "run", "agent.sock") // the directory is created
	// A stale socket file of a previous run is replaced.
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sock, []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	srv := New(alloc, state, nil)
	srv.GCGrace = 0 // TestServerGCGrace holds the grace period
	go func() { done <- srv.Serve(ctx, sock) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the socket outlived the server: %v", err)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if fi, err := os.Stat(sock); err == nil && fi.Mode()&os.ModeSocket != 0 {
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("socket mode %v, want 0600 (only root may allocate)", fi.Mode().Perm())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	c, conn, err := agentapi.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return c, sock
}

func TestServerAllocateAndRelease(t *testing.T) {
	ctx := context.Background()
	alloc := &failingAllocator{FakeAllocator: NewFakeAllocator("10.244.0.0/24", "fd00:244::/120")}
	state := &StaticState{Node: "n1", MTU: 1450, NotReady: "IPAM: waiting for the IPAM caches"}
	c, _ := serve(t, alloc, state)
	req := &agentapi.AllocateRequest{Handle: "c1.eth0", PodNamespace: "default", PodName: "p1", ContainerId: "c1", Interface: "eth0"}

	cases := []struct {
		name     string
		setup    func()
		req      *agentapi.AllocateRequest
		wantCode codes.Code
		wantResp string
	}{
		{name: "not ready: FailedPrecondition, nothing allocated", req: req, wantCode: codes.FailedPrecondition},
		{name: "no handle", setup: func() { state.SetNotReady("") }, req: &agentapi.AllocateRequest{}, wantCode: codes.InvalidArgument},
		{name: "first ADD", req: req, wantResp: "[10.244.0.1/32 fd00:244::1/128] existing=false mtu=1450"},
		{name: "repeated ADD", req: req, wantResp: "[10.244.0.1/32 fd00:244::1/128] existing=true mtu=1450"},
		{name: "pool exhausted", setup: func() { alloc.FailNext = fmt.Errorf("pool 10.244.0.0/24: %w", ErrExhausted) },
			req: &agentapi.AllocateRequest{Handle: "c2.eth0"}, wantCode: codes.ResourceExhausted},
		{name: "no pool", setup: func() { alloc.FailNext = fmt.Errorf("node n1: %w", ErrNoPool) },
			req: &agentapi.AllocateRequest{Handle: "c2.eth0"}, wantCode: codes.NotFound},
		{name: "allocator fails otherwise", setup: func() { alloc.FailNext = errors.New("etcdserver: request timed out") },
			req: &agentapi.AllocateRequest{Handle: "c2.eth0"}, wantCode: codes.Internal},
	}
	for _, tc := range cases {
		if tc.setup != nil {
			tc.setup()
		}
		resp, err := c.Allocate(ctx, tc.req)
		if status.Code(err) != tc.wantCode {
			t.Fatalf("%s: %v, want code %v", tc.name, err, tc.wantCode)
		}
		if err != nil {
			continue
		}
		if got := fmt.Sprintf("%v existing=%v mtu=%d", resp.Addresses, resp.Existing, resp.Mtu); got != tc.wantResp {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.wantResp)
		}
	}
	if got := alloc.Allocations(); len(got) != 1 || got["c1.eth0"] == "" {
		t.Errorf("allocations: %v (the refused ADDs must hold nothing)", got)
	}

	// DEL: the addresses, then nothing; an error of the allocator is Internal.
	for i, want := range []int{2, 0} {
		rel, err := c.Release(ctx, &agentapi.ReleaseRequest{Handle: "c1.eth0"})
		if err != nil || len(rel.Released) != want {
			t.Errorf("DEL #%d: %v, %v", i+1, rel, err)
		}
	}
	if _, err := c.Release(ctx, &agentapi.ReleaseRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("DEL without a handle: %v", err)
	}
	alloc.releaseErr = map[string]error{"c9.eth0": errors.New("the API server is down")}
	if _, err := c.Release(ctx, &agentapi.ReleaseRequest{Handle: "c9.eth0"}); status.Code(err) != codes.Internal {
		t.Errorf("DEL with the allocator failing: %v", err)
	}

	// NetworkConfig and Status pass the state through.
	state.SetNotReady("routes: no pass yet")
	nc, err := c.NetworkConfig(ctx, &agentapi.NetworkConfigRequest{})
	if err != nil || nc.NodeName != "n1" || nc.Mtu != 1450 || nc.Ready || nc.NotReadyReason != "routes: no pass yet" {
		t.Errorf("NetworkConfig: %+v, %v", nc, err)
	}
	st, err := c.Status(ctx, &agentapi.StatusRequest{})
	if err != nil || st.NodeName != "n1" || st.Ready {
		t.Errorf("Status: %+v, %v", st, err)
	}
}

func TestServerGarbageCollect(t *testing.T) {
	ctx := context.Background()
	alloc := &failingAllocator{FakeAllocator: NewFakeAllocator("10.244.0.0/24")}
	c, _ := serve(t, alloc, &StaticState{Node: "n1", MTU: 1500})
	for _, h := range []string{"k8s/a.eth0", "k8s/b.eth0", "k8s/c.eth0", "k8s/d.eth0"} {
		if _, err := c.Allocate(ctx, &agentapi.AllocateRequest{Handle: h}); err != nil {
			t.Fatal(err)
		}
	}
	// One release fails: the others still go, and the error names it.
	alloc.releaseErr = map[string]error{"k8s/c.eth0": errors.New("conflict")}
	gc, err := c.GarbageCollect(ctx, &agentapi.GarbageCollectRequest{Network: "k8s", ValidHandles: []string{"k8s/a.eth0", "k8s/unknown.eth0"}})
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "releasing k8s/c.eth0: conflict") {
		t.Errorf("GC with a failing release: %v, %v", gc, err)
	}
	if got := alloc.Allocations(); len(got) != 2 || got["k8s/a.eth0"] == "" || got["k8s/c.eth0"] == "" {
		t.Errorf("after GC: %v; want a (valid) and c (its release failed)", got)
	}
	alloc.releaseErr = nil
	gc, err = c.GarbageCollect(ctx, &agentapi.GarbageCollectRequest{Network: "k8s", ValidHandles: []string{"k8s/a.eth0"}})
	if err != nil || !slices.Equal(gc.ReleasedHandles, []string{"k8s/c.eth0"}) {
		t.Errorf("GC again: %v, %v", gc, err)
	}
	// Nothing listed: GC fails whole and releases nothing.
	alloc.listErr = errors.New("cache not synced")
	if _, err := c.GarbageCollect(ctx, &agentapi.GarbageCollectRequest{Network: "k8s"}); status.Code(err) != codes.Internal {
		t.Errorf("GC when handles cannot be listed: %v", err)
	}
	if got := alloc.Allocations(); len(got) != 1 {
		t.Errorf("a failed listing released %v", got)
	}
}

// TestServerGCGrace: a runtime builds its list of valid attachments, then
// an ADD completes, then GC arrives without it. The new attachment is
// younger than the grace period and must survive; so must every attachment
// for a grace period after the agent (re)started, since it cannot know
// their age. Allocations of another network are never this network's GC's.
func TestServerGCGrace(t *testing.T) {
	ctx := context.Background()
	alloc := NewFakeAllocator("10.244.0.0/24")
	// An allocation from before the server started.
	if _, _, err := alloc.Allocate(ctx, AllocateRequest{Handle: "k8s/before.eth0"}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	srv := New(alloc, &StaticState{Node: "n1", MTU: 1500}, nil)
	srv.GCGrace = time.Minute
	srv.Now = func() time.Time { return now }
	for _, h := range []string{"k8s/old.eth0", "other/old.eth0"} {
		if _, err := srv.Allocate(ctx, &agentapi.AllocateRequest{Handle: h}); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(30 * time.Second)
	if _, err := srv.Allocate(ctx, &agentapi.AllocateRequest{Handle: "k8s/young.eth0"}); err != nil {
		t.Fatal(err)
	}
	gc, err := srv.GarbageCollect(ctx, &agentapi.GarbageCollectRequest{Network: "k8s"})
	if err != nil || len(gc.ReleasedHandles) != 0 {
		t.Fatalf("GC within the grace period after start: %v, %v; want nothing released", gc, err)
	}
	now = now.Add(45 * time.Second) // old and before: 75s; young: 45s
	gc, err = srv.GarbageCollect(ctx, &agentapi.GarbageCollectRequest{Network: "k8s"})
	if err != nil || fmt.Sprint(gc.ReleasedHandles) != "[k8s/before.eth0 k8s/old.eth0]" {
		t.Fatalf("GC: %v, %v; want the two old k8s handles released", gc, err)
	}
	if got := alloc.Allocations(); len(got) != 2 || got["k8s/young.eth0"] == "" || got["other/old.eth0"] == "" {
		t.Fatalf("left: %v; want the young one and the other network's", got)
	}
	if _, err := srv.GarbageCollect(ctx, &agentapi.GarbageCollectRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("GC without a network: %v", err)
	}
}

// TestServerForgetsFailedAllocations: a pool exhausted for an hour turns
// every ADD into a failure; the server must not keep a record of each.
func TestServerForgetsFailedAllocations(t *testing.T) {
	ctx := context.Background()
	alloc := NewFakeAllocator("10.244.0.0/30")
	srv := New(alloc, &StaticState{Node: "n1", MTU: 1500}, nil)
	for i := range 50 {
		alloc.FailNext = fmt.Errorf("pool: %w", ErrExhausted)
		if _, err := srv.Allocate(ctx, &agentapi.AllocateRequest{Handle: fmt.Sprintf("k8s/c%d.eth0", i)}); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("ADD %d: %v", i, err)
		}
	}
	srv.mu.Lock()
	n := len(srv.made)
	srv.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d failed allocations remembered", n)
	}
}
