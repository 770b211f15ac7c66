package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// recorder is a testing.TB that records Errorf calls instead of failing, to
// check that the Fake reports misuse.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func TestFakeFollowsTheAllocatorsRules(t *testing.T) {
	ctx := context.Background()
	f := NewFake(t, "n1", netip.MustParsePrefix("10.0.0.0/25"), netip.MustParsePrefix("fd00::/121"))
	sub := f.Subscribe()
	<-sub // the initial signal

	r, err := f.Allocate(ctx, Request{Handle: "a.eth0"})
	if err != nil || fmt.Sprint(addrsOf(r)) != "[10.0.0.0 fd00::]" {
		t.Fatalf("Allocate = %v, %v", addrsOf(r), err)
	}
	for range 2 { // idempotent
		again, err := f.Allocate(ctx, Request{Handle: "a.eth0"})
		if err != nil || fmt.Sprint(addrsOf(again)) != fmt.Sprint(addrsOf(r)) {
			t.Fatalf("again = %v, %v", addrsOf(again), err)
		}
	}
	select {
	case <-sub:
	default:
		t.Fatal("no signal after an allocation")
	}
	// Fill the IPv4 pool (two /26 blocks), then borrow from another node.
	f.AddBlock(netip.MustParsePrefix("10.9.0.0/26"), "n2")
	for i := 1; i < 128; i++ {
		if _, err := f.Allocate(ctx, Request{Handle: fmt.Sprintf("h%d.eth0", i), Families: []int{4}}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = f.Allocate(ctx, Request{Handle: "extra.eth0", Families: []int{4}})
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("full pool: %v", err)
	}
	s := f.Snapshot()
	if len(s.Affine) != 3 || len(s.Blocks) != 4 { // 2 IPv4 + 1 IPv6 own, 1 of n2
		t.Fatalf("snapshot blocks: affine %v, all %v", s.Affine, s.Blocks)
	}

	// Borrowing: a pool whose only free space is another node's block.
	g := NewFake(t, "n3", netip.MustParsePrefix("10.1.0.0/26"))
	g.AddBlock(netip.MustParsePrefix("10.1.0.0/26"), "n4")
	b, err := g.Allocate(ctx, Request{Handle: "b.eth0"})
	if err != nil || !b.Addresses[0].Borrowed {
		t.Fatalf("borrow = %+v, %v", b, err)
	}
	if s := g.Snapshot(); fmt.Sprint(s.Borrowed) != "[10.1.0.0]" {
		t.Fatalf("borrowed = %v", s.Borrowed)
	}
	g.SetStrictAffinity(true)
	if _, err := g.Allocate(ctx, Request{Handle: "c.eth0"}); !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "strictAffinity") {
		t.Fatalf("strict: %v", err)
	}

	// Loans of this node's addresses.
	f.Lend(netip.MustParseAddr("fd00::3f"), "n9", "x.eth0")
	if s := f.Snapshot(); fmt.Sprint(s.Lent) != "[fd00::3f]" || s.LentTo[netip.MustParseAddr("fd00::3f")] != "n9" {
		t.Fatalf("lent = %v %v", s.Lent, s.LentTo)
	}

	// Release, twice, and of an unknown handle.
	for range 2 {
		if err := f.Release(ctx, "a.eth0"); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := f.Allocations()["a.eth0"]; ok {
		t.Fatal("released handle still allocated")
	}
	if _, err := f.ReleaseByAddress(ctx, netip.MustParseAddr("10.0.0.5"), ReleaseOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReleaseByAddress(ctx, netip.MustParseAddr("10.0.0.5"), ReleaseOptions{}); !errors.Is(err, ErrNotAllocated) {
		t.Fatalf("second release by address: %v", err)
	}

	// Injected failures.
	f.FailWith(errors.New("api down"))
	if _, err := f.Allocate(ctx, Request{Handle: "z.eth0"}); err == nil || err.Error() != "api down" {
		t.Fatalf("injected failure: %v", err)
	}
}

func TestFakeReportsMisuse(t *testing.T) {
	rec := &recorder{TB: t}
	f := NewFake(rec, "n1", netip.MustParsePrefix("10.0.0.0/26"))
	if _, err := f.Allocate(context.Background(), Request{}); err == nil {
		t.Fatal("empty handle accepted")
	}
	f.AddBlock(netip.MustParsePrefix("10.0.0.0/26"), "n1")
	f.AddBlock(netip.MustParsePrefix("10.0.0.0/26"), "n1")
	f.Lend(netip.MustParseAddr("192.0.2.1"), "n2", "h.eth0")
	f.SetPool(Pool{CIDR: netip.MustParsePrefix("10.9.0.0/26")})
	f.SetPool(Pool{CIDR: netip.MustParsePrefix("10.0.0.0/26"), BlockBits: 28})
	if len(rec.errs) != 5 {
		t.Fatalf("misuse reports = %q", rec.errs)
	}
}

func TestFakePoolsReadinessAndHandles(t *testing.T) {
	ctx := context.Background()
	p4, p6 := netip.MustParsePrefix("10.0.0.0/25"), netip.MustParsePrefix("fd00::/121")
	f := NewFake(t, "n1", p4, p6)
	sub := f.Subscribe()
	<-sub
	if _, err := f.Allocate(ctx, Request{Handle: "b.eth0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Allocate(ctx, Request{Handle: "a.eth0", Families: []int{4}}); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(f.Handles()); got != "[a.eth0 b.eth0]" {
		t.Errorf("Handles = %s", got)
	}
	if got := fmt.Sprint(f.HandleAddresses("b.eth0")); got != "[10.0.0.0 fd00::]" {
		t.Errorf("HandleAddresses = %s", got)
	}
	if got := f.HandleAddresses("unknown.eth0"); len(got) != 0 {
		t.Errorf("HandleAddresses of an unknown handle = %v", got)
	}
	<-sub

	// An IPPool edit: the snapshot shows it, subscribers hear of it; a
	// pool no longer allocatable gives no address (the IPv6 one then).
	f.SetPool(Pool{Name: "default", CIDR: p4, VXLANMode: "CrossSubnet", NATOutgoing: true})
	select {
	case <-sub:
	default:
		t.Error("no signal after SetPool")
	}
	s := f.Snapshot()
	if s.Pools[0].Name != "default" || s.Pools[0].VXLANMode != "CrossSubnet" || !s.Pools[0].NATOutgoing || s.Pools[0].BlockBits != 26 {
		t.Errorf("pool after SetPool: %+v", s.Pools[0])
	}
	if s.Blocks[0].Pool != "default" || s.Blocks[0].Allocated != 2 {
		t.Errorf("block: %+v", s.Blocks[0])
	}
	r, err := f.Allocate(ctx, Request{Handle: "c.eth0"})
	if err != nil || fmt.Sprint(addrsOf(r)) != "[fd00::1]" {
		t.Errorf("with the IPv4 pool not allocatable: %v, %v", addrsOf(r), err)
	}

	// Before the caches sync the view holds nothing, and says so.
	f.SetReady(false)
	if s := f.Snapshot(); s.Ready || s.Pools != nil || s.Affine != nil {
		t.Errorf("not-ready snapshot: %+v", s)
	}
	f.SetReady(true)
	if s := f.Snapshot(); !s.Ready || len(s.Affine) != 2 {
		t.Errorf("ready again: %+v", s)
	}
}

func addrsOf(r Result) []string {
	var out []string
	for _, a := range r.Addresses {
		out = append(out, a.Addr.String())
	}
	return out
}
