package store

import (
	"testing"
	"time"

	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

func block(affinity string, allocs ...v1alpha1.IPAMAllocation) *v1alpha1.IPAMBlock {
	return &v1alpha1.IPAMBlock{Spec: v1alpha1.IPAMBlockSpec{CIDR: "10.0.0.0/26", Affinity: affinity, Allocations: allocs}}
}

func al(addr, handle, node string) v1alpha1.IPAMAllocation {
	return v1alpha1.IPAMAllocation{Address: addr, Handle: handle, Node: node}
}

func TestSummarize(t *testing.T) {
	cases := []struct {
		name              string
		b                 *v1alpha1.IPAMBlock
		allocated, borrow int32
	}{
		{"empty", block("n1"), 0, 0},
		{"own", block("n1", al("10.0.0.1", "a", "n1"), al("10.0.0.2", "b", "n1")), 2, 0},
		{"borrowed by another node", block("n1", al("10.0.0.1", "a", "n1"), al("10.0.0.2", "b", "n2")), 2, 1},
		{"no node recorded is not borrowed", block("n1", al("10.0.0.1", "a", "")), 1, 0},
		{"unowned block: every holder borrows", block("", al("10.0.0.1", "a", "n1"), al("10.0.0.2", "b", "n2")), 2, 2},
	}
	for _, c := range cases {
		for range 2 { // idempotent
			Summarize(c.b)
			if c.b.Status.Allocated != c.allocated || c.b.Status.Borrowed != c.borrow {
				t.Errorf("%s: status = %+v, want %d/%d", c.name, c.b.Status, c.allocated, c.borrow)
			}
		}
	}
}

func TestStampEmpty(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	b := block("n1")
	StampEmpty(b, t0)
	if b.Spec.EmptySince == nil || !b.Spec.EmptySince.Time.Equal(t0) {
		t.Fatalf("emptySince = %v", b.Spec.EmptySince)
	}
	StampEmpty(b, t0.Add(time.Hour)) // stays at the first time it was seen empty
	if !b.Spec.EmptySince.Time.Equal(t0) {
		t.Fatalf("emptySince moved to %v", b.Spec.EmptySince)
	}
	b.Spec.Allocations = []v1alpha1.IPAMAllocation{al("10.0.0.1", "a", "n1")}
	StampEmpty(b, t0)
	if b.Spec.EmptySince != nil {
		t.Fatalf("emptySince on a used block: %v", b.Spec.EmptySince)
	}
}

func TestRemoveHandle(t *testing.T) {
	b := block("n1", al("10.0.0.1", "a", "n1"), al("10.0.0.2", "b", "n1"), al("10.0.0.3", "a", "n1"))
	if n := RemoveHandle(b, "a", ""); n != 2 || len(b.Spec.Allocations) != 1 || b.Spec.Allocations[0].Handle != "b" {
		t.Fatalf("removed %d, left %+v", n, b.Spec.Allocations)
	}
	if n := RemoveHandle(b, "a", ""); n != 0 || len(b.Spec.Allocations) != 1 {
		t.Fatalf("second removal: %d, %+v", n, b.Spec.Allocations)
	}
}
