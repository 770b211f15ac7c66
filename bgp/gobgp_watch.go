package bgp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
)

// Watch implements Speaker.
//
// The receive path is the one place where GoBGP's API costs real time: a
// table of 100,000 routes is 100,000 paths converted to protobuf Any values
// by GoBGP and back by us. Rhizome therefore watches GoBGP's pre-policy
// Adj-RIB-In (one event per UPDATE message, ~800 paths) instead of the
// best-path stream (one event per path), applies its own import policy and
// path selection (bgp/rib), and decodes the few Any types it needs by hand
// (protowire), sharing one decoded attribute set between the paths of an
// UPDATE. Session, End-of-RIB and update events come through one GoBGP
// watcher, so they arrive in the order GoBGP produced them.
// docs/design/0004-bgp.md has the measurements behind this choice.
func (s *GoBGP) Watch(ctx context.Context, h Handler) error {
	srv, err := s.server()
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.watching {
		s.mu.Unlock()
		return errors.New("watching bgp speaker: already watched")
	}
	s.watching = true
	s.mu.Unlock()

	w := &watcher{h: h, s: s, prev: make(map[netip.Addr]SessionState), q: make(chan item, watchQueue), ctx: ctx}
	go w.deliver()
	req := &api.WatchEventRequest{
		Peer: &api.WatchEventRequest_Peer{},
		Table: &api.WatchEventRequest_Table{Filters: []*api.WatchEventRequest_Table_Filter{
			{Type: api.WatchEventRequest_Table_Filter_ADJIN, Init: true},
			{Type: api.WatchEventRequest_Table_Filter_EOR, Init: true},
		}},
	}
	if err := srv.WatchEvent(ctx, req, w.event); err != nil {
		s.mu.Lock()
		s.watching = false
		s.mu.Unlock()
		return fmt.Errorf("watching bgp speaker: %w", err)
	}
	return nil
}

// watchQueue is how many decoded events may wait for the handler. GoBGP
// converts every path to protobuf on its watch goroutine; handing the
// decoded events to a goroutine of our own lets the handler (the RIB) work
// on one UPDATE while GoBGP converts the next, on the other core.
const watchQueue = 64

type watcher struct {
	h    Handler
	s    *GoBGP
	d    decoder
	prev map[netip.Addr]SessionState
	q    chan item
	ctx  context.Context
}

// item is one event for the handler.
type item struct {
	update *Update
	eorOf  netip.Addr
	eorFam Family
	peer   *PeerEvent
}

func (w *watcher) put(it item) {
	select {
	case w.q <- it:
	case <-w.ctx.Done():
	}
}

// deliver calls the handler, in order, until the watch ends.
func (w *watcher) deliver() {
	for {
		select {
		case <-w.ctx.Done():
			return
		case it := <-w.q:
			switch {
			case it.update != nil:
				w.h.HandleUpdate(it.update)
			case it.peer != nil:
				w.h.HandlePeerState(*it.peer)
			default:
				w.h.HandleEndOfRIB(it.eorOf, it.eorFam)
			}
		}
	}
}

func (w *watcher) event(r *api.WatchEventResponse) {
	if pe := r.GetPeer(); pe != nil {
		w.peerEvent(pe)
		return
	}
	t := r.GetTable()
	if t == nil || len(t.Paths) == 0 {
		return
	}
	var u *Update
	flush := func() {
		if u != nil && (len(u.Announced) > 0 || len(u.Withdrawn) > 0) {
			w.put(item{update: u})
		}
		u = nil
	}
	// The paths of an event come from one peer: parse its address once.
	var lastIP string
	var peer netip.Addr
	for i, p := range t.Paths {
		if p.NeighborIp != lastIP || !peer.IsValid() {
			a, err := netip.ParseAddr(p.NeighborIp)
			if err != nil {
				continue // a locally originated path has no neighbour
			}
			lastIP, peer = p.NeighborIp, a
		}
		if p.Nlri == nil {
			// End-of-RIB (from the EOR filter) carries only the family.
			flush()
			f := IPv4
			if p.GetFamily().GetAfi() == api.Family_AFI_IP6 {
				f = IPv6
			}
			w.put(item{eorOf: peer, eorFam: f})
			continue
		}
		if u != nil && u.Peer != peer {
			flush()
		}
		if u == nil {
			u = &Update{Peer: peer}
		}
		if p.IsWithdraw {
			pfx, err := decodeNLRI(p.Nlri)
			if err != nil {
				w.s.log.Warn("skipped undecodable withdrawal", "op", "watch", "peer", peer, "error", err)
				continue
			}
			u.Withdrawn = append(u.Withdrawn, pfx)
			continue
		}
		rp, err := w.d.path(p)
		if err != nil {
			w.s.log.Warn("skipped undecodable path", "op", "watch", "peer", peer, "error", err)
			continue
		}
		if u.Announced == nil {
			// Sized for the rest of the event at once: an event is usually
			// one UPDATE's paths, all announced or all withdrawn.
			u.Announced = make([]ReceivedPath, 0, len(t.Paths)-i)
		}
		u.Announced = append(u.Announced, rp)
	}
	flush()
}

func (w *watcher) peerEvent(pe *api.WatchEventResponse_PeerEvent) {
	if pe.Type != api.WatchEventResponse_PeerEvent_STATE || pe.Peer.GetState() == nil {
		return
	}
	addr, err := netip.ParseAddr(pe.Peer.State.NeighborAddress)
	if err != nil {
		return
	}
	st := SessionState(pe.Peer.State.SessionState)
	prev := w.prev[addr]
	w.prev[addr] = st
	e := PeerEvent{Peer: addr, State: st, Previous: prev, Time: time.Now()}
	if prev == StateEstablished && st != StateEstablished {
		e.Reason = w.s.glog.lastErrorOf(addr)
	}
	w.put(item{peer: &e})
}

// decoder turns GoBGP API paths into ReceivedPaths. It remembers the last
// attribute set it decoded: consecutive paths from one UPDATE carry equal
// attribute bytes and then share one *Attrs.
type decoder struct {
	lastType  []string
	lastRaw   [][]byte
	lastAttrs *Attrs
	lastNH    netip.Addr
}

const (
	typePrefix        = "type.googleapis.com/apipb.IPAddressPrefix"
	typeOrigin        = "type.googleapis.com/apipb.OriginAttribute"
	typeASPath        = "type.googleapis.com/apipb.AsPathAttribute"
	typeNextHop       = "type.googleapis.com/apipb.NextHopAttribute"
	typeMED           = "type.googleapis.com/apipb.MultiExitDiscAttribute"
	typeLocalPref     = "type.googleapis.com/apipb.LocalPrefAttribute"
	typeCommunities   = "type.googleapis.com/apipb.CommunitiesAttribute"
	typeLarge         = "type.googleapis.com/apipb.LargeCommunitiesAttribute"
	typeOriginatorID  = "type.googleapis.com/apipb.OriginatorIdAttribute"
	typeClusterList   = "type.googleapis.com/apipb.ClusterListAttribute"
	typeMPReach       = "type.googleapis.com/apipb.MpReachNLRIAttribute"
	asSegmentSet      = 1
	asSegmentSequence = 2
)

func (d *decoder) path(p *api.Path) (ReceivedPath, error) {
	pfx, err := decodeNLRI(p.Nlri)
	if err != nil {
		return ReceivedPath{}, err
	}
	// The MP_REACH attribute embeds the NLRI, so it differs between paths
	// of one UPDATE: take its next hop every time, leave it out of the
	// comparison.
	var mpNH netip.Addr
	same := d.lastAttrs != nil
	n := 0
	for _, a := range p.Pattrs {
		if a.TypeUrl == typeMPReach {
			if mpNH, err = decodeMPReachNextHop(a.Value); err != nil {
				return ReceivedPath{}, fmt.Errorf("%s: %w", pfx, err)
			}
			continue
		}
		if same && (n >= len(d.lastRaw) || d.lastType[n] != a.TypeUrl || !bytes.Equal(d.lastRaw[n], a.Value)) {
			same = false
		}
		n++
	}
	if !same || n != len(d.lastRaw) {
		attrs, nh, err := decodeAttrs(p.Pattrs)
		if err != nil {
			return ReceivedPath{}, fmt.Errorf("%s: %w", pfx, err)
		}
		d.lastAttrs, d.lastNH = attrs, nh
		d.lastType, d.lastRaw = d.lastType[:0], d.lastRaw[:0]
		for _, a := range p.Pattrs {
			if a.TypeUrl != typeMPReach {
				d.lastType, d.lastRaw = append(d.lastType, a.TypeUrl), append(d.lastRaw, a.Value)
			}
		}
	}
	nh := d.lastNH
	if mpNH.IsValid() {
		nh = mpNH
	}
	return ReceivedPath{Prefix: pfx, NextHop: nh, Attrs: d.lastAttrs}, nil
}

func decodeNLRI(a *anypb.Any) (netip.Prefix, error) {
	if a == nil || a.TypeUrl != typePrefix {
		return netip.Prefix{}, fmt.Errorf("unsupported NLRI type %q", a.GetTypeUrl())
	}
	var (
		bits int
		addr netip.Addr
		err  error
	)
	b := a.Value
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return netip.Prefix{}, protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return netip.Prefix{}, protowire.ParseError(n)
			}
			bits, b = int(v), b[n:]
		case num == 2 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return netip.Prefix{}, protowire.ParseError(n)
			}
			if addr, err = netip.ParseAddr(string(v)); err != nil {
				return netip.Prefix{}, err
			}
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return netip.Prefix{}, protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	p, err := addr.Prefix(bits)
	if err != nil {
		return netip.Prefix{}, err
	}
	return p, nil
}

// fields calls fn for every field of a protobuf message.
func fields(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var (
			v []byte
			x uint64
		)
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

// uint32s decodes a repeated uint32 field, packed or not.
func uint32s(typ protowire.Type, v []byte, x uint64, dst []uint32) ([]uint32, error) {
	if typ == protowire.VarintType {
		return append(dst, uint32(x)), nil
	}
	for len(v) > 0 {
		y, n := protowire.ConsumeVarint(v)
		if n < 0 {
			return dst, protowire.ParseError(n)
		}
		dst, v = append(dst, uint32(y)), v[n:]
	}
	return dst, nil
}

func decodeMPReachNextHop(b []byte) (netip.Addr, error) {
	var nh netip.Addr
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if num == 2 && typ == protowire.BytesType && !nh.IsValid() {
			a, err := netip.ParseAddr(string(v))
			if err != nil {
				return fmt.Errorf("MP_REACH next hop: %w", err)
			}
			nh = a
		}
		return nil
	})
	return nh, err
}

func decodeAttrs(pattrs []*anypb.Any) (*Attrs, netip.Addr, error) {
	a := &Attrs{}
	var nh netip.Addr
	for _, x := range pattrs {
		var err error
		switch x.TypeUrl {
		case typeOrigin:
			err = fields(x.Value, func(num protowire.Number, _ protowire.Type, _ []byte, v uint64) error {
				if num == 1 {
					a.Origin = uint8(v)
				}
				return nil
			})
		case typeNextHop:
			err = fields(x.Value, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				if num == 1 && typ == protowire.BytesType {
					var e error
					if nh, e = netip.ParseAddr(string(v)); e != nil {
						return fmt.Errorf("next hop: %w", e)
					}
				}
				return nil
			})
		case typeMED:
			err = fields(x.Value, func(num protowire.Number, _ protowire.Type, _ []byte, v uint64) error {
				if num == 1 {
					a.MED = uint32(v)
				}
				return nil
			})
			a.HasMED = true
		case typeLocalPref:
			err = fields(x.Value, func(num protowire.Number, _ protowire.Type, _ []byte, v uint64) error {
				if num == 1 {
					a.LocalPref = uint32(v)
				}
				return nil
			})
			a.HasLocalPref = true
		case typeCommunities:
			err = fields(x.Value, func(num protowire.Number, typ protowire.Type, v []byte, y uint64) error {
				if num != 1 {
					return nil
				}
				var e error
				a.Communities, e = uint32s(typ, v, y, a.Communities)
				return e
			})
		case typeLarge:
			err = fields(x.Value, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				if num != 1 || typ != protowire.BytesType {
					return nil
				}
				var c LargeCommunity
				e := fields(v, func(num protowire.Number, _ protowire.Type, _ []byte, y uint64) error {
					switch num {
					case 1:
						c.Global = uint32(y)
					case 2:
						c.Local1 = uint32(y)
					case 3:
						c.Local2 = uint32(y)
					}
					return nil
				})
				a.LargeCommunities = append(a.LargeCommunities, c)
				return e
			})
		case typeASPath:
			err = fields(x.Value, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				if num != 1 || typ != protowire.BytesType {
					return nil
				}
				var (
					segType uint64
					numbers []uint32
				)
				e := fields(v, func(num protowire.Number, typ protowire.Type, w []byte, y uint64) error {
					var e error
					switch num {
					case 1:
						segType = y
					case 2:
						numbers, e = uint32s(typ, w, y, numbers)
					}
					return e
				})
				a.ASPath = append(a.ASPath, numbers...)
				switch segType {
				case asSegmentSequence:
					a.ASPathLen += len(numbers)
				case asSegmentSet:
					a.ASPathLen++
				}
				return e
			})
		case typeOriginatorID:
			err = fields(x.Value, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				if num == 1 && typ == protowire.BytesType {
					a.OriginatorID, _ = netip.ParseAddr(string(v))
				}
				return nil
			})
		case typeClusterList:
			err = fields(x.Value, func(num protowire.Number, typ protowire.Type, _ []byte, _ uint64) error {
				if num == 1 && typ == protowire.BytesType {
					a.ClusterListLen++
				}
				return nil
			})
		}
		if err != nil {
			return nil, nh, fmt.Errorf("decoding %s: %w", strings.TrimPrefix(x.TypeUrl, "type.googleapis.com/apipb."), err)
		}
	}
	return a, nh, nil
}
