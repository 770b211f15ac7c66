package bfd

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// downPacket is a Down packet written out by hand from RFC 5880 4.1: version
// 1 and diag 0, state Down (01) and no flags, multiplier 3, length 24, my
// discriminator 1, your discriminator 0, desired min tx 1 s, required min
// rx 300 ms, required min echo rx 0.
var downPacket = []byte{
	0x20, 0x40, 0x03, 0x18,
	0x00, 0x00, 0x00, 0x01,
	0x00, 0x00, 0x00, 0x00,
	0x00, 0x0f, 0x42, 0x40,
	0x00, 0x04, 0x93, 0xe0,
	0x00, 0x00, 0x00, 0x00,
}

func TestDecodeKnownBytes(t *testing.T) {
	p, err := Decode(downPacket)
	if err != nil {
		t.Fatal(err)
	}
	want := Packet{State: Down, DetectMult: 3, MyDiscriminator: 1, DesiredMinTx: 1_000_000, RequiredMinRx: 300_000}
	if p != want {
		t.Fatalf("decoded %v, want %v", p, want)
	}
	if got := want.Append(nil); !bytes.Equal(got, downPacket) {
		t.Fatalf("encoded % x, want % x", got, downPacket)
	}
}

func TestPacketRoundTrip(t *testing.T) {
	for _, p := range []Packet{
		{State: Up, Diag: DiagNone, Poll: true, DetectMult: 3, MyDiscriminator: 7, YourDiscriminator: 9, DesiredMinTx: 300_000, RequiredMinRx: 300_000},
		{State: Up, Final: true, ControlPlaneIndependent: true, Demand: true, DetectMult: 255, MyDiscriminator: 0xffffffff, YourDiscriminator: 1, DesiredMinTx: 0xffffffff, RequiredMinRx: 0, RequiredMinEchoRx: 50_000},
		{State: Down, Diag: DiagTimeExpired, DetectMult: 1, MyDiscriminator: 1},
		{State: AdminDown, Diag: DiagAdminDown, DetectMult: 3, MyDiscriminator: 2},
		{State: Init, Diag: DiagReverseConcatPathDown, DetectMult: 5, MyDiscriminator: 3, YourDiscriminator: 4},
	} {
		b := p.Append([]byte{0xee}) // appends after what is there
		if len(b) != 1+HeaderLen || b[0] != 0xee {
			t.Fatalf("Append wrote % x", b)
		}
		got, err := Decode(b[1:])
		if err != nil {
			t.Fatalf("%v: %v", p, err)
		}
		if got != p {
			t.Fatalf("round trip %v, got %v", p, got)
		}
	}
}

// TestDecodeDiscards: every "MUST be discarded" of RFC 5880 6.8.6 that
// depends on the packet alone, each from a valid packet with one field
// broken.
func TestDecodeDiscards(t *testing.T) {
	valid := func() []byte { return bytes.Clone(downPacket) }
	cases := []struct {
		name   string
		mangle func(b []byte) []byte
		want   error
	}{
		{"empty", func([]byte) []byte { return nil }, ErrShort},
		{"23 bytes", func(b []byte) []byte { return b[:23] }, ErrShort},
		{"version 0", func(b []byte) []byte { b[0] = 0x00; return b }, ErrVersion},
		{"version 2", func(b []byte) []byte { b[0] = 0x40; return b }, ErrVersion},
		{"version 7", func(b []byte) []byte { b[0] = 0xe0; return b }, ErrVersion},
		{"length below 24", func(b []byte) []byte { b[3] = 23; return b }, ErrLength},
		{"length 0", func(b []byte) []byte { b[3] = 0; return b }, ErrLength},
		{"length beyond the datagram", func(b []byte) []byte { b[3] = 25; return b }, ErrLength},
		{"detect mult 0", func(b []byte) []byte { b[2] = 0; return b }, ErrDetectMult},
		{"multipoint", func(b []byte) []byte { b[1] |= 0x01; return b }, ErrMultipoint},
		{"my discriminator 0", func(b []byte) []byte { copy(b[4:8], []byte{0, 0, 0, 0}); return b }, ErrMyDiscriminator},
		{"your discriminator 0 in Up", func(b []byte) []byte { b[1] = 3 << 6; return b }, ErrYourDiscriminator},
		{"your discriminator 0 in Init", func(b []byte) []byte { b[1] = 2 << 6; return b }, ErrYourDiscriminator},
		{"auth bit without auth configured", func(b []byte) []byte {
			b[1] |= 0x04
			b[3] = 26
			return append(b, 1, 2)
		}, ErrAuth},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode(c.mangle(valid()))
			if !errors.Is(err, c.want) {
				t.Fatalf("Decode: %v, want %v", err, c.want)
			}
		})
	}
	// What the RFC allows: your discriminator 0 in Down and AdminDown,
	// bytes after Length (they are not BFD's).
	for _, b := range [][]byte{
		valid(),
		func() []byte { b := valid(); b[1] = 0; return b }(),
		append(valid(), 0xde, 0xad),
	} {
		if _, err := Decode(b); err != nil {
			t.Fatalf("Decode(% x): %v", b, err)
		}
	}
}

func TestMicros(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want uint32
	}{
		{0, 0}, {-time.Second, 0}, {time.Nanosecond, 0}, {time.Microsecond, 1},
		{300 * time.Millisecond, 300_000}, {time.Hour * 2, 0xffffffff},
	} {
		if got := micros(c.d); got != c.want {
			t.Errorf("micros(%s) = %d, want %d", c.d, got, c.want)
		}
	}
	if duration(300_000) != 300*time.Millisecond {
		t.Fatal("duration(300000)")
	}
}
