package bfd

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

var fast = Timers{MinTx: 300 * time.Millisecond, MinRx: 300 * time.Millisecond, Multiplier: 3}

// peerPacket is what a peer with discriminator 99 and 300 ms timers sends
// in state st to a session with discriminator 1.
func peerPacket(st State) *Packet {
	p := &Packet{State: st, DetectMult: 3, MyDiscriminator: 99, YourDiscriminator: 1,
		DesiredMinTx: 300_000, RequiredMinRx: 300_000}
	if st == Down || st == AdminDown {
		p.YourDiscriminator = 0
	}
	return p
}

// sessionIn returns a session driven into st the way the RFC gets there.
func sessionIn(t *testing.T, st State) *session {
	t.Helper()
	s := newSession(1, fast)
	switch st {
	case Init:
		s.receive(peerPacket(Down), t0)
	case Up:
		s.receive(peerPacket(Init), t0)
	case AdminDown:
		s.setAdminDown(true)
	}
	if s.state != st {
		t.Fatalf("could not drive a session to %s (it is %s)", st, s.state)
	}
	return s
}

// TestStateMachine is the state diagram of RFC 5880 6.2 and the reception
// rules of 6.8.6, one row per (local state, event): a received state, or
// the detection timer running out.
func TestStateMachine(t *testing.T) {
	const timer = State(255) // the event "detection time expired"
	cases := []struct {
		from     State
		event    State
		to       State
		diag     Diag
		adminRmt bool // the change is the peer's AdminDown
	}{
		{Down, Down, Init, DiagNone, false},
		{Down, Init, Up, DiagNone, false},
		{Down, Up, Down, DiagNone, false},
		{Down, AdminDown, Down, DiagNone, false},
		{Down, timer, Down, DiagNone, false},

		{Init, Down, Init, DiagNone, false},
		{Init, Init, Up, DiagNone, false},
		{Init, Up, Up, DiagNone, false},
		{Init, AdminDown, Down, DiagNeighborDown, true},
		{Init, timer, Down, DiagTimeExpired, false},

		{Up, Down, Down, DiagNeighborDown, false},
		{Up, Init, Up, DiagNone, false},
		{Up, Up, Up, DiagNone, false},
		{Up, AdminDown, Down, DiagNeighborDown, true},
		{Up, timer, Down, DiagTimeExpired, false},

		// AdminDown ignores everything the peer says (6.8.6: discard).
		{AdminDown, Down, AdminDown, DiagAdminDown, false},
		{AdminDown, Init, AdminDown, DiagAdminDown, false},
		{AdminDown, Up, AdminDown, DiagAdminDown, false},
		{AdminDown, AdminDown, AdminDown, DiagAdminDown, false},
	}
	for _, c := range cases {
		ev := "timer"
		if c.event != timer {
			ev = "recv " + c.event.String()
		}
		t.Run(c.from.String()+"/"+ev, func(t *testing.T) {
			s := sessionIn(t, c.from)
			diagBefore := s.diag
			var tr transition
			var changed bool
			if c.event == timer {
				// A session with no packet yet has no deadline; give it one.
				if s.lastRx.IsZero() {
					s.receive(peerPacket(Down), t0)
					if s.state != c.from { // Down becomes Init on that packet
						s = sessionIn(t, c.from)
						s.lastRx, s.remoteMult, s.remoteMinTx = t0, 3, 300*time.Millisecond
					}
				}
				tr, changed = s.expire(s.deadline())
			} else {
				tr, changed = s.receive(peerPacket(c.event), t0.Add(time.Millisecond))
			}
			if s.state != c.to {
				t.Fatalf("state %s, want %s", s.state, c.to)
			}
			if changed != (c.from != c.to) {
				t.Fatalf("changed = %t for %s → %s", changed, c.from, c.to)
			}
			wantDiag := c.diag
			if !changed {
				wantDiag = diagBefore
			}
			if s.diag != wantDiag {
				t.Fatalf("diag %s, want %s", s.diag, wantDiag)
			}
			if changed && (tr.from != c.from || tr.to != c.to || tr.diag != c.diag || tr.remoteAdminDown != c.adminRmt) {
				t.Fatalf("transition %+v, want %s→%s diag %s remoteAdminDown %t", tr, c.from, c.to, c.diag, c.adminRmt)
			}
		})
	}
}

// TestReceiveRecordsPeer: 6.8.6 copies the peer's fields into the state
// variables, whatever the local state.
func TestReceiveRecordsPeer(t *testing.T) {
	s := sessionIn(t, Up)
	p := peerPacket(Up)
	p.ControlPlaneIndependent, p.Demand, p.Diag = true, true, DiagPathDown
	p.DesiredMinTx, p.RequiredMinRx, p.DetectMult = 500_000, 2_000_000, 4
	s.receive(p, t0.Add(time.Second))
	if s.remoteDiscr != 99 || s.remoteState != Up || !s.remoteCPI || !s.remoteDemand || s.remoteDiag != DiagPathDown ||
		s.remoteMinTx != 500*time.Millisecond || s.remoteMinRx != 2*time.Second || s.remoteMult != 4 {
		t.Fatalf("peer state not recorded: %+v", s)
	}
	// The peer can take no more than one packet in 2 s: that is our
	// interval now, and its 500 ms × 4 against our 300 ms is our
	// detection time.
	if s.txInterval() != 2*time.Second {
		t.Fatalf("tx interval %s, want 2s", s.txInterval())
	}
	if s.detectionTime() != 2*time.Second {
		t.Fatalf("detection time %s, want 4 × max(300ms, 500ms)", s.detectionTime())
	}
}

// TestSlowTimersUntilUp: not Up, we advertise and use at least one second
// (6.8.3); Up, the configured interval, announced with a Poll Sequence;
// Down again, slow at once.
func TestSlowTimersUntilUp(t *testing.T) {
	s := newSession(1, fast)
	if p := s.packet(false); p.DesiredMinTx != 1_000_000 || p.RequiredMinRx != 300_000 || p.Poll {
		t.Fatalf("Down packet %v: want tx 1s, rx 300ms, no poll", p)
	}
	if s.txInterval() != time.Second {
		t.Fatalf("Down tx interval %s", s.txInterval())
	}
	s.receive(peerPacket(Init), t0)
	if s.state != Up {
		t.Fatal("not Up")
	}
	if s.txInterval() != 300*time.Millisecond {
		t.Fatalf("Up: tx interval %s, want 300ms at once (sending faster is safe)", s.txInterval())
	}
	p := s.packet(false)
	if !p.Poll || p.Final || p.DesiredMinTx != 300_000 {
		t.Fatalf("Up packet %v: want Poll with tx 300ms", p)
	}
	f := peerPacket(Up)
	f.Final = true
	s.receive(f, t0.Add(10*time.Millisecond))
	if s.polling || s.packet(false).Poll {
		t.Fatal("Final did not end the Poll Sequence")
	}
	s.expire(s.deadline())
	if s.state != Down || s.txInterval() != time.Second || s.packet(false).DesiredMinTx != 1_000_000 || s.polling {
		t.Fatalf("after a timeout: state %s, tx %s, polling %t", s.state, s.txInterval(), s.polling)
	}
}

// upSession returns an Up session whose first Poll Sequence is done.
func upSession(t *testing.T) *session {
	s := sessionIn(t, Up)
	f := peerPacket(Up)
	f.Final = true
	s.receive(f, t0)
	if s.polling {
		t.Fatal("poll still running")
	}
	return s
}

func final(s *session, at time.Time) {
	f := peerPacket(Up)
	f.Final = true
	s.receive(f, at)
}

// TestPollSequenceTimerChanges: RFC 5880 6.8.3 — a slower transmit
// interval and a shorter detection time wait for the Final; the opposite
// directions apply at once.
func TestPollSequenceTimerChanges(t *testing.T) {
	cases := []struct {
		name                 string
		to                   Timers
		txDuring, txAfter    time.Duration
		rxDuring, rxAfter    time.Duration // our detection base
		detectDur, detectAft time.Duration
	}{
		{"slower tx waits", Timers{MinTx: time.Second, MinRx: 300 * time.Millisecond, Multiplier: 3},
			300 * time.Millisecond, time.Second, 300 * time.Millisecond, 300 * time.Millisecond, 900 * time.Millisecond, 900 * time.Millisecond},
		{"faster tx at once", Timers{MinTx: 100 * time.Millisecond, MinRx: 300 * time.Millisecond, Multiplier: 3},
			300 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond, 900 * time.Millisecond, 900 * time.Millisecond},
		{"shorter rx waits", Timers{MinTx: 300 * time.Millisecond, MinRx: 100 * time.Millisecond, Multiplier: 3},
			300 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond, 100 * time.Millisecond, 900 * time.Millisecond, 900 * time.Millisecond},
		{"longer rx at once", Timers{MinTx: 300 * time.Millisecond, MinRx: time.Second, Multiplier: 3},
			300 * time.Millisecond, 300 * time.Millisecond, time.Second, time.Second, 3 * time.Second, 3 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := upSession(t)
			s.configure(c.to)
			if !s.polling {
				t.Fatal("a timer change while Up must start a Poll Sequence")
			}
			p := s.packet(false)
			if !p.Poll || p.DesiredMinTx != micros(c.to.MinTx) || p.RequiredMinRx != micros(c.to.MinRx) {
				t.Fatalf("polling packet %v does not announce %+v", p, c.to)
			}
			// The faster tx case: 300 ms stays because the peer's 300 ms
			// rx interval bounds it.
			if got := s.txInterval(); got != c.txDuring {
				t.Fatalf("tx interval during the poll %s, want %s", got, c.txDuring)
			}
			if s.rxBase != c.rxDuring || s.detectionTime() != c.detectDur {
				t.Fatalf("during the poll: rx base %s detection %s, want %s %s", s.rxBase, s.detectionTime(), c.rxDuring, c.detectDur)
			}
			final(s, t0.Add(time.Second))
			if s.polling {
				t.Fatal("Final did not end the poll")
			}
			if got := s.txInterval(); got != c.txAfter {
				t.Fatalf("tx interval after the Final %s, want %s", got, c.txAfter)
			}
			if s.rxBase != c.rxAfter || s.detectionTime() != c.detectAft {
				t.Fatalf("after the Final: rx base %s detection %s, want %s %s", s.rxBase, s.detectionTime(), c.rxAfter, c.detectAft)
			}
		})
	}
}

// TestPollSequenceChangeDuringPoll: values changed while a poll runs are
// confirmed by a second poll; the Final of the first never applies more
// than what is safe.
func TestPollSequenceChangeDuringPoll(t *testing.T) {
	s := upSession(t)
	s.configure(Timers{MinTx: 2 * time.Second, MinRx: 300 * time.Millisecond, Multiplier: 3})
	s.configure(Timers{MinTx: time.Second, MinRx: 300 * time.Millisecond, Multiplier: 3})
	if s.txInterval() != 300*time.Millisecond {
		t.Fatalf("tx %s before any Final", s.txInterval())
	}
	final(s, t0.Add(time.Second)) // answers the poll that announced 2 s
	if !s.polling {
		t.Fatal("the change to 1 s needs its own poll")
	}
	if s.txInterval() != time.Second {
		t.Fatalf("after the first Final: tx %s, want 1s (the peer has seen 2s, then 1s)", s.txInterval())
	}
	final(s, t0.Add(2*time.Second))
	if s.polling || s.txInterval() != time.Second {
		t.Fatalf("after the second Final: polling %t tx %s", s.polling, s.txInterval())
	}
}

// TestPollAndFinal: a Poll from the peer is answered with a Final, never
// with both bits; a Final that answers nothing changes nothing.
func TestPollAndFinal(t *testing.T) {
	s := sessionIn(t, Up) // its own poll runs
	p := peerPacket(Up)
	p.Poll = true
	s.receive(p, t0.Add(time.Millisecond))
	if !s.finalOwed {
		t.Fatal("a Poll must be answered")
	}
	ans := s.packet(true)
	if !ans.Final || ans.Poll {
		t.Fatalf("answer %v: want Final without Poll", ans)
	}
	if s.finalOwed {
		t.Fatal("Final still owed after sending it")
	}
	if per := s.packet(false); !per.Poll || per.Final {
		t.Fatalf("periodic packet %v: our own poll still runs", per)
	}

	s = upSession(t)
	before := *s
	final(s, t0.Add(time.Second))
	if s.polling != before.polling || s.txBase != before.txBase || s.rxBase != before.rxBase {
		t.Fatal("an unsolicited Final changed the timers")
	}
}

// TestDetection: the deadline moves with every packet; the timeout takes an
// Up session Down with diag 1 and forgets the peer's discriminator (6.8.1);
// in Down only the forgetting happens.
func TestDetection(t *testing.T) {
	s := upSession(t)
	last := t0.Add(5 * time.Second)
	s.receive(peerPacket(Up), last)
	if got := s.deadline(); !got.Equal(last.Add(900 * time.Millisecond)) {
		t.Fatalf("deadline %s after the last packet, want 900ms", got.Sub(last))
	}
	if _, changed := s.expire(last.Add(899 * time.Millisecond)); changed || s.state != Up {
		t.Fatal("expired before the detection time")
	}
	tr, changed := s.expire(last.Add(900 * time.Millisecond))
	if !changed || tr.to != Down || tr.diag != DiagTimeExpired || s.remoteDiscr != 0 || !s.deadline().IsZero() {
		t.Fatalf("at the detection time: %+v, remote discr %d", tr, s.remoteDiscr)
	}
	if p := s.packet(false); p.YourDiscriminator != 0 || p.State != Down || p.Diag != DiagTimeExpired {
		t.Fatalf("after the timeout we send %v", p)
	}

	s = newSession(1, fast)
	s.receive(&Packet{State: Up, DetectMult: 3, MyDiscriminator: 5, YourDiscriminator: 8, DesiredMinTx: 1_000_000, RequiredMinRx: 1_000_000}, t0)
	if s.state != Down || s.remoteDiscr != 5 {
		t.Fatal("a Down session must stay Down on Up and learn the discriminator")
	}
	if _, changed := s.expire(t0.Add(3 * time.Second)); changed || s.remoteDiscr != 0 {
		t.Fatalf("Down after the detection time: changed %t, remote discr %d (want 0)", changed, s.remoteDiscr)
	}
}

// TestJitter: 75–100 % of the interval, 75–90 % with multiplier 1 (6.8.7).
func TestJitter(t *testing.T) {
	s := upSession(t)
	for _, c := range []struct {
		mult    uint8
		u       float64
		want    time.Duration
		comment string
	}{
		{3, 0, 225 * time.Millisecond, "75%"},
		{3, 0.5, 262500 * time.Microsecond, "87.5%"},
		{3, 0.999999, 299999925 * time.Nanosecond, "just under 100%"},
		{1, 0, 225 * time.Millisecond, "75%"},
		{1, 0.999999, 269999955 * time.Nanosecond, "just under 90%"},
	} {
		s.cfg.Multiplier = c.mult
		if got := s.jittered(c.u); got != c.want {
			t.Errorf("multiplier %d, u %v: %s, want %s (%s)", c.mult, c.u, got, c.want, c.comment)
		}
	}
}

// TestPeriodic: no periodic packets when the peer's required min rx is 0,
// nor while it runs Demand mode with both ends Up, except during our poll.
func TestPeriodic(t *testing.T) {
	s := upSession(t)
	if !s.periodic() {
		t.Fatal("an Up session sends")
	}
	p := peerPacket(Up)
	p.RequiredMinRx = 0
	s.receive(p, t0)
	if s.periodic() {
		t.Fatal("sending to a peer that asked for nothing (required min rx 0)")
	}
	p = peerPacket(Up)
	p.Demand = true
	s.receive(p, t0)
	if s.periodic() {
		t.Fatal("sending periodically to a peer in Demand mode")
	}
	s.configure(Timers{MinTx: 200 * time.Millisecond, MinRx: 300 * time.Millisecond, Multiplier: 3})
	if !s.periodic() {
		t.Fatal("a Poll Sequence must be sent even in Demand mode")
	}
}

// TestAdminDown: taken down administratively, the session says so (diag
// 7), ignores the peer and comes back as Down.
func TestAdminDown(t *testing.T) {
	s := upSession(t)
	tr, changed := s.setAdminDown(true)
	if !changed || tr.from != Up || tr.to != AdminDown || s.diag != DiagAdminDown {
		t.Fatalf("%+v", tr)
	}
	if p := s.packet(false); p.State != AdminDown || p.Diag != DiagAdminDown || p.DesiredMinTx != 1_000_000 {
		t.Fatalf("AdminDown packet %v", p)
	}
	if _, changed := s.receive(peerPacket(Init), t0); changed {
		t.Fatal("AdminDown reacted to a packet")
	}
	if _, changed := s.setAdminDown(true); changed {
		t.Fatal("AdminDown twice changed something")
	}
	if tr, _ := s.setAdminDown(false); tr.to != Down || s.state != Down {
		t.Fatalf("leaving AdminDown: %+v", tr)
	}
}

func TestTimersValidate(t *testing.T) {
	for _, c := range []struct {
		t  Timers
		ok bool
	}{
		{fast, true},
		{Timers{MinTx: time.Millisecond, MinRx: time.Millisecond, Multiplier: 1}, true},
		{Timers{MinTx: 0, MinRx: time.Second, Multiplier: 3}, false},
		{Timers{MinTx: time.Second, MinRx: -1, Multiplier: 3}, false},
		{Timers{MinTx: time.Second, MinRx: time.Second, Multiplier: 0}, false},
		{Timers{MinTx: 2 * time.Hour, MinRx: time.Second, Multiplier: 3}, false},
	} {
		if err := c.t.Validate(); (err == nil) != c.ok {
			t.Errorf("%+v: %v", c.t, err)
		}
	}
}
