package rib

import (
	"net/netip"

	"github.com/rhizome-net/rhizome/bgp/policy"
)

// maxScoped is how many changed prefixes a re-judgement looks for one by
// one; beyond it (an agent's start, a pool re-created) every path is
// judged again, which costs about the same.
const maxScoped = 64

// scope is which paths a new policy may judge otherwise than the one
// before it. A policy that differs only in its Owners (an IPAM change: a
// block claimed, released or moved, an address borrowed) can change the
// verdict, or only the reason, of a path whose prefix overlaps a prefix
// whose originator changed (Owners.Changed), and of no other: a verdict
// depends on the owners only through the block the prefix is, lies in or
// covers, and, for a host route, the node holding that address. So such a
// change re-judges those paths alone, exactly as a full re-judgement
// would, and at the cost of a lookup per held prefix rather than a policy
// evaluation per path.
type scope struct {
	all     bool
	changed []netip.Prefix
}

func scopeOf(old, cur *policy.Import) scope {
	if old == nil || cur == nil || !old.SameBesidesOwners(cur) {
		return scope{all: true}
	}
	ch := old.Input().Owners.Changed(cur.Input().Owners)
	if len(ch) > maxScoped {
		return scope{all: true}
	}
	return scope{changed: ch}
}

func (s scope) empty() bool { return !s.all && len(s.changed) == 0 }

func (s scope) covers(p netip.Prefix) bool {
	if s.all {
		return true
	}
	for _, c := range s.changed {
		if c.Overlaps(p) {
			return true
		}
	}
	return false
}

// SetOwners gives the policy in force new Owners (Import.WithOwners) and
// judges again only the paths they can change (see scope); routes that
// change reach the sink at once. It returns the policy now in force, or
// nil if the RIB has none yet (then nothing is judged: the first Set
// judges everything).
//
// It is the receive path's side of an IPAM change: a route held because
// its block's IPAMBlock had not reached this node yet is installed as soon
// as the block arrives, without waiting for the agent to recompute the
// whole desired state (docs/design/0014). A later Set with the same
// owners judges nothing again.
func (r *RIB) SetOwners(o *policy.Owners) *policy.Import {
	r.mu.Lock()
	cur := r.settings.Policy
	if cur == nil || cur.Input().Owners == o {
		r.mu.Unlock()
		return cur
	}
	next := cur.WithOwners(o)
	sc := scopeOf(cur, next)
	r.settings.Policy = next
	if !sc.empty() {
		r.rejudgeLocked(sc)
	}
	r.flushLocked()
	return next
}

// rejudgeLocked judges again every path in scope under the policy in
// force, updating counters and marking dests whose result may change.
func (r *RIB) rejudgeLocked(sc scope) {
	evals := map[*peerTable]evalFunc{}
	for _, d := range r.dests {
		if !sc.covers(d.prefix) {
			continue
		}
		for i := range d.paths {
			r.rejudgePath(d, &d.paths[i], evals)
		}
	}
}

// rejudgePath judges one path again, evaluators cached per peer.
func (r *RIB) rejudgePath(d *dest, p *path, evals map[*peerTable]evalFunc) {
	eval := evals[p.peer]
	if eval == nil {
		eval = r.evaluator(p.peer)
		evals[p.peer] = eval
	}
	reason := eval(d.prefix, p.nh, p.attrs)
	if reason == p.reason {
		return
	}
	p.peer.count(p, -1)
	was := p.accepted()
	p.reason = reason
	p.peer.count(p, 1)
	if was || p.accepted() {
		r.markDirty(d)
	}
}
