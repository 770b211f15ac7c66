// Package bgpwire encodes and decodes the few BGP-4 messages (RFC 4271)
// the benchmarks' raw speakers need: OPEN, KEEPALIVE, UPDATE and
// End-of-RIB. It is deliberately small; the speakers under test are the
// real implementations.
package bgpwire

import (
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
)

// Message types.
const (
	TypeOpen         = 1
	TypeUpdate       = 2
	TypeNotification = 3
	TypeKeepalive    = 4
)

// HeaderLen is the length of a message header (marker, length, type).
const HeaderLen = 19

// Msg returns a message of type typ with body.
func Msg(typ byte, body []byte) []byte {
	m := make([]byte, HeaderLen, HeaderLen+len(body))
	for i := range 16 {
		m[i] = 0xff
	}
	binary.BigEndian.PutUint16(m[16:], uint16(HeaderLen+len(body)))
	m[18] = typ
	return append(m, body...)
}

// Keepalive is a KEEPALIVE message.
func Keepalive() []byte { return Msg(TypeKeepalive, nil) }

// EndOfRIB is the IPv4 unicast End-of-RIB marker (an empty UPDATE).
func EndOfRIB() []byte { return Msg(TypeUpdate, []byte{0, 0, 0, 0}) }

// Open is an OPEN: version 4, the hold time in seconds, capabilities
// multiprotocol IPv4 unicast, route refresh and 4-octet AS.
func Open(as uint32, id netip.Addr, hold uint16) []byte {
	caps := []byte{1, 4, 0, 1, 0, 1, 2, 0, 65, 4, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(caps[10:], as)
	b := []byte{4, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(b[1:], uint16(min(as, 23456)))
	binary.BigEndian.PutUint16(b[3:], hold)
	id4 := id.As4()
	b = append(b, id4[:]...)
	b = append(b, byte(2+len(caps)), 2, byte(len(caps)))
	return Msg(TypeOpen, append(b, caps...))
}

// PeerAS is the AS an OPEN's body announces (the 4-octet AS capability
// when present).
func PeerAS(open []byte) uint32 {
	if len(open) < 10 {
		return 0
	}
	as := uint32(binary.BigEndian.Uint16(open[1:]))
	for opt := open[10:]; len(opt) >= 2 && 2+int(opt[1]) <= len(opt); opt = opt[2+int(opt[1]):] {
		for c := opt[2 : 2+int(opt[1])]; len(c) >= 2 && 2+int(c[1]) <= len(c); c = c[2+int(c[1]):] {
			if c[0] == 65 && c[1] == 4 {
				as = binary.BigEndian.Uint32(c[2:])
			}
		}
	}
	return as
}

// ErrLength is a message length outside 19..65535.
var ErrLength = errors.New("bad BGP message length")

// ReadMsg reads one message and returns its type and body.
func ReadMsg(r io.Reader) (byte, []byte, error) {
	var h [HeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	l := int(binary.BigEndian.Uint16(h[16:]))
	if l < HeaderLen {
		return 0, nil, ErrLength
	}
	body := make([]byte, l-HeaderLen)
	_, err := io.ReadFull(r, body)
	return h[18], body, err
}

// Update splits an UPDATE's body into its withdrawn routes, path
// attributes and NLRI.
func Update(body []byte) (withdrawn, attrs, nlri []byte, err error) {
	if len(body) < 4 {
		return nil, nil, nil, errors.New("UPDATE too short")
	}
	wl := int(binary.BigEndian.Uint16(body))
	if 2+wl+2 > len(body) {
		return nil, nil, nil, errors.New("UPDATE withdrawn length out of bounds")
	}
	withdrawn = body[2 : 2+wl]
	rest := body[2+wl:]
	al := int(binary.BigEndian.Uint16(rest))
	if 2+al > len(rest) {
		return nil, nil, nil, errors.New("UPDATE attribute length out of bounds")
	}
	return withdrawn, rest[2 : 2+al], rest[2+al:], nil
}

// Prefixes calls fn for each IPv4 prefix of an NLRI or withdrawn-routes
// field, as a key: the address in the high 32 bits, the length below.
func Prefixes(b []byte, fn func(key uint64)) error {
	for len(b) > 0 {
		l := int(b[0])
		n := (l + 7) / 8
		if l > 32 || 1+n > len(b) {
			return errors.New("bad IPv4 prefix in UPDATE")
		}
		var a [4]byte
		copy(a[:], b[1:1+n])
		fn(uint64(binary.BigEndian.Uint32(a[:]))<<8 | uint64(l))
		b = b[1+n:]
	}
	return nil
}

// Key is the key Prefixes gives p (IPv4).
func Key(p netip.Prefix) uint64 {
	a := p.Masked().Addr().As4()
	return uint64(binary.BigEndian.Uint32(a[:]))<<8 | uint64(p.Bits())
}

// AppendPrefix appends p to an NLRI field.
func AppendPrefix(b []byte, p netip.Prefix) []byte {
	a := p.Masked().Addr().As4()
	return append(append(b, byte(p.Bits())), a[:(p.Bits()+7)/8]...)
}

// IBGPUpdate is an UPDATE announcing prefixes from an iBGP speaker: ORIGIN
// IGP, an empty AS_PATH, NEXT_HOP nh and LOCAL_PREF 100.
func IBGPUpdate(nh netip.Addr, prefixes []netip.Prefix) []byte {
	v := nh.As4()
	attrs := []byte{
		0x40, 1, 1, 0, // ORIGIN IGP
		0x40, 2, 0, // AS_PATH (empty)
		0x40, 3, 4, v[0], v[1], v[2], v[3], // NEXT_HOP
		0x40, 5, 4, 0, 0, 0, 100, // LOCAL_PREF 100
	}
	body := []byte{0, 0, byte(len(attrs) >> 8), byte(len(attrs))}
	body = append(body, attrs...)
	for _, p := range prefixes {
		body = AppendPrefix(body, p)
	}
	return Msg(TypeUpdate, body)
}
