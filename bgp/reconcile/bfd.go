package reconcile

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rhizome-net/rhizome/bfd"
	"github.com/rhizome-net/rhizome/bgp"
	"github.com/rhizome-net/rhizome/bgp/topology"
	"github.com/rhizome-net/rhizome/crds/v1alpha1"
)

// BFD beside BGP (docs/design/0017).
//
// Every started session whose configuration has BFD on gets a BFD session
// to the same peer from the same local address. What a BFD failure (Up to
// Down, not the peer's AdminDown) does depends on what BGP knows at that
// moment, following RFC 5882:
//
//   - the BGP session is Established: the path died before BGP noticed.
//     The session is re-created at once (delete + add, as for an expired
//     hold timer), so GoBGP, the RIB and the kernel drop the peer's routes
//     without waiting for the hold time, and graceful restart keeps
//     nothing (4.3.2.2: BFD timed out before any restart began, so a
//     topology change is signalled).
//   - the BGP session already went down by a closed connection and the
//     speaker holds the peer's routes for graceful restart: the peer is
//     restarting, and its BFD stopped with it. If the peer's BFD shares
//     fate with its control plane (C bit clear, as ours and BIRD's and
//     FRR's), the failure says nothing about forwarding and the restart
//     goes on (4.3.2); if the peer said its BFD is independent of its
//     control plane (C bit set), forwarding has failed too: the restart
//     is aborted and the routes dropped (4.3.1).
//   - the peer took BFD administratively down: no action (4.2).
//
// An agent that restarts closes its BGP connections (its peers begin
// graceful restart at once) and its BFD sessions go silent with it; its
// peers' BFD times out after the detection time, during the restart, and
// per the rule above they keep its routes. A frozen agent or a cut link
// closes nothing: its peers' BFD fails while BGP is still Established.

// bfdUnavailable is the BFD state of a session whose BFD could not start.
const bfdUnavailable = "Unavailable"

// applyBFD starts, reconfigures and removes BFD sessions to match the BGP
// sessions that are configured. Called with r.mu held.
func (r *Reconciler) applyBFD(started map[netip.Addr]topology.Session) []error {
	if r.cfg.BFD == nil {
		return nil
	}
	want := map[netip.Addr]bfd.Peer{}
	for a, s := range started {
		if s.BFD == nil {
			continue
		}
		if _, ok := r.sessions[a]; !ok {
			continue // the BGP session failed to apply; BFD waits for it
		}
		want[a] = bfd.Peer{Remote: a, Local: s.Peer.LocalAddress, Timers: *s.BFD}
	}
	var errs []error
	for _, a := range slices.SortedFunc(maps.Keys(r.bfdApplied), netip.Addr.Compare) {
		if _, ok := want[a]; ok {
			continue
		}
		if err := r.cfg.BFD.Remove(a); err != nil {
			errs = append(errs, fmt.Errorf("removing the BFD session to %s: %w", a, err))
			continue
		}
		delete(r.bfdApplied, a)
		r.log.Info("BFD session removed", "op", "bfd-remove", "peer", a)
	}
	for _, a := range slices.SortedFunc(maps.Keys(want), netip.Addr.Compare) {
		p := want[a]
		if old, ok := r.bfdApplied[a]; ok && old == p {
			continue
		}
		if err := r.cfg.BFD.Set(p); err != nil {
			r.bfdErrs[a] = err.Error()
			errs = append(errs, fmt.Errorf("starting the BFD session to %s: %w", a, err))
			continue
		}
		delete(r.bfdErrs, a)
		r.bfdApplied[a] = p
	}
	for a := range r.bfdErrs {
		if _, ok := want[a]; !ok {
			delete(r.bfdErrs, a)
		}
	}
	return errs
}

// onBFD handles a BFD state change (on the BFD watcher's goroutine).
func (r *Reconciler) onBFD(e bfd.Event) {
	if e.From == bfd.Up && e.To == bfd.Down && e.RemoteAdminDown {
		r.log.Info("the peer took BFD administratively down; its BGP session is left alone (RFC 5882 4.2)", "op", "bfd", "peer", e.Peer)
		return
	}
	if !e.Failed() {
		return
	}
	r.mu.Lock()
	_, applied := r.bfdApplied[e.Peer]
	sp := r.sp
	kind := v1alpha1.SessionKind("")
	for _, s := range r.desired.Sessions {
		if s.Peer.Address == e.Peer {
			kind = s.Kind
		}
	}
	if applied {
		r.bfdFailures[kind]++
	}
	r.mu.Unlock()
	if applied && sp != nil {
		r.onBFDFailure(e, true)
	}
}

// onBFDFailure acts on a BFD failure as the BGP state calls for; with
// settle, a failure right after the BGP session came up is deferred.
func (r *Reconciler) onBFDFailure(e bfd.Event, settle bool) {
	r.mu.Lock()
	_, applied := r.bfdApplied[e.Peer]
	sp := r.sp
	r.mu.Unlock()
	if !applied || sp == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reason := "BFD down: " + e.Diag.String()
	ps, err := r.peerStatus(ctx, sp, e.Peer)
	if err != nil {
		r.log.Warn("reading the BGP state after a BFD failure", "op", "bfd", "peer", e.Peer, "error", err)
		ps.State = bgp.StateEstablished // when in doubt, do not blackhole: drop the routes
	}
	established := ps.State == bgp.StateEstablished
	if d := r.bfdSettle(); settle && d > 0 && established && !ps.Since.IsZero() {
		if age := time.Since(ps.Since); age < d {
			// Some peers re-create their BFD session when the BGP session
			// comes up (FRR 8.4 does when it learns the interface), which
			// looks like a failure here. Look again when the session has
			// settled: still not Up means a failure.
			r.log.Info("BFD failed right after the BGP session came up; looking again when it has settled", "op", "bfd", "peer", e.Peer, "established", age, "settle", d)
			time.AfterFunc(d-age, func() { r.recheckBFD(e) })
			return
		}
	}
	if established {
		r.hardReset(e.Peer, reason, "BFD detected the path down: the BGP session is closed and its routes dropped at once")
		return
	}
	held, err := sp.Received(ctx, e.Peer)
	switch {
	case err != nil && !errors.Is(err, bgp.ErrPeerNotFound):
		r.log.Warn("reading the routes held for a peer after a BFD failure", "op", "bfd", "peer", e.Peer, "error", err)
	case len(held) == 0:
		// Nothing kept: nothing to do.
	case e.RemoteControlPlaneIndependent:
		r.hardReset(e.Peer, reason, "BFD failed during the peer's graceful restart and the peer's BFD is independent of its control plane (C bit): forwarding failed, the restart is aborted (RFC 5882 4.3.1)")
	default:
		r.log.Info("BFD failed during the peer's graceful restart; its BFD shares fate with its control plane (C bit clear), so its routes are kept for the restart (RFC 5882 4.3.2)",
			"op", "bfd", "peer", e.Peer, "held", len(held))
	}
}

func (r *Reconciler) peerStatus(ctx context.Context, sp bgp.Speaker, peer netip.Addr) (bgp.PeerStatus, error) {
	l, err := sp.Peers(ctx, nil)
	if err != nil {
		return bgp.PeerStatus{}, err
	}
	for _, p := range l {
		if p.Address == peer {
			return p, nil
		}
	}
	return bgp.PeerStatus{}, nil
}

// DefaultBFDSettle is how long after a BGP session comes up a BFD failure
// is looked at again before it counts: long enough for a peer's re-created
// BFD session to come Up at the one-second interval of sessions that are
// not Up (two packets each way, with jitter).
const DefaultBFDSettle = 4 * time.Second

func (r *Reconciler) bfdSettle() time.Duration {
	switch s := r.cfg.BFDSettle; {
	case s < 0:
		return 0
	case s == 0:
		return DefaultBFDSettle
	default:
		return s
	}
}

// recheckBFD acts on a failure deferred by the settle time, unless BFD is
// Up again.
func (r *Reconciler) recheckBFD(e bfd.Event) {
	r.mu.Lock()
	stopped := r.stopped
	r.mu.Unlock()
	if stopped {
		return
	}
	for _, s := range r.cfg.BFD.Sessions() {
		if s.Peer.Remote == e.Peer && s.State == bfd.Up {
			r.log.Info("BFD is Up again after settling: the failure right after the BGP session came up is ignored", "op", "bfd", "peer", e.Peer)
			return
		}
	}
	r.onBFDFailure(e, false)
}

// bfdStatus returns the BFD part of a session's status; nil without BFD.
func bfdStatus(s topology.Session, sessions map[netip.Addr]bfd.Status, errs map[netip.Addr]string, unavailable string) *v1alpha1.BFDSessionStatus {
	if s.BFD == nil || s.NotStarted != "" {
		return nil
	}
	switch bs, ok := sessions[s.Peer.Address]; {
	case unavailable != "":
		return &v1alpha1.BFDSessionStatus{State: bfdUnavailable, Diagnostic: unavailable}
	case errs[s.Peer.Address] != "":
		return &v1alpha1.BFDSessionStatus{State: bfdUnavailable, Diagnostic: errs[s.Peer.Address]}
	case !ok:
		return nil // not applied yet (the BGP session failed)
	default:
		out := &v1alpha1.BFDSessionStatus{State: bs.State.String(), Failures: int64(bs.Downs)}
		if bs.Diag != bfd.DiagNone {
			out.Diagnostic = bs.Diag.String()
		}
		if !bs.Since.IsZero() {
			t := metav1.NewTime(bs.Since.Truncate(time.Second))
			out.Since = &t
		}
		if bs.DetectionTime > 0 {
			out.DetectionTime = &metav1.Duration{Duration: bs.DetectionTime}
		}
		return out
	}
}

// bfdUnavailable says why sessions cannot have BFD ("" when they can).
func (r *Reconciler) bfdUnavailable() string {
	if r.cfg.BFD != nil {
		return ""
	}
	if r.cfg.BFDUnavailable != "" {
		return r.cfg.BFDUnavailable
	}
	return "this agent runs without BFD"
}

// BFDRestartHold is how long a peer should keep its BFD session to this
// node Up while the agent restarts (bfd.Manager.CloseForRestart): the
// session's graceful-restart time, for which the peer keeps our routes
// anyway; 0 without graceful restart, when the peer drops them as the
// connection closes.
func (r *Reconciler) BFDRestartHold(peer netip.Addr) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.sessions[peer]
	switch {
	case !ok || !p.GracefulRestart.Enabled:
		return 0
	case p.GracefulRestart.RestartTime > 0:
		return p.GracefulRestart.RestartTime
	}
	return bgp.DefaultRestartTime
}
