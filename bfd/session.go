package bfd

import (
	"fmt"
	"time"
)

// Timers are a session's configured intervals.
type Timers struct {
	// MinTx is how often we would like to send once the session is Up
	// (bfd.DesiredMinTxInterval); the peer's MinRx may make it slower.
	MinTx time.Duration
	// MinRx is the shortest interval between packets we can take
	// (bfd.RequiredMinRxInterval).
	MinRx time.Duration
	// Multiplier is the detection multiplier (bfd.DetectMult): the peer
	// declares us down after this many of our intervals without a packet.
	Multiplier uint8
}

// Default timers: 300 ms × 3, a detection time just under a second.
const (
	DefaultMinTx      = 300 * time.Millisecond
	DefaultMinRx      = 300 * time.Millisecond
	DefaultMultiplier = 3
)

// SlowTx is the transmit interval while a session is not Up: RFC 5880
// 6.8.3 requires at least one second, so that sessions that are down (or
// to peers that do not run BFD) cost next to nothing.
const SlowTx = time.Second

// maxInterval is the largest interval the 32-bit microsecond fields carry.
const maxInterval = time.Duration(0xffffffff) * time.Microsecond

// Validate reports timers the protocol cannot carry.
func (t Timers) Validate() error {
	switch {
	case t.MinTx <= 0 || t.MinTx > maxInterval:
		return fmt.Errorf("min tx interval %s out of range (0, %s]", t.MinTx, maxInterval)
	case t.MinRx <= 0 || t.MinRx > maxInterval:
		return fmt.Errorf("min rx interval %s out of range (0, %s]", t.MinRx, maxInterval)
	case t.Multiplier == 0:
		return fmt.Errorf("detection multiplier 0")
	}
	return nil
}

// transition is a change of the local session state.
type transition struct {
	from, to State
	diag     Diag
	// remoteAdminDown: the change to Down was the peer's AdminDown.
	remoteAdminDown bool
}

// session holds the state variables of RFC 5880 6.8.1 for one session and
// applies the rules of reception (6.8.6), detection (6.8.4), timer
// negotiation (6.8.2, 6.8.3) and transmission (6.8.7) to them. It is pure:
// time comes in as arguments, and it neither sends nor sleeps — the
// Manager does both — so the state machine is tested step by step against
// the RFC's tables without timers.
//
// Authentication and Demand mode are not implemented: we never set the D
// bit and discard packets with the A bit (Decode). The peer's Demand mode
// is honoured (we stop periodic packets when it asks).
type session struct {
	cfg Timers

	state, remoteState      State
	localDiscr, remoteDiscr uint32
	diag, remoteDiag        Diag

	// desiredMinTx and requiredMinRx are what we advertise
	// (bfd.DesiredMinTxInterval, bfd.RequiredMinRxInterval).
	desiredMinTx, requiredMinRx time.Duration
	// txBase and rxBase are the values in force for our transmit interval
	// and our detection time. They follow the advertised values at once
	// when that is safe (sending faster, detecting slower) and only after
	// the Poll Sequence's Final otherwise (RFC 5880 6.8.3).
	txBase, rxBase time.Duration

	remoteMinRx  time.Duration // bfd.RemoteMinRxInterval
	remoteMinTx  time.Duration // the peer's last Desired Min TX Interval
	remoteMult   uint8         // the peer's Detect Mult
	remoteDemand bool          // bfd.RemoteDemandMode
	remoteCPI    bool          // the peer's C bit

	// polling: a Poll Sequence is running for pollTx and pollRx.
	polling        bool
	pollTx, pollRx time.Duration
	// finalOwed: the peer polled; the next packet answers with Final.
	finalOwed bool

	// lastRx is when the last valid packet arrived; zero before the first
	// and after the detection time ran out.
	lastRx time.Time
}

// newSession returns a session in state Down (RFC 5880 6.8.1 initial
// values).
func newSession(discr uint32, t Timers) *session {
	s := &session{
		cfg:         t,
		state:       Down,
		remoteState: Down,
		localDiscr:  discr,
		remoteMinRx: time.Microsecond, // bfd.RemoteMinRxInterval starts at 1
	}
	s.desiredMinTx, s.requiredMinRx = max(t.MinTx, SlowTx), t.MinRx
	s.txBase, s.rxBase = s.desiredMinTx, s.requiredMinRx
	return s
}

// receive applies a valid packet (one that passed Decode and was matched to
// this session) received at now, following RFC 5880 6.8.6 in its order.
func (s *session) receive(p *Packet, now time.Time) (transition, bool) {
	s.remoteDiscr = p.MyDiscriminator
	s.remoteState = p.State
	s.remoteDemand = p.Demand
	s.remoteMinRx = duration(p.RequiredMinRx)
	s.remoteMinTx = duration(p.DesiredMinTx)
	s.remoteMult = p.DetectMult
	s.remoteCPI = p.ControlPlaneIndependent
	s.remoteDiag = p.Diag
	// A Final ends our Poll Sequence; one that answers nothing is ignored.
	if p.Final && s.polling {
		s.endPoll()
	}
	s.lastRx = now

	if s.state == AdminDown {
		return transition{}, false
	}
	var tr transition
	var changed bool
	if p.State == AdminDown {
		if s.state != Down {
			tr, changed = s.setState(Down, DiagNeighborDown), true
			tr.remoteAdminDown = true
		}
	} else {
		switch s.state {
		case Down:
			switch p.State {
			case Down:
				tr, changed = s.setState(Init, DiagNone), true
			case Init:
				tr, changed = s.setState(Up, DiagNone), true
			}
		case Init:
			if p.State == Init || p.State == Up {
				tr, changed = s.setState(Up, DiagNone), true
			}
		case Up:
			if p.State == Down {
				tr, changed = s.setState(Down, DiagNeighborDown), true
			}
		}
	}
	if p.Poll {
		s.finalOwed = true
	}
	return tr, changed
}

// setState moves the session and switches between the slow timers of a
// session that is not Up and the configured ones.
func (s *session) setState(to State, diag Diag) transition {
	tr := transition{from: s.state, to: to, diag: diag}
	s.state, s.diag = to, diag
	switch {
	case to == Up:
		s.announce(s.cfg.MinTx, s.cfg.MinRx)
	case tr.from == Up:
		s.polling = false
		s.announce(max(s.cfg.MinTx, SlowTx), s.cfg.MinRx)
	}
	return tr
}

// configure applies new timers (RFC 5880 6.8.3).
func (s *session) configure(t Timers) {
	s.cfg = t
	tx := t.MinTx
	if s.state != Up {
		tx = max(tx, SlowTx)
	}
	s.announce(tx, t.MinRx)
}

// announce changes the advertised intervals. Outside Up they apply at
// once. While Up a Poll Sequence announces them; sending faster and
// detecting more slowly start at once, but a slower transmit interval
// waits for the Final (the peer must first lengthen its detection time),
// and so does a shorter detection time (the peer must first send faster).
func (s *session) announce(tx, rx time.Duration) {
	if tx == s.desiredMinTx && rx == s.requiredMinRx {
		return
	}
	s.desiredMinTx, s.requiredMinRx = tx, rx
	if s.state != Up {
		s.txBase, s.rxBase = tx, rx
		return
	}
	s.txBase = min(s.txBase, tx)
	s.rxBase = max(s.rxBase, rx)
	if !s.polling {
		s.startPoll()
	}
	// A poll already running ends first; endPoll starts another one for
	// the values announced since.
}

func (s *session) startPoll() {
	s.polling = true
	s.pollTx, s.pollRx = s.desiredMinTx, s.requiredMinRx
}

// endPoll applies what the finished Poll Sequence announced. The peer may
// since have seen newer values in our packets: the transmit interval takes
// the smaller and the detection base the larger of the two, which is safe
// either way, and a new poll confirms the newer values.
func (s *session) endPoll() {
	s.polling = false
	s.txBase = min(s.pollTx, s.desiredMinTx)
	s.rxBase = max(s.pollRx, s.requiredMinRx)
	if s.pollTx != s.desiredMinTx || s.pollRx != s.requiredMinRx {
		s.startPoll()
	}
}

// detectionTime is how long the peer may stay silent (RFC 5880 6.8.4,
// asynchronous mode): its multiplier times the larger of our required
// receive interval and its desired transmit interval. Zero until the
// first packet.
func (s *session) detectionTime() time.Duration {
	return time.Duration(s.remoteMult) * max(s.rxBase, s.remoteMinTx)
}

// deadline is when the detection time runs out; zero when no packet is
// awaited.
func (s *session) deadline() time.Time {
	if s.lastRx.IsZero() {
		return time.Time{}
	}
	return s.lastRx.Add(s.detectionTime())
}

// expire applies the detection timeout at now, if it passed: an Init or
// Up session goes Down (diag 1), and in any state what we knew about the
// peer is forgotten (bfd.RemoteDiscr back to zero, RFC 5880 6.8.1).
func (s *session) expire(now time.Time) (transition, bool) {
	d := s.deadline()
	if d.IsZero() || now.Before(d) {
		return transition{}, false
	}
	s.lastRx = time.Time{}
	s.remoteDiscr, s.remoteState, s.remoteMult = 0, Down, 0
	s.remoteMinRx, s.remoteMinTx, s.remoteDemand = time.Microsecond, 0, false
	if s.state == Init || s.state == Up {
		return s.setState(Down, DiagTimeExpired), true
	}
	return transition{}, false
}

// setAdminDown takes the session administratively down (RFC 5880 6.8.16)
// or back to Down.
func (s *session) setAdminDown(down bool) (transition, bool) {
	switch {
	case down && s.state != AdminDown:
		return s.setState(AdminDown, DiagAdminDown), true
	case !down && s.state == AdminDown:
		return s.setState(Down, DiagNone), true
	}
	return transition{}, false
}

// txInterval is the negotiated transmit interval before jitter (RFC 5880
// 6.8.7): the larger of what we want and what the peer can take.
func (s *session) txInterval() time.Duration { return max(s.txBase, s.remoteMinRx) }

// jittered returns the interval to the next periodic packet for a uniform
// random u in [0,1): 75–100 % of the interval, or 75–90 % when our
// multiplier is 1 (RFC 5880 6.8.7), so that sessions do not synchronise.
func (s *session) jittered(u float64) time.Duration {
	span := 0.25
	if s.cfg.Multiplier == 1 {
		span = 0.15
	}
	return time.Duration(float64(s.txInterval()) * (0.75 + span*u))
}

// periodic reports whether periodic packets may be sent now: not when the
// peer's required receive interval is zero, nor while the peer runs Demand
// mode with both ends Up and no poll of ours is running (RFC 5880 6.8.7).
func (s *session) periodic() bool {
	if s.remoteMinRx == 0 {
		return false
	}
	return !(s.remoteDemand && s.state == Up && s.remoteState == Up && !s.polling)
}

// packet builds the next Control packet: the Final answering a poll when
// final is set (never together with Poll), otherwise a periodic packet
// that carries Poll while our Poll Sequence runs. The C bit stays clear:
// this BFD runs in the agent and shares its fate (RFC 5882 4.3).
func (s *session) packet(final bool) Packet {
	if final {
		s.finalOwed = false
	}
	return Packet{
		Diag:              s.diag,
		State:             s.state,
		Poll:              s.polling && !final,
		Final:             final,
		DetectMult:        s.cfg.Multiplier,
		MyDiscriminator:   s.localDiscr,
		YourDiscriminator: s.remoteDiscr,
		DesiredMinTx:      micros(s.desiredMinTx),
		RequiredMinRx:     micros(s.requiredMinRx),
	}
}
