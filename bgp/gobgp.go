package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
)

// GoBGPOptions configure the embedded GoBGP speaker.
type GoBGPOptions struct {
	// Logger receives the speaker's logs (component=bgp-speaker). Nil: slog.Default().
	Logger *slog.Logger
	// GoBGPLogLevel is the least severe of GoBGP's own messages that are
	// logged. Nil: warnings and errors only (GoBGP is chatty at info).
	GoBGPLogLevel slog.Leveler
}

// GoBGP is the Speaker backed by an in-process GoBGP v3 server.
type GoBGP struct {
	log  *slog.Logger
	glog *gobgpLogger

	mu       sync.Mutex
	srv      *server.BgpServer
	global   Global
	running  bool
	stopped  bool
	watching bool
	apiErr   error
	peers    map[netip.Addr]Peer
	// paths we originate, as sent to GoBGP, so that a withdraw names the
	// exact path (a delete by UUID scans the whole RIB in GoBGP v3).
	paths map[netip.Prefix]*api.Path
	ads   map[netip.Prefix]Advertisement
	// export policy as last applied
	export ExportPolicy
	// session state as seen by our own peer watcher
	states    map[netip.Addr]peerState
	stopWatch context.CancelFunc
	// started is when Start succeeded: a Restarting speaker marks the
	// sessions it configures within their restart time as restarting.
	started time.Time

	// changes counts what can change GoBGP's session listing; snap is
	// the last listing (gobgp_peers.go).
	changes atomic.Uint64
	snapMu  sync.Mutex
	snap    peersSnapshot
}

type peerState struct {
	state SessionState
	since time.Time
}

var _ Speaker = (*GoBGP)(nil)

// NewGoBGP returns a speaker that is not started yet.
func NewGoBGP(o GoBGPOptions) *GoBGP {
	l := o.Logger
	if l == nil {
		l = slog.Default()
	}
	l = l.With("component", "bgp-speaker")
	lvl := slog.Leveler(slog.LevelWarn)
	if o.GoBGPLogLevel != nil {
		lvl = o.GoBGPLogLevel
	}
	return &GoBGP{
		log:    l,
		glog:   newGoBGPLogger(l.With("component", "gobgp"), lvl.Level()),
		peers:  make(map[netip.Addr]Peer),
		paths:  make(map[netip.Prefix]*api.Path),
		ads:    make(map[netip.Prefix]Advertisement),
		states: make(map[netip.Addr]peerState),
	}
}

// Start implements Speaker.
func (s *GoBGP) Start(ctx context.Context, g Global) error {
	defer s.changed() // the session listing may differ (gobgp_peers.go)
	if g.ASN == 0 {
		return errors.New("starting bgp speaker: AS number 0")
	}
	if !g.RouterID.Is4() {
		return fmt.Errorf("starting bgp speaker: router ID %v is not an IPv4 address", g.RouterID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running || s.stopped {
		return errors.New("starting bgp speaker: already started")
	}

	opts := []server.ServerOption{server.LoggerOption(s.glog)}
	if g.APIAddress != "" {
		// GoBGP exits the process (logger Fatal) when its API cannot listen.
		// Our logger no longer exits, but check first so that the failure is
		// reported clearly and the speaker runs on without the API.
		if err := checkListen(g.APIAddress); err != nil {
			s.apiErr = fmt.Errorf("gobgp gRPC API not served on %s: %w", g.APIAddress, err)
			s.log.Warn("running without the gobgp API", "op", "start", "error", s.apiErr)
		} else {
			opts = append(opts, server.GrpcListenAddress(g.APIAddress))
		}
	}
	srv := server.NewBgpServer(opts...)
	go srv.Serve()

	port := g.ListenPort
	if port == 0 {
		port = 179
	}
	req := &api.StartBgpRequest{Global: &api.Global{
		Asn:        g.ASN,
		RouterId:   g.RouterID.String(),
		ListenPort: port,
	}}
	for _, a := range g.ListenAddresses {
		req.Global.ListenAddresses = append(req.Global.ListenAddresses, a.String())
	}
	if len(g.ListenAddresses) == 0 && port > 0 && !ipv6Available() {
		// GoBGP listens on 0.0.0.0 and :: by default and fails to start
		// when the kernel has IPv6 off.
		req.Global.ListenAddresses = []string{"0.0.0.0"}
	}
	if err := srv.StartBgp(ctx, req); err != nil {
		srv.Stop()
		return fmt.Errorf("starting bgp speaker (AS %d, router ID %s, port %d): %w", g.ASN, g.RouterID, port, err)
	}
	if err := applyExportPolicy(ctx, srv, ExportPolicy{}, true); err != nil {
		srv.Stop()
		return fmt.Errorf("starting bgp speaker: %w", err)
	}
	s.srv, s.global, s.running, s.started = srv, g, true, time.Now()

	wctx, cancel := context.WithCancel(context.Background())
	s.stopWatch = cancel
	if err := srv.WatchEvent(wctx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, s.trackPeerState); err != nil {
		cancel()
		srv.Stop()
		s.running = false
		return fmt.Errorf("starting bgp speaker: watching sessions: %w", err)
	}
	s.log.Info("bgp speaker started", "op", "start", "asn", g.ASN, "routerID", g.RouterID, "port", port, "api", g.APIAddress, "restarting", g.Restarting)
	return nil
}

func ipv6Available() bool {
	l, err := net.Listen("tcp6", "[::]:0")
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// Stop implements Speaker. GoBGP sends every peer a Cease notification, so
// peers drop our routes at once. An agent that restarts and wants its peers
// to keep forwarding (graceful restart) should exit without calling Stop:
// the kernel then closes the connections without a notification.
func (s *GoBGP) Stop(ctx context.Context) error { return s.stop(ctx, false) }

// StopGracefully implements Speaker (GoBGP's StopBgpGracefully, in
// Rhizome's copy: no NOTIFICATION is sent).
func (s *GoBGP) StopGracefully(ctx context.Context) error { return s.stop(ctx, true) }

func (s *GoBGP) stop(ctx context.Context, graceful bool) error {
	defer s.changed() // the session listing may differ (gobgp_peers.go)
	s.mu.Lock()
	if !s.running {
		s.mu.Unlock()
		return nil
	}
	srv := s.srv
	s.running, s.stopped = false, true
	s.stopWatch()
	s.mu.Unlock()
	if graceful {
		if err := srv.StopBgpGracefully(ctx); err != nil {
			s.log.Warn("closing the sessions", "op", "stop", "error", err)
		}
	}
	// GoBGP's Serve goroutine does not end (v3 has no way to stop it); the
	// server itself is idle after this.
	srv.Stop()
	s.log.Info("bgp speaker stopped", "op", "stop", "graceful", graceful)
	return nil
}

// server returns the running GoBGP server or ErrNotRunning.
func (s *GoBGP) server() (*server.BgpServer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running {
		return nil, ErrNotRunning
	}
	return s.srv, nil
}

func (s *GoBGP) trackPeerState(r *api.WatchEventResponse) {
	s.changed()
	pe := r.GetPeer()
	if pe == nil || pe.Type != api.WatchEventResponse_PeerEvent_STATE || pe.Peer.GetState() == nil {
		return
	}
	addr, err := netip.ParseAddr(pe.Peer.State.NeighborAddress)
	if err != nil {
		return
	}
	st := SessionState(pe.Peer.State.SessionState)
	s.mu.Lock()
	if s.states[addr].state != st {
		s.states[addr] = peerState{state: st, since: time.Now()}
	}
	s.mu.Unlock()
}

// AddPeer implements Speaker.
func (s *GoBGP) AddPeer(ctx context.Context, p Peer) error {
	defer s.changed() // the session listing may differ (gobgp_peers.go)
	if err := p.Validate(); err != nil {
		return err
	}
	srv, err := s.server()
	if err != nil {
		return err
	}
	s.mu.Lock()
	_, exists := s.peers[p.Address]
	s.mu.Unlock()
	if exists {
		return fmt.Errorf("adding peer %s: already configured", p.Address)
	}
	if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: toAPIPeer(p, s.restarting(p))}); err != nil {
		return fmt.Errorf("adding peer %s: %w", p.Address, err)
	}
	s.mu.Lock()
	s.peers[p.Address] = p
	s.mu.Unlock()
	return nil
}

// UpdatePeer implements Speaker. Rhizome's GoBGP (third_party/gobgp.patch,
// rhizomeSoftUpdate) applies the description in place and resets the one
// session gracefully for timers, the password, the remote port and the
// route-reflector role; upstream re-created the peer with a Cease for the
// first three and never applied the last. Other changes that need a new
// OPEN (AS, families, graceful restart, transport) reset it with a Cease.
func (s *GoBGP) UpdatePeer(ctx context.Context, p Peer) error {
	defer s.changed() // the session listing may differ (gobgp_peers.go)
	if err := p.Validate(); err != nil {
		return err
	}
	srv, err := s.server()
	if err != nil {
		return err
	}
	s.mu.Lock()
	old, exists := s.peers[p.Address]
	s.mu.Unlock()
	if !exists {
		return fmt.Errorf("updating peer %s: %w", p.Address, ErrPeerNotFound)
	}
	if old == p {
		return nil
	}
	if _, err := srv.UpdatePeer(ctx, &api.UpdatePeerRequest{Peer: toAPIPeer(p, s.restarting(p))}); err != nil {
		return fmt.Errorf("updating peer %s: %w", p.Address, err)
	}
	s.mu.Lock()
	s.peers[p.Address] = p
	s.mu.Unlock()
	// A session shut down for exceeding its prefix limit stays down until
	// its configuration changes: this is that change.
	var pfxCt bool
	_ = srv.ListPeer(ctx, &api.ListPeerRequest{Address: p.Address.String()}, func(ap *api.Peer) {
		pfxCt = ap.GetState().GetAdminState() == api.PeerState_PFX_CT
	})
	if pfxCt {
		if err := srv.EnablePeer(ctx, &api.EnablePeerRequest{Address: p.Address.String()}); err != nil {
			return fmt.Errorf("re-enabling peer %s after its prefix limit: %w", p.Address, err)
		}
	}
	return nil
}

// DeletePeer implements Speaker.
func (s *GoBGP) DeletePeer(ctx context.Context, addr netip.Addr) error {
	defer s.changed() // the session listing may differ (gobgp_peers.go)
	srv, err := s.server()
	if err != nil {
		return err
	}
	s.mu.Lock()
	_, exists := s.peers[addr]
	s.mu.Unlock()
	if !exists {
		return fmt.Errorf("deleting peer %s: %w", addr, ErrPeerNotFound)
	}
	if err := srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
		return fmt.Errorf("deleting peer %s: %w", addr, err)
	}
	s.mu.Lock()
	delete(s.peers, addr)
	delete(s.states, addr)
	s.mu.Unlock()
	s.glog.clearPeer(addr)
	return nil
}

func familyAPI(f Family) *api.Family {
	if f == IPv6 {
		return &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
	}
	return &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
}

func seconds(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	return uint64((d + time.Second - 1) / time.Second)
}

// restarting reports whether a session configured now opens as the
// session of a restarting speaker (see Global.Restarting): the speaker was
// started as Restarting, the session has graceful restart, and its restart
// time has not passed since the start.
func (s *GoBGP) restarting(p Peer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.global.Restarting && p.GracefulRestart.Enabled && time.Since(s.started) < p.GracefulRestart.restartTime()
}

func (gr GracefulRestart) restartTime() time.Duration {
	if gr.RestartTime == 0 {
		return DefaultRestartTime
	}
	return gr.RestartTime
}

// toAPIPeer converts a Peer to GoBGP's configuration; restarting marks the
// session as that of a restarting speaker (GoBGP's LocalRestarting: the
// Restart State and Forwarding State bits in its OPEN, routes deferred
// until the peers' End-of-RIB).
func toAPIPeer(p Peer, restarting bool) *api.Peer {
	fam := familyAPI(p.Family())
	hold := seconds(p.Timers.Hold)
	if p.Timers.Hold == HoldTimeDisabled {
		// GoBGP cannot send hold time 0 (0 means its default, 90s); the
		// largest hold time is the closest it comes to "no hold timer".
		hold = 65535
	}
	connectRetry := p.Timers.ConnectRetry
	if connectRetry == 0 {
		connectRetry = DefaultConnectRetry
	}
	ap := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.ASN,
			LocalAsn:        p.LocalASN,
			AuthPassword:    p.Password,
			Description:     p.Description,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:      seconds(connectRetry),
			HoldTime:          hold,
			KeepaliveInterval: seconds(p.Timers.Keepalive),
			// We reset a session only on purpose (an export filter now
			// holds back a route already sent): come back at once rather
			// than after GoBGP's default 30s.
			IdleHoldTimeAfterReset: 1,
		}},
		Transport: &api.Transport{
			PassiveMode: p.Passive,
			RemotePort:  uint32(p.Port),
		},
		AfiSafis: []*api.AfiSafi{{
			Config: &api.AfiSafiConfig{Family: fam, Enabled: true},
		}},
	}
	if p.LocalAddress.IsValid() {
		ap.Transport.LocalAddress = p.LocalAddress.String()
	}
	if p.EBGPMultihop > 0 {
		ap.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(p.EBGPMultihop)}
	}
	if p.TTLSecurityHops > 0 {
		// RFC 5082 as Calico means it: 1 hop = directly connected, whose
		// packets arrive with TTL 255; each further hop allows one less.
		ap.TtlSecurity = &api.TtlSecurity{Enabled: true, TtlMin: uint32(256 - int(p.TTLSecurityHops))}
	}
	if p.RouteReflectorClient {
		ap.RouteReflector = &api.RouteReflector{RouteReflectorClient: true, RouteReflectorClusterId: p.RouteReflectorClusterID.String()}
	}
	afi := ap.AfiSafis[0]
	if p.MaxPrefixes > 0 {
		afi.PrefixLimits = &api.PrefixLimit{Family: fam, MaxPrefixes: p.MaxPrefixes}
	}
	if gr := p.GracefulRestart; gr.Enabled {
		ap.GracefulRestart = &api.GracefulRestart{
			Enabled:     true,
			RestartTime: uint32(seconds(gr.restartTime())),
			// GoBGP's own default is 360 s; see RestartDeferral.
			DeferralTime:    uint32(seconds(RestartDeferral)),
			LocalRestarting: restarting,
		}
		afi.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		if gr.LongLivedStaleTime > 0 {
			ap.GracefulRestart.LonglivedEnabled = true
			afi.LongLivedGracefulRestart = &api.LongLivedGracefulRestart{Config: &api.LongLivedGracefulRestartConfig{
				Enabled: true, RestartTime: uint32(seconds(gr.LongLivedStaleTime)),
			}}
		}
	}
	return ap
}

// advertisedOf is what GoBGP counts as sent to a peer, without the
// End-of-RIB marker it counts as a route when graceful restart is on.
func advertisedOf(p *api.Peer) uint64 {
	var n uint64
	for _, a := range p.GetAfiSafis() {
		n += a.GetState().GetAdvertised()
	}
	if gr := p.GetGracefulRestart(); gr != nil && gr.Enabled && n > 0 &&
		p.GetState().GetSessionState() == api.PeerState_ESTABLISHED && remoteHasGR(p.GetState()) {
		n--
	}
	return n
}

func (s *GoBGP) peerStatus(p *api.Peer) PeerStatus {
	var st PeerStatus
	st.Address, _ = netip.ParseAddr(p.GetConf().GetNeighborAddress())
	st.ASN = p.GetConf().GetPeerAsn()
	if ps := p.GetState(); ps != nil {
		st.State = SessionState(ps.SessionState)
		st.AdminDown = ps.AdminState != api.PeerState_UP
		if st.State == StateEstablished {
			st.RemoteRouterID, _ = netip.ParseAddr(ps.RouterId)
			st.HoldTime = time.Duration(p.GetTimers().GetState().GetNegotiatedHoldTime()) * time.Second
		}
		if ps.PeerAsn != 0 {
			st.ASN = ps.PeerAsn
		}
	}
	for _, a := range p.GetAfiSafis() {
		st.Received += a.GetState().GetReceived()
		if t := a.GetLongLivedGracefulRestart().GetState().GetPeerRestartTime(); t > 0 {
			st.PeerLLGRStaleTime = time.Duration(t) * time.Second
		}
	}
	if gr := p.GetGracefulRestart(); gr != nil {
		st.PeerRestartTime = time.Duration(gr.PeerRestartTime) * time.Second
	}
	st.LastError = s.glog.lastErrorOf(st.Address)
	s.mu.Lock()
	if ps, ok := s.states[st.Address]; ok && ps.state == st.State {
		st.Since = ps.since
	}
	s.mu.Unlock()
	return st
}

func remoteHasGR(ps *api.PeerState) bool {
	for _, c := range ps.GetRemoteCap() {
		if strings.HasSuffix(c.GetTypeUrl(), ".GracefulRestartCapability") {
			return true
		}
	}
	return false
}

// Received implements Speaker.
func (s *GoBGP) Received(ctx context.Context, peer netip.Addr) ([]ReceivedPath, error) {
	srv, err := s.server()
	if err != nil {
		return nil, err
	}
	var (
		out    []ReceivedPath
		d      decoder
		decErr error
	)
	err = srv.ListPath(ctx, &api.ListPathRequest{
		TableType: api.TableType_ADJ_IN,
		Name:      peer.String(),
		Family:    familyAPI(FamilyOf(peer)),
	}, func(dst *api.Destination) {
		for _, p := range dst.Paths {
			rp, err := nativePath(&d, p)
			if err != nil {
				decErr = err
				continue
			}
			rp.Stale = p.Stale
			out = append(out, rp)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("listing paths received from %s: %w", peer, err)
	}
	if decErr != nil {
		s.log.Warn("skipped undecodable paths", "op", "received", "peer", peer, "error", decErr)
	}
	return out, nil
}
