package reconcile

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/rhizome-net/rhizome/bgp"
)

// TestNothingWaitsBehindASnapshot: while the status writer's snapshot
// waits for the speaker (GoBGP's API behind its server loop, busy for
// minutes while a reflector converges 5,000 clients), neither readiness
// nor a metrics scrape waits behind it: both answer from the last
// snapshot (design 0018, change 14; the scrape used to time out at 30 s).
// A caller that needs a fresh snapshot waits, bounded by its context.
func TestNothingWaitsBehindASnapshot(t *testing.T) {
	f := newFixture(t)
	f.reconcile(baseState())
	b := netip.MustParseAddr("10.0.1.2")
	f.sp().SetState(b, bgp.StateEstablished, false, "")
	f.status() // the last snapshot

	entered, release := f.sp().HoldPeers()
	t.Cleanup(release)
	snapshot := make(chan error, 1)
	go func() { _, err := f.r.Status(context.Background()); snapshot <- err }()
	<-entered

	type answer struct {
		rd  Readiness
		mfs []*dto.MetricFamily
		err error
	}
	answered := make(chan answer, 1)
	go func() {
		rd := f.r.Readiness()
		mfs, err := f.reg.Gather()
		answered <- answer{rd, mfs, err}
	}()
	select {
	case a := <-answered:
		if !a.rd.Running || a.rd.Err != nil || len(a.rd.Sessions) == 0 {
			t.Errorf("readiness while a snapshot is taken: %+v", a.rd)
		}
		if a.err != nil {
			t.Fatalf("a scrape while a snapshot is taken: %v", a.err)
		}
		m := gather(t, prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) { return a.mfs, nil }))
		if got := m["rhizome_bgp_sessions_established"]; len(got) != 1 || got[0].value != 1 {
			t.Errorf("sessions established from the last snapshot: %v", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("readiness or a scrape waited behind the snapshot being taken")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := f.r.Status(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a fresh snapshot while another is taken: %v, want the caller's deadline", err)
	}
	release()
	if err := <-snapshot; err != nil {
		t.Errorf("the held snapshot: %v", err)
	}
}
