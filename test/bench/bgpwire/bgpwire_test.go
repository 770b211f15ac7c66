package bgpwire

import (
	"bytes"
	"net/netip"
	"testing"
)

func TestUpdateRoundTrip(t *testing.T) {
	ps := []netip.Prefix{netip.MustParsePrefix("10.0.1.64/26"), netip.MustParsePrefix("10.0.2.7/32"), netip.MustParsePrefix("0.0.0.0/0")}
	m := IBGPUpdate(netip.MustParseAddr("172.20.0.9"), ps)
	typ, body, err := ReadMsg(bytes.NewReader(m))
	if err != nil || typ != TypeUpdate {
		t.Fatalf("ReadMsg: %v %d", err, typ)
	}
	w, attrs, nlri, err := Update(body)
	if err != nil || len(w) != 0 || len(attrs) != 21 {
		t.Fatalf("Update: %v withdrawn=%d attrs=%d", err, len(w), len(attrs))
	}
	var got []uint64
	if err := Prefixes(nlri, func(k uint64) { got = append(got, k) }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("got %d prefixes", len(got))
	}
	for i, p := range ps {
		if got[i] != Key(p) {
			t.Errorf("prefix %d: key %x, want %x", i, got[i], Key(p))
		}
	}
}

func TestHostileInput(t *testing.T) {
	for name, body := range map[string][]byte{
		"short":              {0, 0},
		"withdrawn overruns": {0, 9, 0, 0},
		"attrs overrun":      {0, 0, 0, 9, 1},
	} {
		if _, _, _, err := Update(body); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	for name, nlri := range map[string][]byte{
		"length 33": {33, 1, 2, 3, 4, 5},
		"truncated": {24, 10, 0},
	} {
		if err := Prefixes(nlri, func(uint64) {}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, _, err := ReadMsg(bytes.NewReader(Msg(TypeKeepalive, nil)[:18])); err == nil {
		t.Error("truncated header: no error")
	}
	short := Msg(TypeKeepalive, nil)
	short[17] = 5
	if _, _, err := ReadMsg(bytes.NewReader(short)); err != ErrLength {
		t.Errorf("length 5: %v", err)
	}
}

func TestOpenAS4(t *testing.T) {
	m := Open(4200000001, netip.MustParseAddr("1.2.3.4"), 90)
	_, body, err := ReadMsg(bytes.NewReader(m))
	if err != nil {
		t.Fatal(err)
	}
	if as := PeerAS(body); as != 4200000001 {
		t.Fatalf("PeerAS %d", as)
	}
	if body[3] != 0 || body[4] != 90 {
		t.Fatalf("hold %v", body[3:5])
	}
}
