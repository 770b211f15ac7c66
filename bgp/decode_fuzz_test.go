package bgp

import (
	"encoding/binary"
	"testing"

	gobgp "github.com/osrg/gobgp/v3/pkg/packet/bgp"
)

// FuzzDecodeUpdate plays a peer sending arbitrary UPDATE bodies: GoBGP
// parses them as it does on a session (with 4-byte AS), then Rhizome's
// decoder turns every path into a ReceivedPath exactly as the watch does.
// Nothing a peer sends may panic the agent, and every path the decoder
// accepts has a valid prefix, a valid next hop and attributes.
// `make test-fuzz` runs it for a bounded time; seeds are in
// testdata/fuzz/FuzzDecodeUpdate.
func FuzzDecodeUpdate(f *testing.F) {
	for _, seed := range [][]byte{
		seedUpdate(f, "10.244.1.0/26", "10.0.0.1"),
		seedUpdate(f, "0.0.0.0/0", "10.0.0.2"),
		seedUpdate(f, "10.244.1.7/32", "0.0.0.0"),
		seedUpdateV6(f, "fd00:10:244::/122", "fd00::1"),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		opt := &gobgp.MarshallingOption{}
		msg := &gobgp.BGPUpdate{}
		if err := msg.DecodeFromBytes(body, opt); err != nil {
			return // GoBGP answers a NOTIFICATION; nothing reaches us
		}
		// GoBGP's session checks (RFC 7606): an UPDATE it refuses, or
		// treats as withdraw, never reaches the watch as announced.
		rfs := map[gobgp.RouteFamily]gobgp.BGPAddPathMode{gobgp.RF_IPv4_UC: gobgp.BGP_ADD_PATH_NONE, gobgp.RF_IPv6_UC: gobgp.BGP_ADD_PATH_NONE}
		if ok, err := gobgp.ValidateUpdateMsg(msg, rfs, false, false, false); !ok || err != nil {
			return
		}
		d := &decoder{}
		check := func(n gobgp.AddrPrefixInterface, attrs []gobgp.PathAttributeInterface) {
			pfx, err := nlriPrefix(n)
			if err != nil {
				return
			}
			if !pfx.IsValid() {
				t.Fatalf("nlriPrefix returned an invalid prefix for %v", n)
			}
			rp, err := d.path(pfx, attrs)
			if err != nil {
				return
			}
			if !rp.Prefix.IsValid() || !rp.NextHop.IsValid() || rp.Attrs == nil {
				t.Fatalf("accepted path %+v with an invalid field", rp)
			}
		}
		for _, n := range msg.NLRI {
			check(n, msg.PathAttributes)
		}
		for _, a := range msg.PathAttributes {
			if r, ok := a.(*gobgp.PathAttributeMpReachNLRI); ok {
				for _, n := range r.Value {
					check(n, msg.PathAttributes)
				}
			}
		}
	})
}

func seedUpdate(f *testing.F, prefix, nh string) []byte {
	f.Helper()
	n, err := gobgp.NewPrefixFromRouteFamily(gobgp.AFI_IP, gobgp.SAFI_UNICAST, prefix)
	if err != nil {
		f.Fatal(err)
	}
	u := gobgp.NewBGPUpdateMessage(nil, []gobgp.PathAttributeInterface{
		gobgp.NewPathAttributeOrigin(0),
		gobgp.NewPathAttributeAsPath([]gobgp.AsPathParamInterface{gobgp.NewAs4PathParam(gobgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint32{65001})}),
		gobgp.NewPathAttributeNextHop(nh),
		gobgp.NewPathAttributeOriginatorId("10.0.0.9"),
		gobgp.NewPathAttributeClusterList([]string{"224.0.0.1"}),
	}, []*gobgp.IPAddrPrefix{n.(*gobgp.IPAddrPrefix)})
	return body(f, u)
}

func seedUpdateV6(f *testing.F, prefix, nh string) []byte {
	f.Helper()
	n, err := gobgp.NewPrefixFromRouteFamily(gobgp.AFI_IP6, gobgp.SAFI_UNICAST, prefix)
	if err != nil {
		f.Fatal(err)
	}
	u := gobgp.NewBGPUpdateMessage(nil, []gobgp.PathAttributeInterface{
		gobgp.NewPathAttributeOrigin(0),
		gobgp.NewPathAttributeAsPath(nil),
		gobgp.NewPathAttributeMpReachNLRI(nh, []gobgp.AddrPrefixInterface{n}),
	}, nil)
	return body(f, u)
}

// body is an UPDATE message without its 19-byte header.
func body(f *testing.F, m *gobgp.BGPMessage) []byte {
	f.Helper()
	b, err := m.Serialize()
	if err != nil {
		f.Fatal(err)
	}
	if int(binary.BigEndian.Uint16(b[16:18])) != len(b) {
		f.Fatalf("bad length in serialized UPDATE")
	}
	return b[19:]
}
