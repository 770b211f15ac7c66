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
	if len(rec.errs) != 3 {
		t.Fatalf("misuse reports = %q", rec.errs)
	}
}

func addrsOf(r Result) []string {
	var out []string
	for _, a := range r.Addresses {
		out = append(out, a.Addr.String())
	}
	return out
}
