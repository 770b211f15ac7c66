package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	api "github.com/osrg/gobgp/v3/api"
)

// prefixLimitExceeded starts every reason the speaker gives for a session
// closed by its prefix limit.
const prefixLimitExceeded = "maximum prefix limit exceeded"

// prefixLimitHit is told by the watcher that the session to addr went down
// for its prefix limit (GoBGP sent a Cease, Maximum Number of Prefixes
// Reached, and keeps the peer administratively down). It schedules the
// retry Peer.MaxPrefixRestart asks for and returns the reason to report,
// which it also records as the session's last error.
func (s *GoBGP) prefixLimitHit(addr netip.Addr) string {
	s.mu.Lock()
	p, ok := s.peers[addr]
	s.mu.Unlock()
	reason := fmt.Sprintf("%s: the peer sent more than %d prefixes; session closed", prefixLimitExceeded, p.MaxPrefixes)
	switch {
	case !ok:
		return prefixLimitExceeded
	case p.MaxPrefixRestart > 0:
		reason += fmt.Sprintf(", enabled again at %s", time.Now().Add(p.MaxPrefixRestart).UTC().Format(time.TimeOnly))
		time.AfterFunc(p.MaxPrefixRestart, func() { s.retryPrefixLimit(addr, p) })
	default:
		reason += " until its configuration changes"
	}
	s.glog.setReason(addr, reason)
	s.log.Warn("BGP session closed: the peer exceeded its prefix limit", "op", "prefix-limit", "peer", addr,
		"limit", p.MaxPrefixes, "retry", p.MaxPrefixRestart)
	return reason
}

// retryPrefixLimit enables a session its prefix limit shut down, unless the
// peer was removed or reconfigured meanwhile (UpdatePeer enables it then)
// or the speaker stopped.
func (s *GoBGP) retryPrefixLimit(addr netip.Addr, p Peer) {
	srv, err := s.server()
	if err != nil {
		return
	}
	s.mu.Lock()
	cur, ok := s.peers[addr]
	s.mu.Unlock()
	if !ok || cur != p {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var pfxCt bool
	_ = srv.ListPeer(ctx, &api.ListPeerRequest{Address: addr.String()}, func(ap *api.Peer) {
		pfxCt = ap.GetState().GetAdminState() == api.PeerState_PFX_CT
	})
	if !pfxCt {
		return
	}
	if err := srv.EnablePeer(ctx, &api.EnablePeerRequest{Address: addr.String()}); err != nil {
		s.log.Warn("enabling the session again after its prefix limit", "op", "prefix-limit", "peer", addr, "error", err)
		return
	}
	s.log.Info("BGP session enabled again after its prefix limit", "op", "prefix-limit", "peer", addr, "after", p.MaxPrefixRestart)
}
