package bfd

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

type recordingTB struct{ errs []string }

func (r *recordingTB) Helper() {}
func (r *recordingTB) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// TestFakeMisuse: the fake fails the test on what a reconciler must not do.
func TestFakeMisuse(t *testing.T) {
	peer := Peer{Remote: addrB, Local: addrA, Timers: fast}
	cases := []struct {
		name string
		do   func(f *Fake)
		want string
	}{
		{"invalid peer", func(f *Fake) { _ = f.Set(Peer{Remote: addrB}) }, "out of range"},
		{"set that changes nothing", func(f *Fake) { _ = f.Set(peer); _ = f.Set(peer) }, "changes nothing"},
		{"set after close", func(f *Fake) { _ = f.Close(); _ = f.Set(peer) }, "after Close"},
		{"state of an unknown peer", func(f *Fake) { f.SetState(addrB, StateChange{To: Up}) }, "no such session"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := &recordingTB{}
			c.do(NewFake(r))
			if len(r.errs) != 1 || !strings.Contains(r.errs[0], c.want) {
				t.Fatalf("errors %q, want one containing %q", r.errs, c.want)
			}
		})
	}
}

func TestFakeEvents(t *testing.T) {
	f := NewFake(t)
	var got []Event
	ctx, cancel := context.WithCancel(context.Background())
	f.Watch(ctx, func(e Event) { got = append(got, e) })
	if err := f.Set(Peer{Remote: addrB, Local: addrA, Timers: fast}); err != nil {
		t.Fatal(err)
	}
	f.SetState(addrB, StateChange{To: Up})
	f.SetState(addrB, StateChange{To: Down, Diag: DiagTimeExpired, RemoteCPI: true})
	cancel()
	f.SetState(addrB, StateChange{To: Up}) // not delivered: the watch ended
	if len(got) != 2 || got[0].To != Up || !got[1].Failed() || !got[1].RemoteControlPlaneIndependent {
		t.Fatalf("events %+v", got)
	}
	if st := f.Sessions(); len(st) != 1 || st[0].State != Up || st[0].Downs != 1 {
		t.Fatalf("sessions %+v", st)
	}
	if err := f.Remove(netip.MustParseAddr("10.9.9.9")); err != nil { // unknown: a no-op
		t.Fatal(err)
	}
	if ops := f.Ops(); !slices.Equal(ops, []string{"set 10.0.0.2", "remove 10.9.9.9"}) {
		t.Fatalf("ops %q", ops)
	}
}
