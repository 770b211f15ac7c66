package bfd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// State is a BFD session state (RFC 5880 4.1, the Sta field).
type State uint8

// Session states, with their wire values.
const (
	AdminDown State = 0
	Down      State = 1
	Init      State = 2
	Up        State = 3
)

var stateNames = [...]string{"AdminDown", "Down", "Init", "Up"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Diag is a diagnostic code (RFC 5880 4.1): why the local session last
// changed state.
type Diag uint8

// Diagnostic codes, with their wire values.
const (
	DiagNone                  Diag = 0
	DiagTimeExpired           Diag = 1 // Control Detection Time Expired
	DiagEchoFailed            Diag = 2
	DiagNeighborDown          Diag = 3 // Neighbor Signaled Session Down
	DiagForwardingReset       Diag = 4
	DiagPathDown              Diag = 5
	DiagConcatPathDown        Diag = 6
	DiagAdminDown             Diag = 7 // Administratively Down
	DiagReverseConcatPathDown Diag = 8
)

var diagNames = [...]string{
	"None", "ControlDetectionTimeExpired", "EchoFunctionFailed", "NeighborSignaledSessionDown",
	"ForwardingPlaneReset", "PathDown", "ConcatenatedPathDown", "AdministrativelyDown",
	"ReverseConcatenatedPathDown",
}

func (d Diag) String() string {
	if int(d) < len(diagNames) {
		return diagNames[d]
	}
	return fmt.Sprintf("Diag(%d)", uint8(d))
}

// Version is the protocol version this package speaks.
const Version = 1

// HeaderLen is the length of a Control packet without authentication.
const HeaderLen = 24

// Flag bits of the second byte (after the two state bits).
const (
	flagPoll       = 1 << 5
	flagFinal      = 1 << 4
	flagCPI        = 1 << 3 // Control Plane Independent
	flagAuth       = 1 << 2
	flagDemand     = 1 << 1
	flagMultipoint = 1 << 0
)

// Packet is a BFD Control packet (RFC 5880 4.1). Intervals are in
// microseconds, as on the wire.
type Packet struct {
	Diag  Diag
	State State
	// Poll and Final carry a Poll Sequence (RFC 5880 6.5).
	Poll, Final bool
	// ControlPlaneIndependent is the C bit: the sender's BFD does not share
	// fate with its control plane.
	ControlPlaneIndependent bool
	// Demand is the D bit: the sender asks us to stop periodic packets.
	Demand            bool
	DetectMult        uint8
	MyDiscriminator   uint32
	YourDiscriminator uint32
	// DesiredMinTx, RequiredMinRx and RequiredMinEchoRx in microseconds.
	DesiredMinTx      uint32
	RequiredMinRx     uint32
	RequiredMinEchoRx uint32
}

// Reasons Decode refuses a packet; each is a "MUST be discarded" of RFC 5880
// 6.8.6 that can be judged from the packet alone.
var (
	ErrShort             = errors.New("shorter than a BFD Control packet")
	ErrVersion           = errors.New("not BFD version 1")
	ErrLength            = errors.New("length field out of range")
	ErrDetectMult        = errors.New("detect multiplier 0")
	ErrMultipoint        = errors.New("multipoint bit set")
	ErrMyDiscriminator   = errors.New("my discriminator 0")
	ErrYourDiscriminator = errors.New("your discriminator 0 in state Init or Up")
	// ErrAuth: authentication is not supported, and a packet with the A bit
	// must then be discarded.
	ErrAuth = errors.New("authentication present (not supported)")
)

// Decode parses a Control packet and applies the checks of RFC 5880 6.8.6
// that need no session. b may be longer than the packet (the Length field
// says how much is BFD); anything after Length is ignored.
func Decode(b []byte) (Packet, error) {
	var p Packet
	if len(b) < HeaderLen {
		return p, ErrShort
	}
	if b[0]>>5 != Version {
		return p, ErrVersion
	}
	flags := b[1]
	length := int(b[3])
	if length < HeaderLen || length > len(b) {
		return p, ErrLength
	}
	if flags&flagAuth != 0 {
		return p, ErrAuth
	}
	p = Packet{
		Diag:                    Diag(b[0] & 0x1f),
		State:                   State(flags >> 6),
		Poll:                    flags&flagPoll != 0,
		Final:                   flags&flagFinal != 0,
		ControlPlaneIndependent: flags&flagCPI != 0,
		Demand:                  flags&flagDemand != 0,
		DetectMult:              b[2],
		MyDiscriminator:         binary.BigEndian.Uint32(b[4:]),
		YourDiscriminator:       binary.BigEndian.Uint32(b[8:]),
		DesiredMinTx:            binary.BigEndian.Uint32(b[12:]),
		RequiredMinRx:           binary.BigEndian.Uint32(b[16:]),
		RequiredMinEchoRx:       binary.BigEndian.Uint32(b[20:]),
	}
	switch {
	case p.DetectMult == 0:
		return p, ErrDetectMult
	case flags&flagMultipoint != 0:
		return p, ErrMultipoint
	case p.MyDiscriminator == 0:
		return p, ErrMyDiscriminator
	case p.YourDiscriminator == 0 && p.State != Down && p.State != AdminDown:
		return p, ErrYourDiscriminator
	}
	return p, nil
}

// Append encodes the packet (24 bytes, no authentication) onto b.
func (p *Packet) Append(b []byte) []byte {
	flags := byte(p.State&3) << 6
	for _, f := range []struct {
		on  bool
		bit byte
	}{{p.Poll, flagPoll}, {p.Final, flagFinal}, {p.ControlPlaneIndependent, flagCPI}, {p.Demand, flagDemand}} {
		if f.on {
			flags |= f.bit
		}
	}
	b = append(b, Version<<5|byte(p.Diag&0x1f), flags, p.DetectMult, HeaderLen)
	b = binary.BigEndian.AppendUint32(b, p.MyDiscriminator)
	b = binary.BigEndian.AppendUint32(b, p.YourDiscriminator)
	b = binary.BigEndian.AppendUint32(b, p.DesiredMinTx)
	b = binary.BigEndian.AppendUint32(b, p.RequiredMinRx)
	return binary.BigEndian.AppendUint32(b, p.RequiredMinEchoRx)
}

func (p Packet) String() string {
	return fmt.Sprintf("state=%s diag=%s P=%t F=%t C=%t D=%t mult=%d my=%d your=%d tx=%dus rx=%dus",
		p.State, p.Diag, p.Poll, p.Final, p.ControlPlaneIndependent, p.Demand, p.DetectMult,
		p.MyDiscriminator, p.YourDiscriminator, p.DesiredMinTx, p.RequiredMinRx)
}

// micros converts a duration to the wire's microseconds, saturating.
func micros(d time.Duration) uint32 {
	us := d / time.Microsecond
	switch {
	case us <= 0:
		return 0
	case us > 0xffffffff:
		return 0xffffffff
	}
	return uint32(us)
}

// duration converts the wire's microseconds to a duration.
func duration(us uint32) time.Duration { return time.Duration(us) * time.Microsecond }
