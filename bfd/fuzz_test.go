package bfd

import (
	"testing"
	"time"
)

// FuzzDecode feeds arbitrary datagrams to the decoder and whatever it
// accepts to a session in each state. It must never panic; an accepted
// packet must encode back to itself; a session must stay in a valid state
// and never send Poll and Final together. The kept corpus is
// testdata/fuzz/FuzzDecode; `make fuzz` runs it for a few seconds.
func FuzzDecode(f *testing.F) {
	f.Add(downPacket)
	for _, p := range []Packet{
		{State: Up, Poll: true, DetectMult: 3, MyDiscriminator: 7, YourDiscriminator: 1, DesiredMinTx: 300_000, RequiredMinRx: 300_000},
		{State: Init, Final: true, DetectMult: 1, MyDiscriminator: 7, YourDiscriminator: 1, DesiredMinTx: 1, RequiredMinRx: 0},
		{State: AdminDown, Diag: DiagAdminDown, DetectMult: 255, MyDiscriminator: 0xffffffff, DesiredMinTx: 0xffffffff, RequiredMinRx: 0xffffffff},
		{State: Up, Demand: true, ControlPlaneIndependent: true, DetectMult: 3, MyDiscriminator: 7, YourDiscriminator: 1, RequiredMinRx: 0},
	} {
		f.Add(p.Append(nil))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Decode(b)
		if err != nil {
			return
		}
		again, err := Decode(p.Append(nil))
		if err != nil || again != p {
			t.Fatalf("%v encodes to something else: %v, %v", p, again, err)
		}
		for _, st := range []State{Down, Init, Up, AdminDown} {
			s := newSession(1, fast)
			switch st {
			case Init:
				s.receive(&Packet{State: Down, DetectMult: 3, MyDiscriminator: 9, DesiredMinTx: 1, RequiredMinRx: 1}, t0)
			case Up:
				s.receive(&Packet{State: Init, DetectMult: 3, MyDiscriminator: 9, YourDiscriminator: 1, DesiredMinTx: 1, RequiredMinRx: 1}, t0)
			case AdminDown:
				s.setAdminDown(true)
			}
			s.receive(&p, t0.Add(time.Millisecond))
			if s.state > Up {
				t.Fatalf("state %d", s.state)
			}
			for _, fin := range []bool{s.finalOwed, false} {
				if out := s.packet(fin); out.Poll && out.Final {
					t.Fatalf("Poll and Final together after %v", p)
				}
			}
			if s.txInterval() <= 0 && s.periodic() {
				t.Fatalf("periodic sending with interval %s after %v", s.txInterval(), p)
			}
			if d := s.deadline(); !d.IsZero() && s.detectionTime() <= 0 {
				t.Fatalf("detection time %s after %v", s.detectionTime(), p)
			}
			s.expire(t0.Add(time.Hour * 24 * 365))
		}
	})
}
