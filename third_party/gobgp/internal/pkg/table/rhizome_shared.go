// rhizome: a route reflector's clients share what it sends them.
//
// Upstream's UpdatePathAttrs makes a new copy of a path for every peer it
// is sent to (new ORIGINATOR_ID and CLUSTER_LIST attributes, parsed from
// strings), and each peer's writer builds and serialises its own UPDATE
// from that copy. Towards the route-reflector clients of one cluster the
// result does not depend on the client: split horizon only decides who
// gets it, and the next hop is left alone. A reflector of N clients made
// N copies and N serialisations of every path (N^2 in a convergence: see
// docs/design/0018-reflectors-at-scale.md). Here the first client's copy
// is kept on the path and handed to the others (the export policy still
// runs per peer, and clones before it changes anything), and the UPDATE
// that carries that copy alone is serialised once (WireUpdate).

package table

import (
	"github.com/osrg/gobgp/v3/pkg/config/oc"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
)

// reflectedPath is a path as UpdatePathAttrs makes it for the clients of
// one cluster.
type reflectedPath struct {
	key  reflectedPathKey
	path *Path
}

// reflectedPathKey is everything UpdatePathAttrs reads for a
// route-reflector client, besides the path itself.
type reflectedPathKey struct {
	clusterID      string
	routerID       string
	nexthopInvalid bool
}

// reflectedKey tells whether UpdatePathAttrs's result for peer can be
// shared with other peers, and under which key: only for route-reflector
// clients (internal peers) and paths whose next hop is not the session's
// local address (a local path without next hop gets the session's).
func reflectedKey(global *oc.Global, peer *oc.Neighbor, path *Path) (reflectedPathKey, bool) {
	if peer.State.PeerType != oc.PEER_TYPE_INTERNAL || !peer.RouteReflector.Config.RouteReflectorClient ||
		path.GetRouteFamily() == bgp.RF_RTC_UC || (path.IsLocal() && path.GetNexthop().IsUnspecified()) {
		return reflectedPathKey{}, false
	}
	return reflectedPathKey{
		clusterID:      string(peer.RouteReflector.State.RouteReflectorClusterId),
		routerID:       global.Config.RouterId,
		nexthopInvalid: path.IsNexthopInvalid,
	}, true
}

// WireUpdate returns the serialised UPDATE that announces path alone to
// a session without ADD-PATH or 2-byte-AS translation (options nil), and
// false where it cannot be shared that way: withdrawals, End-of-RIB, and
// families other than IPv4 unicast with an IPv4 next hop. The bytes are
// made once per path and shared: callers must not change them.
func (path *Path) WireUpdate() ([]byte, bool) {
	if path.IsWithdraw || path.IsEOR() || path.GetRouteFamily() != bgp.RF_IPv4_UC || path.GetNexthop().To4() == nil {
		return nil, false
	}
	if b := path.wire.Load(); b != nil {
		return *b, true
	}
	msgs := CreateUpdateMsgFromPaths([]*Path{path})
	if len(msgs) != 1 {
		return nil, false
	}
	b, err := msgs[0].Serialize()
	if err != nil {
		return nil, false
	}
	path.wire.Store(&b)
	return b, true
}
