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

	"github.com/osrg/gobgp/v3/internal/pkg/table"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
)

// ImportCheck decides whether a path a peer sent may enter the global RIB,
// on top of the import policy: a path it refuses is kept in the peer's
// Adj-RIB-In but is neither selected nor passed on (by route reflection),
// as if the import policy had rejected it. It runs on the server's
// goroutine for every announced path and must not block. originatorID is
// nil when the path has no ORIGINATOR_ID.
type ImportCheck func(peer net.IP, nlri bgp.AddrPrefixInterface, nexthop, originatorID net.IP) bool

// importAccepts applies check to a received path; locally originated paths
// and withdrawals always pass.
func importAccepts(check ImportCheck, path *table.Path) bool {
	if check == nil || path == nil || path.IsWithdraw || path.IsLocal() {
		return true
	}
	src := path.GetSource()
	if src == nil {
		return true
	}
	return check(src.Address, path.GetNlri(), path.GetNexthop(), path.GetOriginatorID())
}

// SetImportCheck installs check (nil: none) and judges again the paths
// already received: every path of every peer when all is set, else only
// the paths for the given NLRIs. Each path whose verdict changed is
// imported again, as a soft reset in would: one now refused leaves the
// global RIB (and is withdrawn from the peers it was passed on to), one
// now accepted enters it. Paths whose verdict did not change are not
// touched, so a call with a short list costs a few lookups per peer.
func (s *BgpServer) SetImportCheck(ctx context.Context, check ImportCheck, recheck []bgp.AddrPrefixInterface, all bool) error {
	return s.mgmtOperation(func() error {
		old := s.importCheck
		s.importCheck = check
		for _, peer := range s.neighborMap {
			if peer.isRouteServerClient() {
				continue
			}
			var changed []*table.Path
			consider := func(p *table.Path) {
				if importAccepts(old, p) != importAccepts(check, p) {
					changed = append(changed, p)
				}
			}
			if all {
				for _, p := range peer.adjRibIn.PathList(familiesForSoftreset(peer, 0), true) {
					consider(p)
				}
			} else {
				for _, n := range recheck {
					for _, p := range peer.adjRibIn.PathsFor(n) {
						consider(p)
					}
				}
			}
			if len(changed) > 0 {
				s.propagateUpdate(peer, changed)
			}
		}
		return nil
	}, false)
}
