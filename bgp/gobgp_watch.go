package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"github.com/osrg/gobgp/v3/pkg/server"
)

// Watch implements Speaker.
//
// The receive path is the one place where GoBGP's API costs real time: its
// watch converts every path to protobuf Any values, which for a table of
// 100,000 routes costs more CPU than the rest of receiving it. Rhizome
// therefore watches GoBGP's pre-policy Adj-RIB-In (one event per UPDATE
// message, ~800 paths) instead of the best-path stream (one event per
// path), applies its own import policy and path selection (bgp/rib), and
// takes those events in GoBGP's own packet types through the
// WatchEventWithAdjIn call that Rhizome's copy of GoBGP adds
// (third_party/gobgp), decoding each UPDATE's attributes once for all its
// paths. Session, End-of-RIB and update events come through one GoBGP
// watcher, so they arrive in the order GoBGP produced them. The handler
// runs on that watcher's goroutine: GoBGP buffers events behind it without
// blocking its server loop, and since decoding became cheap a queue and a
// goroutine of our own in between only added a hand-off (A/B, median 10k
// install without and with it: 0.056 vs 0.065 s and 0.064 vs 0.065 s in
// two invocations; equal at 100k).
// docs/design/0004-bgp.md and 0010-gobgp-fork.md have the measurements
// behind this choice.
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

	w := &watcher{h: h, s: s, prev: make(map[netip.Addr]SessionState), ctx: ctx}
	req := &api.WatchEventRequest{
		Peer: &api.WatchEventRequest_Peer{},
		Table: &api.WatchEventRequest_Table{Filters: []*api.WatchEventRequest_Table_Filter{
			{Type: api.WatchEventRequest_Table_Filter_ADJIN, Init: true},
			{Type: api.WatchEventRequest_Table_Filter_EOR, Init: true},
		}},
	}
	if err := srv.WatchEventWithAdjIn(ctx, req, w.event, w.adjIn); err != nil {
		s.mu.Lock()
		s.watching = false
		s.mu.Unlock()
		return fmt.Errorf("watching bgp speaker: %w", err)
	}
	return nil
}

type watcher struct {
	h    Handler
	s    *GoBGP
	d    decoder
	prev map[netip.Addr]SessionState
	ctx  context.Context
}

// live reports whether the watch still runs: GoBGP may hand over an event
// it had queued after the watch was cancelled.
func (w *watcher) live() bool { return w.ctx.Err() == nil }

// event takes the protobuf events: sessions and End-of-RIB (updates go to
// adjIn).
func (w *watcher) event(r *api.WatchEventResponse) {
	w.s.changed()
	if pe := r.GetPeer(); pe != nil {
		w.peerEvent(pe)
		return
	}
	for _, p := range r.GetTable().GetPaths() {
		if p.Nlri != nil {
			continue // not End-of-RIB; updates do not come this way
		}
		peer, err := netip.ParseAddr(p.NeighborIp)
		if err != nil {
			continue
		}
		f := IPv4
		if p.GetFamily().GetAfi() == api.Family_AFI_IP6 {
			f = IPv6
		}
		if w.live() {
			w.h.HandleEndOfRIB(peer, f)
		}
	}
}

// adjIn takes one UPDATE's paths as GoBGP decoded them.
func (w *watcher) adjIn(ev *server.AdjInUpdate) {
	w.s.changed()
	peer, ok := netip.AddrFromSlice(ev.PeerAddress)
	if !ok || len(ev.Paths) == 0 {
		return
	}
	u := &Update{Peer: peer.Unmap()}
	for i, p := range ev.Paths {
		pfx, err := nlriPrefix(p.NLRI)
		if err != nil {
			w.s.log.Warn("skipped a path", "op", "watch", "peer", u.Peer, "error", err)
			continue
		}
		if p.Withdraw {
			u.Withdrawn = append(u.Withdrawn, pfx)
			continue
		}
		rp, err := w.d.path(pfx, p.Attrs)
		if err != nil {
			w.s.log.Warn("skipped a path", "op", "watch", "peer", u.Peer, "error", err)
			continue
		}
		if u.Announced == nil {
			// Sized for the rest of the event at once: an event is one
			// UPDATE's paths, usually all announced or all withdrawn.
			u.Announced = make([]ReceivedPath, 0, len(ev.Paths)-i)
		}
		u.Announced = append(u.Announced, rp)
	}
	if (len(u.Announced) > 0 || len(u.Withdrawn) > 0) && w.live() {
		w.h.HandleUpdate(u)
	}
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
		// Ours, not the peer's NOTIFICATION about its own limit.
		if strings.Contains(e.Reason, prefixLimitExceeded) && !strings.HasPrefix(e.Reason, "notification received") {
			e.PrefixLimit = true
			e.Reason = w.s.prefixLimitHit(addr)
		}
	}
	if w.live() {
		w.h.HandlePeerState(e)
	}
}

// decoder turns GoBGP's decoded paths into ReceivedPaths. It remembers the
// attribute values it decoded last: the paths of one UPDATE share them
// (the same pointers) and then share one *Attrs.
type decoder struct {
	last      []bgp.PathAttributeInterface
	lastAttrs *Attrs
	lastNH    netip.Addr
}

// path decodes one announced path. The MP_REACH_NLRI attribute holds the
// path's own NLRI, so it differs between the paths of one UPDATE: its next
// hop is read every time and it is left out of the comparison.
func (d *decoder) path(pfx netip.Prefix, attrs []bgp.PathAttributeInterface) (ReceivedPath, error) {
	var mpNH netip.Addr
	same := d.lastAttrs != nil
	n := 0
	for _, a := range attrs {
		if r, ok := a.(*bgp.PathAttributeMpReachNLRI); ok {
			nh, ok := netip.AddrFromSlice(r.Nexthop)
			if !ok {
				return ReceivedPath{}, fmt.Errorf("%s: MP_REACH_NLRI next hop %v", pfx, r.Nexthop)
			}
			mpNH = nh.Unmap()
			continue
		}
		// Every GoBGP attribute type is a pointer, so this compares
		// identities.
		if same && (n >= len(d.last) || d.last[n] != a) {
			same = false
		}
		n++
	}
	if !same || n != len(d.last) {
		a, nh, err := decodeAttrs(attrs)
		if err != nil {
			return ReceivedPath{}, fmt.Errorf("%s: %w", pfx, err)
		}
		d.lastAttrs, d.lastNH = a, nh
		d.last = d.last[:0]
		for _, x := range attrs {
			if _, ok := x.(*bgp.PathAttributeMpReachNLRI); !ok {
				d.last = append(d.last, x)
			}
		}
	}
	nh := d.lastNH
	if mpNH.IsValid() {
		nh = mpNH
	}
	if !nh.IsValid() {
		return ReceivedPath{}, fmt.Errorf("%s: no next hop", pfx)
	}
	return ReceivedPath{Prefix: pfx, NextHop: nh, Attrs: d.lastAttrs}, nil
}

// nativePath decodes a path from GoBGP's API (listings, which are rare)
// through GoBGP's own conversion to its packet types, then as the watch
// does.
func nativePath(d *decoder, p *api.Path) (ReceivedPath, error) {
	nlri, err := apiutil.GetNativeNlri(p)
	if err != nil {
		return ReceivedPath{}, fmt.Errorf("decoding NLRI: %w", err)
	}
	pfx, err := nlriPrefix(nlri)
	if err != nil {
		return ReceivedPath{}, err
	}
	attrs, err := apiutil.GetNativePathAttributes(p)
	if err != nil {
		return ReceivedPath{}, fmt.Errorf("%s: decoding attributes: %w", pfx, err)
	}
	return d.path(pfx, attrs)
}

// nlriPrefix is the IP prefix of a unicast NLRI.
func nlriPrefix(n bgp.AddrPrefixInterface) (netip.Prefix, error) {
	var d *bgp.IPAddrPrefixDefault
	switch p := n.(type) {
	case *bgp.IPAddrPrefix:
		d = &p.IPAddrPrefixDefault
	case *bgp.IPv6AddrPrefix:
		d = &p.IPAddrPrefixDefault
	default:
		return netip.Prefix{}, fmt.Errorf("unsupported NLRI %T", n)
	}
	a, ok := netip.AddrFromSlice(d.Prefix)
	if !ok {
		return netip.Prefix{}, fmt.Errorf("NLRI address %v", d.Prefix)
	}
	if _, v4 := n.(*bgp.IPAddrPrefix); v4 {
		a = a.Unmap()
	}
	p, err := a.Prefix(int(d.Length))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("NLRI %v/%d: %w", d.Prefix, d.Length, err)
	}
	return p, nil
}

// decodeAttrs reads the attributes Rhizome's RIB uses, and the NEXT_HOP.
func decodeAttrs(attrs []bgp.PathAttributeInterface) (*Attrs, netip.Addr, error) {
	a := &Attrs{}
	var nh netip.Addr
	for _, x := range attrs {
		switch v := x.(type) {
		case *bgp.PathAttributeOrigin:
			a.Origin = v.Value
		case *bgp.PathAttributeNextHop:
			ip, ok := netip.AddrFromSlice(v.Value)
			if !ok {
				return nil, nh, fmt.Errorf("next hop %v", v.Value)
			}
			nh = ip.Unmap()
		case *bgp.PathAttributeMultiExitDisc:
			a.MED, a.HasMED = v.Value, true
		case *bgp.PathAttributeLocalPref:
			a.LocalPref, a.HasLocalPref = v.Value, true
		case *bgp.PathAttributeCommunities:
			a.Communities = append([]uint32(nil), v.Value...)
		case *bgp.PathAttributeLargeCommunities:
			for _, c := range v.Values {
				a.LargeCommunities = append(a.LargeCommunities, LargeCommunity{Global: c.ASN, Local1: c.LocalData1, Local2: c.LocalData2})
			}
		case *bgp.PathAttributeAsPath:
			for _, seg := range v.Value {
				as := seg.GetAS()
				a.ASPath = append(a.ASPath, as...)
				switch seg.GetType() {
				case bgp.BGP_ASPATH_ATTR_TYPE_SEQ:
					a.ASPathLen += len(as)
				case bgp.BGP_ASPATH_ATTR_TYPE_SET:
					a.ASPathLen++
				}
			}
		case *bgp.PathAttributeOriginatorId:
			if ip, ok := netip.AddrFromSlice(v.Value); ok {
				a.OriginatorID = ip.Unmap()
			}
		case *bgp.PathAttributeClusterList:
			a.ClusterListLen = len(v.Value)
		}
	}
	return a, nh, nil
}
