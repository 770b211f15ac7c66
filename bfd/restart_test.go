package bfd

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"
	"time"
)

// suspendA runs CloseForRestart on A with the given hold while the fake
// clock moves on (the poll needs packets), and returns what it handed over.
func suspendA(t *testing.T, p *pair, hold time.Duration) []Suspended {
	t.Helper()
	done := make(chan []Suspended)
	go func() {
		done <- p.a.CloseForRestart(context.Background(), func(netip.Addr) time.Duration { return hold })
	}()
	for {
		select {
		case s := <-done:
			return s
		case <-time.After(time.Millisecond):
			p.clock.Advance(10 * time.Millisecond)
		}
	}
}

// restartA starts the next agent's Manager on A's address, resuming sus.
func restartA(t *testing.T, p *pair, sus []Suspended) *Manager {
	t.Helper()
	p.ta = p.net.transport("10.0.0.1")
	next := uint32(5000)
	m, err := NewManager(Config{Transport: p.ta, Clock: p.clock, Rand: func() float64 { return 0.5 },
		Discriminator: func() uint32 { next++; return next }, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	m.Resume(sus)
	if err := m.Set(Peer{Remote: addrB, Local: addrA, Timers: fast}); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestRestartHandOver: an agent that stops for a restart stretches its
// peer's detection time to the hold with a Poll Sequence and hands its
// session to the next agent, which resumes it Up with the same
// discriminators: the peer's session never leaves Up.
func TestRestartHandOver(t *testing.T) {
	p := newPair(t)
	p.up(t, fast)
	nb := len(p.eb.waitFor(t, 2))
	before := p.state(t, p.b, addrA)

	sus := suspendA(t, p, 120*time.Second)
	if len(sus) != 1 || sus[0].HoldTx != 40*time.Second || sus[0].LocalDiscr != before.RemoteDiscr {
		t.Fatalf("suspended %+v", sus)
	}
	if st := p.state(t, p.b, addrA); st.State != Up || st.DetectionTime != 120*time.Second {
		t.Fatalf("B after A suspended: %s, detection %s (want Up, 120s)", st.State, st.DetectionTime)
	}
	p.clock.Advance(60 * time.Second) // the agent is away
	if st := p.state(t, p.b, addrA); st.State != Up {
		t.Fatalf("B went %s while A restarted", st.State)
	}

	a2 := restartA(t, p, sus)
	if st := p.state(t, a2, addrB); st.State != Up || st.LocalDiscr != before.RemoteDiscr || st.RemoteDiscr != before.LocalDiscr {
		t.Fatalf("resumed session %+v", st)
	}
	p.clock.Advance(3 * time.Second)
	a, b := p.state(t, a2, addrB), p.state(t, p.b, addrA)
	if a.State != Up || b.State != Up || a.TxInterval != 300*time.Millisecond || b.DetectionTime != 900*time.Millisecond {
		t.Fatalf("after the resume: A %s tx %s, B %s detection %s", a.State, a.TxInterval, b.State, b.DetectionTime)
	}
	if b.Downs != 0 {
		t.Fatalf("B counted %d failures", b.Downs)
	}
	if got := p.eb.waitFor(t, nb); len(got) != nb {
		t.Fatalf("B saw state changes during the restart: %+v", got[nb:])
	}
}

// TestRestartHoldRunsOut: an agent away longer than the hold loses the
// session (its peer times out), and the next agent does not resume a
// session its peer has dropped.
func TestRestartHoldRunsOut(t *testing.T) {
	p := newPair(t)
	p.up(t, fast)
	sus := suspendA(t, p, 30*time.Second)
	p.clock.Advance(31 * time.Second)
	if st := p.state(t, p.b, addrA); st.State != Down || st.Diag != DiagTimeExpired {
		t.Fatalf("B after the hold: %+v", st)
	}
	a2 := restartA(t, p, sus)
	if st := p.state(t, a2, addrB); st.State != Down || st.LocalDiscr == sus[0].LocalDiscr {
		t.Fatalf("resumed a session past its hold: %+v", st)
	}
	for range 50 {
		p.clock.Advance(100 * time.Millisecond)
	}
	if st := p.state(t, a2, addrB); st.State != Up {
		t.Fatalf("the new session did not come up: %+v", st)
	}
}

// TestRestartSkipsSessionsNotUpOrWithoutHold: only Up sessions with a hold
// are suspended; a resume is only for the same local address.
func TestRestartSkipsSessionsNotUpOrWithoutHold(t *testing.T) {
	p := newPair(t)
	p.up(t, fast)
	if sus := suspendA(t, p, 0); len(sus) != 0 {
		t.Fatalf("suspended without a hold: %+v", sus)
	}

	p = newPair(t)
	p.up(t, fast)
	sus := suspendA(t, p, time.Minute)
	sus[0].Peer.Local = netip.MustParseAddr("10.0.0.9")
	a2 := restartA(t, p, sus)
	if st := p.state(t, a2, addrB); st.State != Down {
		t.Fatalf("resumed a session of another local address: %+v", st)
	}
}

func TestSuspendedFile(t *testing.T) {
	path := SuspendedFile(t.TempDir())
	if l, err := ReadSuspended(path); err != nil || l != nil {
		t.Fatalf("no file: %v, %v", l, err)
	}
	want := []Suspended{{Peer: Peer{Remote: addrB, Local: addrA, Timers: fast}, LocalDiscr: 7, RemoteDiscr: 9,
		RemoteMinRx: time.Second, RemoteMult: 3, HoldTx: 40 * time.Second, Until: t0, Since: t0}}
	if err := WriteSuspended(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadSuspended(path)
	if err != nil || len(got) != 1 || got[0].Peer != want[0].Peer || got[0].LocalDiscr != 7 || !got[0].Until.Equal(t0) {
		t.Fatalf("read back %+v, %v", got, err)
	}
	if l, _ := ReadSuspended(path); l != nil {
		t.Fatal("the file was not removed after reading: a second agent would resume the same sessions")
	}
	if err := WriteSuspended(filepath.Join(t.TempDir(), "no", "such", "dir"), want); err == nil {
		t.Fatal("writing into a missing directory succeeded")
	}
}
