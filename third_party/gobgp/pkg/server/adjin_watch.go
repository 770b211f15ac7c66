// Copyright (C) 2026 The Rhizome Authors.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
//    http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or
// implied.
// See the License for the specific language governing permissions and
// limitations under the License.

package server

import (
	"context"
	"net"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
)

// AdjInPath is one path of an AdjInUpdate.
type AdjInPath struct {
	NLRI     bgp.AddrPrefixInterface
	Family   bgp.RouteFamily
	Withdraw bool
	// Attrs are the attributes as received, after GoBGP's handling of
	// malformed attributes (RFC 7606) and of AS4_PATH. The paths of one
	// UPDATE share the attribute values (for MP_REACH_NLRI families each
	// path has its own MP_REACH_NLRI attribute holding its NLRI). Read
	// them, never modify them: GoBGP's own tables hold the same values.
	Attrs []bgp.PathAttributeInterface
}

// AdjInUpdate is the part of one UPDATE message that entered a peer's
// Adj-RIB-In, before import policy: the paths GoBGP passes on to its
// global RIB (paths with an AS_PATH loop or, from an iBGP peer, this
// router's ORIGINATOR_ID are left out, as in the protobuf watch).
type AdjInUpdate struct {
	PeerAddress net.IP
	PeerAS      uint32
	LocalAS     uint32
	PeerID      net.IP
	Paths       []AdjInPath
}

// WatchEventWithAdjIn is WatchEvent, except that the pre-policy Adj-RIB-In
// events (table filter ADJIN) go to adjIn in GoBGP's packet types instead
// of to fn as protobuf paths. Converting every received path to protobuf
// Any values costs more CPU than the rest of receiving it; a program
// embedding GoBGP can skip that. Both functions are called from one
// goroutine, in the order GoBGP produced the events, so adjIn's updates
// stay ordered against fn's peer and End-of-RIB events.
func (s *BgpServer) WatchEventWithAdjIn(ctx context.Context, r *api.WatchEventRequest, fn func(*api.WatchEventResponse), adjIn func(*AdjInUpdate)) error {
	if adjIn == nil {
		return s.WatchEvent(ctx, r, fn)
	}
	return s.watchEvent(ctx, r, fn, adjIn)
}

func newAdjInUpdate(ev *watchEventUpdate) *AdjInUpdate {
	u := &AdjInUpdate{
		PeerAddress: ev.PeerAddress,
		PeerAS:      ev.PeerAS,
		LocalAS:     ev.LocalAS,
		PeerID:      ev.PeerID,
		Paths:       make([]AdjInPath, 0, len(ev.PathList)),
	}
	for _, p := range ev.PathList {
		ap := AdjInPath{
			NLRI:     p.GetNlri(),
			Family:   p.GetRouteFamily(),
			Withdraw: p.IsWithdraw,
		}
		if !p.IsWithdraw {
			ap.Attrs = p.ReceivedPathAttrs()
		}
		u.Paths = append(u.Paths, ap)
	}
	return u
}
