package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	api "github.com/osrg/gobgp/v3/api"
)

// A session listing from GoBGP (ListPeer) converts every session's
// configuration and capabilities to protobuf inside GoBGP's server loop,
// which meanwhile handles nothing else. A route reflector's agent asked
// for one every status interval: at 1,000 clients that was ~60 % of its
// CPU once idle, with the garbage collection it caused about 90 %
// (docs/design/0018-reflectors-at-scale.md). With at least
// peersSnapshotMin sessions, Peers hands out the last listing again while
// nothing that shows in it happened since — no session event, no UPDATE
// or End-of-RIB received (the watch), no change through this Speaker —
// and it is younger than peersSnapshotMaxAge: what changes without any of
// those (a graceful-restart timer dropping a peer's stale routes) shows
// that much later.
const (
	peersSnapshotMin    = 100
	peersSnapshotMaxAge = 30 * time.Second
)

// peersSnapshot is a listing and what it was made under.
type peersSnapshot struct {
	changes uint64
	at      time.Time
	out     []PeerStatus
	counted []int // indexes of out whose advertised prefixes were counted
}

// changed records that GoBGP's session listing may differ now.
func (s *GoBGP) changed() { s.changes.Add(1) }

// Peers implements Speaker. Advertised counts come from GoBGP's
// ListPeer with EnableAdvertised, which evaluates the export policy for
// every route of the table: for all sessions at once when all are asked
// for, else one session at a time.
func (s *GoBGP) Peers(ctx context.Context, countAdvertised func(netip.Addr) bool) ([]PeerStatus, error) {
	if _, err := s.server(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	watched := s.watching
	s.mu.Unlock()
	changes := s.changes.Load()
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	if sn := s.snap; watched && sn.changes == changes && len(sn.out) >= peersSnapshotMin && time.Since(sn.at) < peersSnapshotMaxAge &&
		slices.Equal(sn.counted, countedOf(sn.out, countAdvertised)) {
		out := slices.Clone(sn.out)
		for k := range out {
			s.refresh(&out[k])
		}
		return out, nil
	}
	at := time.Now()
	out, counted, err := s.listPeers(ctx, countAdvertised)
	if err != nil {
		return nil, err
	}
	s.snap = peersSnapshot{changes: changes, at: at, out: slices.Clone(out), counted: counted}
	return out, nil
}

// countedOf lists the indexes of the established sessions of out that
// countAdvertised picks.
func countedOf(out []PeerStatus, countAdvertised func(netip.Addr) bool) []int {
	var counted []int
	for k, st := range out {
		if countAdvertised != nil && st.State == StateEstablished && countAdvertised(st.Address) {
			counted = append(counted, k)
		}
	}
	return counted
}

// refresh sets what a listing takes from the speaker's own state, which
// is kept without GoBGP: the last error and since when the state holds.
func (s *GoBGP) refresh(st *PeerStatus) {
	st.LastError = s.glog.lastErrorOf(st.Address)
	st.Since = time.Time{}
	s.mu.Lock()
	if ps, ok := s.states[st.Address]; ok && ps.state == st.State {
		st.Since = ps.since
	}
	s.mu.Unlock()
}

// listPeers asks GoBGP for every session, and for the advertised
// prefixes of those countAdvertised picks.
func (s *GoBGP) listPeers(ctx context.Context, countAdvertised func(netip.Addr) bool) ([]PeerStatus, []int, error) {
	srv, err := s.server()
	if err != nil {
		return nil, nil, err
	}
	var out []PeerStatus
	err = srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		out = append(out, s.peerStatus(p))
	})
	if err != nil {
		return nil, nil, fmt.Errorf("listing peers: %w", err)
	}
	counted := countedOf(out, countAdvertised)
	if len(counted) == 0 {
		return out, nil, nil
	}
	if len(counted) == len(out) {
		i := map[netip.Addr]int{}
		for k := range out {
			i[out[k].Address] = k
		}
		err = srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
			if k, ok := i[s.peerStatus(p).Address]; ok {
				out[k].Advertised = advertisedOf(p)
			}
		})
	} else {
		for _, k := range counted {
			err = errors.Join(err, srv.ListPeer(ctx, &api.ListPeerRequest{Address: out[k].Address.String(), EnableAdvertised: true}, func(p *api.Peer) {
				out[k].Advertised = advertisedOf(p)
			}))
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("counting advertised prefixes: %w", err)
	}
	return out, counted, nil
}
